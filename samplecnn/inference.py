"""Using trained models: load a checkpoint with its run configuration."""
import json
import pathlib

import keras

import samplecnn.models  # noqa: F401  (registers the custom objects saved models refer to)

CONFIG = "config.json"


def resolve_checkpoint(path):
    """The checkpoint of ``path``: the file itself, or a run directory's final (else best) model."""
    path = pathlib.Path(path)
    if path.is_dir():
        candidates = sorted(path.glob("final-*.h5")) or sorted(path.glob("best.h5"))
        if not candidates:
            raise FileNotFoundError(f"{path} holds no final-*.h5 or best.h5 checkpoint; is it a run directory "
                                    "made by train.py, and did training save a checkpoint?")
        return candidates[-1]
    if not path.is_file():
        raise FileNotFoundError(f"model not found: {path}")
    return path


def load_trained(path):
    """(keras model, run config) of a checkpoint or run directory.

    The run's config.json, beside the checkpoint, supplies classes, sample rate, segment
    length and the mean/std that inputs must be standardized with.
    """
    checkpoint = resolve_checkpoint(path)
    config_path = checkpoint.parent / CONFIG
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: the checkpoint {checkpoint.name} needs the config.json of "
                                "its run directory (classes, sample rate, mean/std); keep them together")
    return keras.models.load_model(checkpoint, compile=False), json.loads(config_path.read_text())
