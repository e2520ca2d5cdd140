"""Runtimes for exported models, one registered backend per format.

Every backend loads a file written by :mod:`samplecnn.deploy.export` and answers
``predict(pcm)`` for a float32 batch of raw mono segments (batch, segment_samples) in
[-1, 1] at the model's sample rate with ``{"probabilities": ..., "embedding": ...}``
(embedding only where the format carries it). Standardization is inside the models.
"""
import dataclasses
import pathlib

import numpy as np

SEGMENTS, CLIP = "serving_default", "clip"
"""Signature names: a batch of segments, and one whole clip of any length."""
INPUT = "audio"


@dataclasses.dataclass
class Backend:
    name: str
    matches: callable
    load: callable


_BACKENDS = []


def register_backend(name, matches):
    """Decorator registering ``load(path) -> runner`` for files where ``matches(path)`` is true."""

    def decorator(load):
        _BACKENDS.append(Backend(name, matches, load))
        return load

    return decorator


class ExportError(ValueError):
    """An exported model is missing, corrupt or not one of ours."""


def is_export(path):
    """True when ``path`` is a file or folder that a registered backend loads."""
    path = pathlib.Path(path)
    return path.exists() and any(backend.matches(path) for backend in _BACKENDS)


def load_backend(path):
    """The runner of an exported model file or SavedModel folder."""
    path = pathlib.Path(path)
    if not path.exists():
        raise ExportError(f"exported model not found: {path}")
    for backend in _BACKENDS:
        if backend.matches(path):
            try:
                return backend.load(path)
            except ExportError:
                raise
            except Exception as error:  # noqa: BLE001 - each runtime fails in its own way on a bad file
                raise ExportError(f"cannot load {path} as a {backend.name} model ({type(error).__name__}: "
                                  f"{error}); export it again with `samplecnn export RUN`") from None
    raise ExportError(f"{path} is not an exported model: expected a SavedModel folder, a .tflite or an .onnx file")


class SavedModelRunner:
    def __init__(self, path):
        import tensorflow as tf

        self.tf = tf
        self.module = tf.saved_model.load(str(path))
        self.signature = self.module.signatures[SEGMENTS]

    def predict(self, pcm):
        outputs = self.signature(**{INPUT: self.tf.constant(pcm, self.tf.float32)})
        return {k: v.numpy() for k, v in outputs.items()}

    def predict_clip(self, audio):
        outputs = self.module.signatures[CLIP](**{INPUT: self.tf.constant(audio, self.tf.float32)})
        return {k: v.numpy() for k, v in outputs.items()}


@register_backend("savedmodel", lambda path: path.is_dir() and (path / "saved_model.pb").is_file())
def _load_saved_model(path):
    return SavedModelRunner(path)


class LiteRTRunner:
    """A .tflite model in LiteRT (float32 in and out, also for the integer model)."""

    def __init__(self, path):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.interpreter = Interpreter(model_path=str(path))
        self.signatures = self.interpreter.get_signature_list()
        if SEGMENTS not in self.signatures:
            raise ExportError(f"{path} has no '{SEGMENTS}' signature: not exported by samplecnn")
        self.runner = self.interpreter.get_signature_runner(SEGMENTS)
        try:  # the first call prepares the graph
            self.predict(np.zeros(self.runner.get_input_details()[INPUT]["shape"], np.float32))
        except RuntimeError:  # XNNPACK cannot take some mixed float/int8 graphs: run them on the builtin kernels
            self.interpreter = Interpreter(model_path=str(path),
                                           experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            self.runner = self.interpreter.get_signature_runner(SEGMENTS)

    def predict(self, pcm):
        return self.runner(**{INPUT: np.asarray(pcm, np.float32)})

    def predict_clip(self, audio):
        if CLIP not in self.signatures:
            raise ExportError("this .tflite model has no whole-clip entry point (the integer model takes segments)")
        return self.interpreter.get_signature_runner(CLIP)(**{INPUT: np.asarray(audio, np.float32)})


@register_backend("litert", lambda path: path.suffix == ".tflite")
def _load_litert(path):
    return LiteRTRunner(path)


class OnnxRunner:
    def __init__(self, path):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.names = [o.name for o in self.session.get_outputs()]

    def predict(self, pcm):
        values = self.session.run(None, {self.input: np.asarray(pcm, np.float32)})
        return dict(zip(self.names, values))


@register_backend("onnx", lambda path: path.suffix == ".onnx")
def _load_onnx(path):
    return OnnxRunner(path)
