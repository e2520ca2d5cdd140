"""samplecnn: audio classification from raw waveforms with SampleCNN models.

Model-related names are imported lazily so that data tools (the dataset builder and
its worker processes) never pay for a TensorFlow import.
"""
import importlib
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from samplecnn.datasets import get_spec  # noqa: E402

__version__ = "0.1.0"

_LAZY = {
    "ModelConfig": "samplecnn.models",
    "build_samplecnn": "samplecnn.models",
    "list_blocks": "samplecnn.models",
    "register_block": "samplecnn.models",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'samplecnn' has no attribute {name!r}")


def build_model(dataset, block="se", multi=False, **overrides):
    """Builds a SampleCNN for a built-in data set (or a DatasetSpec).

    Block count, class count and output activation come from the data set's spec;
    any ModelConfig field can be overridden, e.g. ``recipe="2019"`` for the 2019 code's
    initializers (samplecnn.recipes).

    >>> build_model("scd", block="rese2").output_shape
    (None, 35)
    """
    from samplecnn.models import ModelConfig, build_samplecnn

    spec = get_spec(dataset) if isinstance(dataset, str) else dataset
    return build_samplecnn(ModelConfig.for_spec(spec, block=block, multi=multi, **overrides))


__all__ = ["ModelConfig", "build_model", "build_samplecnn", "get_spec", "list_blocks", "register_block"]
