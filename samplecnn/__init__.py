"""samplecnn: audio classification from raw waveforms with SampleCNN models.

Model-related names are imported lazily so that data tools (the dataset builder and
its worker processes) never pay for a TensorFlow import (about 2.7 s and 750 MB per
process). Saved models still load with plain ``keras.models.load_model`` once samplecnn
is imported: the custom Keras objects are registered as soon as keras is imported.
"""
import importlib
import importlib.abc
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from samplecnn.datasets import get_spec  # noqa: E402

__version__ = "0.2.0"

_LAZY = {
    "ModelConfig": "samplecnn.models",
    "build_samplecnn": "samplecnn.models",
    "list_blocks": "samplecnn.models",
    "register_block": "samplecnn.models",
}


MODELS = "samplecnn.models"
"""The package whose import registers every custom Keras object of saved models."""


class _RegisterWithKeras(importlib.abc.MetaPathFinder):
    """Imports samplecnn.models right after keras itself, whenever and by whomever keras is
    imported, so that no caller has to remember it and data tools never import keras."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        others = (finder for finder in sys.meta_path if finder is not self and hasattr(finder, "find_spec"))
        spec = next((spec for finder in others if (spec := finder.find_spec(name, path, target))), None)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            importlib.import_module(MODELS)

        spec.loader.exec_module = exec_module
        return spec


if "keras" in sys.modules:
    importlib.import_module(MODELS)
elif not any(isinstance(finder, _RegisterWithKeras) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWithKeras())


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
