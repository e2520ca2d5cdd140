"""Using trained models on any audio: tags, timelines and embeddings.

Files are decoded in blocks and their segments streamed through the model in batches, so
memory is bounded by the batch and one window, not by the length of a file or the number
of overlapping windows; only the per-window results are kept.
"""
import collections
import concurrent.futures
import dataclasses
import json
import math
import pathlib
import queue
import threading
import time

import keras
import numpy as np

from samplecnn.audio import AudioDecodeError, conform, decode_blocks, loop_pad, segment
from samplecnn.models import EMBEDDING_LAYER  # also registers the custom objects of saved models
from samplecnn.precision import load_float32
from samplecnn.training import BEST, CONFIG, Run, import_block_module


def resolve_checkpoint(path):
    """The checkpoint of ``path``: the file itself, or a run directory's final (else best) model."""
    path = pathlib.Path(path)
    if path.is_dir():
        checkpoint = Run(path).final_checkpoint() or (path / BEST if (path / BEST).exists() else None)
        if checkpoint is None:
            raise FileNotFoundError(f"{path} holds no final-*.h5 or {BEST} checkpoint; is it a run directory "
                                    "made by train.py, and did training save a checkpoint?")
        return checkpoint
    if not path.is_file():
        raise FileNotFoundError(f"model not found: {path}")
    return path


def load_config(path):
    """(checkpoint, run config) of a checkpoint or run directory, without loading the model.

    The run's config.json, beside the checkpoint, supplies classes, sample rate, segment
    length and the mean/std that inputs must be standardized with.
    """
    checkpoint = resolve_checkpoint(path)
    config_path = checkpoint.parent / CONFIG
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: the checkpoint {checkpoint.name} needs the config.json of "
                                "its run directory (classes, sample rate, mean/std); keep them together")
    return checkpoint, json.loads(config_path.read_text())


def load_trained(path):
    """(keras model computing in float32, run config) of a checkpoint or run directory."""
    checkpoint, config = load_config(path)
    import_block_module(config, checkpoint)
    return load_float32(checkpoint), config


def export_config(path):
    """A run config (spec, classes, mean 0 and std 1) for an exported model, from the export.json
    beside it: the exported graph standardizes its input itself, so segments go in raw."""
    from samplecnn.deploy import export

    info_path = pathlib.Path(path).parent / export.EXPORT_JSON
    if not info_path.is_file():
        raise FileNotFoundError(f"{info_path} not found: an exported model needs the export.json written beside "
                                "it (classes, sample rate, segment length); keep them together")
    info = json.loads(info_path.read_text())
    spec = {key: info[key] for key in ("sample_rate", "segment_samples", "task", "threshold")}
    return {"spec": spec, "classes": info["classes"], "mean": 0.0, "std": 1.0}


def model_config(path):
    """The run config of a run directory, checkpoint or exported model, without loading the model."""
    from samplecnn.deploy import backends

    return export_config(path) if backends.is_export(path) else load_config(path)[1]


def embedding_output(model, layer):
    """The output tensor of ``model``'s layer ``layer`` as one vector per segment (a
    convolutional layer's output averaged over time); ValueError listing the layers if absent."""
    try:
        output = model.get_layer(layer).output
    except ValueError:
        names = ", ".join(item.name for item in model.layers)
        raise ValueError(f"the model has no layer {layer!r}; its layers are: {names}") from None
    if len(output.shape) == 3:
        output = keras.layers.GlobalAveragePooling1D(name=f"{layer}_time_mean")(output)
    return output


def window_samples(window, hop, sample_rate):
    """(window, hop) in samples at ``sample_rate`` (hop defaults to the window); ValueError
    unless both are finite and at least one sample long."""
    sizes = []
    for option, seconds in (("--window", window), ("--hop", window if hop is None else hop)):
        samples = round(seconds * sample_rate) if math.isfinite(seconds) else 0
        if samples < 1:
            raise ValueError(f"{option} {seconds:g}: must be a finite number of seconds of at least one sample "
                             f"({1 / sample_rate:.2g} s at the model's {sample_rate} Hz)")
        sizes.append(samples)
    return tuple(sizes)


class ExportedModel:
    """An exported model behind the ``predict_on_batch`` call the Tagger makes on (n, samples, 1)
    segments; with ``with_embedding`` it returns [probabilities, embedding] like a feature model."""

    def __init__(self, runner, with_embedding=False):
        self.runner, self.with_embedding = runner, with_embedding

    def predict_on_batch(self, segments):
        outputs = self.runner.predict(np.asarray(segments, np.float32)[..., 0])
        if not self.with_embedding:
            return outputs["probabilities"]
        if "embedding" not in outputs:
            raise ValueError("this exported model has no embedding output")
        return [outputs["probabilities"], outputs["embedding"]]


@dataclasses.dataclass
class Prediction:
    """Class probabilities of one file or window (mean over its segments), and its
    feature vector when embeddings were asked for."""

    path: str
    scores: np.ndarray
    start: float = 0.0
    end: float = 0.0
    features: np.ndarray = None


@dataclasses.dataclass
class FileResult:
    """The predictions of one file, or why it failed; decode and model time in seconds."""

    path: str
    predictions: list = None
    error: str = None
    decode_seconds: float = 0.0
    model_seconds: float = 0.0


@dataclasses.dataclass
class _Window:
    """A window whose segments are on their way through the model: sums of their outputs."""

    start: float
    end: float = None  # set once its last segment has been produced
    produced: int = 0
    predicted: int = 0
    scores: np.ndarray = 0.0
    features: np.ndarray = None

    def add(self, scores, features):
        self.scores = self.scores + scores.astype(np.float64)
        if features is not None:
            self.features = (0.0 if self.features is None else self.features) + features.astype(np.float64)
        self.predicted += 1

    @property
    def complete(self):
        return self.end is not None and self.predicted == self.produced

    def prediction(self, path):
        features = None if self.features is None else self.features / self.predicted
        return Prediction(path, self.scores / self.predicted, self.start, self.end, features)


@dataclasses.dataclass
class _Job:
    """One input in flight: its windows in order, until all are predicted or it fails."""

    path: str
    windows: list = dataclasses.field(default_factory=list)
    ended: bool = False
    error: str = None
    decode_seconds: float = 0.0
    model_seconds: float = 0.0

    @property
    def done(self):
        return self.error is not None or (self.ended and all(w.complete for w in self.windows))

    def result(self):
        if self.error is not None:
            return FileResult(self.path, error=self.error)
        return FileResult(self.path, [w.prediction(self.path) for w in self.windows], decode_seconds=self.decode_seconds,
                          model_seconds=self.model_seconds)


class _Stream:
    """The (window, segment, end) items of one input, timing the work of producing them."""

    def __init__(self, name, items):
        self.name, self.items, self.seconds = name, items, 0.0

    def __iter__(self):
        items = iter(self.items)
        while True:
            started = time.perf_counter()
            try:
                item = next(items)
            except StopIteration:
                return
            finally:
                self.seconds += time.perf_counter() - started
            yield item


_END = object()


class _Prefetched:
    """A _Stream produced in a worker thread into a bounded queue (so decoding overlaps the
    model and memory stays bounded); its errors are raised where it is read."""

    def __init__(self, stream, pool, stop, depth):
        self.stream, self.name, self.stop = stream, stream.name, stop
        self.queue = queue.Queue(depth)
        pool.submit(self._produce)

    @property
    def seconds(self):
        return self.stream.seconds

    def _put(self, item):
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def _produce(self):
        if self.stop.is_set():  # the reader has gone before this input's turn came
            return
        try:
            for item in self.stream:
                if not self._put(item):
                    return
            self._put(_END)
        except Exception as error:  # raised again in the reading thread
            self._put(error)

    def __iter__(self):
        while (item := self.queue.get()) is not _END:
            if isinstance(item, Exception):
                raise item
            yield item


class Tagger:
    """Tags audio with a trained model that is loaded once and reused for every call.

    >>> tagger = Tagger.from_run("log/20190424_213449-scd-se")      # doctest: +SKIP
    >>> tagger.top(tagger.predict_file("yes.wav").scores, k=3)       # doctest: +SKIP
    [('yes', 0.97), ('left', 0.01), ('no', 0.005)]
    """

    def __init__(self, model, config, batch_size=32):
        self.model, self.config, self.batch_size = model, config, batch_size
        spec = config["spec"]
        self.classes = list(config["classes"])
        self.sample_rate, self.segment_samples = spec["sample_rate"], spec["segment_samples"]
        self.task, self.threshold = spec["task"], spec["threshold"]
        self.mean, self.std = config["mean"], config["std"]
        self._feature_models = {}

    @classmethod
    def from_run(cls, path, **kwargs):
        """A Tagger for a checkpoint or a run directory (its final checkpoint)."""
        return cls(*load_trained(path), **kwargs)

    @classmethod
    def from_export(cls, path, **kwargs):
        """A Tagger for a model written by ``samplecnn export`` (SavedModel folder, .tflite or
        .onnx file) with the export.json beside it; the same calls and outputs as from_run."""
        from samplecnn.deploy import backends

        config = export_config(path)
        runner = backends.load_backend(path)
        tagger = cls(ExportedModel(runner), config, **kwargs)
        tagger._feature_models[EMBEDDING_LAYER] = ExportedModel(runner, with_embedding=True)
        return tagger

    @classmethod
    def load(cls, path, **kwargs):
        """A Tagger for a run directory, a checkpoint or an exported model."""
        from samplecnn.deploy import backends

        return cls.from_export(path, **kwargs) if backends.is_export(path) else cls.from_run(path, **kwargs)

    # Single signals and files: errors are raised.

    def predict_array(self, audio, sample_rate):
        """Prediction for a whole mono signal at any sample rate."""
        return self.timeline_array(audio, sample_rate)[0]

    def timeline_array(self, audio, sample_rate, window=None, hop=None, name="<array>"):
        """One Prediction per window of ``window`` seconds every ``hop`` seconds."""
        return self._one(self.model, name, [conform(audio, sample_rate, self.sample_rate)], window, hop)

    def predict_file(self, path):
        return self.timeline(path)[0]

    def timeline(self, path, window=None, hop=None):
        return self._one(self.model, str(path), decode_blocks(path, self.sample_rate), window, hop)

    def embed(self, audio_or_path, layer=None, window=None, hop=None, sample_rate=None):
        """Predictions with ``features`` of ``layer`` (default: the head's hidden layer), one per window.

        Outputs of convolutional layers are averaged over time, then over a window's segments.
        """
        if isinstance(audio_or_path, (str, pathlib.Path)):
            blocks, name = decode_blocks(audio_or_path, self.sample_rate), str(audio_or_path)
        else:
            blocks, name = [conform(audio_or_path, sample_rate, self.sample_rate)], "<array>"
        return self._one(self.feature_model(layer), name, blocks, window, hop)

    def _one(self, model, name, blocks, window, hop):
        (result,) = self._predict(model, [_Stream(name, self.segment_items(blocks, window, hop))], catch=False)
        return result.predictions

    # Many files: decoding in threads overlaps with inference; segments of several files
    # share a batch.

    def run_files(self, paths, window=None, hop=None, embed_layer=None, decode_threads=2):
        """Yields a FileResult per path, in order; with ``embed_layer``, predictions carry features.

        A file that cannot be decoded gives a FileResult with ``error`` and the others go on.
        """
        model = self.feature_model(embed_layer) if embed_layer else self.model
        stop = threading.Event()
        with concurrent.futures.ThreadPoolExecutor(decode_threads) as pool:
            streams = (_Prefetched(_Stream(str(path), self.segment_items(decode_blocks(path, self.sample_rate),
                                                                         window, hop)), pool, stop, 2 * self.batch_size)
                       for path in paths)
            try:
                yield from self._predict(model, _lookahead(streams, decode_threads), catch=True)
            finally:
                stop.set()

    def _predict(self, model, streams, catch):
        """FileResults of ``streams`` in order; their segments go through ``model`` in batches."""
        jobs, batch = collections.deque(), []
        for stream in streams:
            job = _Job(stream.name)
            jobs.append(job)
            try:
                for window, segment_, end in stream:
                    if not job.windows or job.windows[-1] is not window:
                        job.windows.append(window)
                    if segment_ is None:
                        window.end = end
                        continue
                    window.produced += 1
                    batch.append((job, window, segment_))
                    if len(batch) == self.batch_size:
                        self._run_batch(model, batch)
                        batch = []
                        yield from _finished(jobs)
            except (AudioDecodeError, OSError, ValueError) as error:
                if not catch:
                    raise
                job.error = str(error)
            job.ended, job.decode_seconds = True, stream.seconds
            yield from _finished(jobs)
        if batch:
            self._run_batch(model, batch)
        yield from _finished(jobs)

    def _run_batch(self, model, batch):
        started = time.perf_counter()
        outputs = model.predict_on_batch(np.stack([s for _, _, s in batch]))
        scores, features = outputs if isinstance(outputs, (list, tuple)) else (outputs, None)
        seconds = (time.perf_counter() - started) / len(batch)
        for i, (job, window, _) in enumerate(batch):
            window.add(np.asarray(scores[i]), None if features is None else np.asarray(features[i]))
            job.model_seconds += seconds

    # Building blocks.

    def segment_items(self, blocks, window=None, hop=None):
        """(window, standardized segment, None) items of a stream of sample blocks, and a
        (window, None, end in seconds) item after each window's last segment.

        Without ``window`` there is one window, the whole signal, cut into consecutive
        segments (looped to one segment if shorter). With it, a window starts every ``hop``
        seconds (default: ``window``) while a whole window fits, then one more for the tail,
        looped to a whole window like a short file; at least one; each is cut into segments
        the same way. At most a window and a block are held at a time.
        """
        if window is None:
            return self._whole_items(blocks)
        return self._window_items(blocks, *window_samples(window, hop, self.sample_rate))

    def _whole_items(self, blocks):
        span, pending, total = _Window(0.0), np.zeros(0, np.float32), 0
        for block in blocks:
            pending, total = np.concatenate([pending, block]), total + block.size
            whole = pending.size // self.segment_samples * self.segment_samples
            for piece in pending[:whole].reshape(-1, self.segment_samples):
                yield span, self.standardize(piece), None
            pending = pending[whole:]
        if total == 0:
            raise AudioDecodeError("no audio samples")
        if total < self.segment_samples:
            yield span, self.standardize(segment(pending, self.segment_samples, 1)[0]), None
        yield span, None, total / self.sample_rate

    def _window_items(self, blocks, size, step):
        buffered, offset, start, total = np.zeros(0, np.float32), 0, 0, 0  # buffered[0] is sample ``offset``
        for block in blocks:
            buffered, total = np.concatenate([buffered, block]), total + block.size
            while start + size <= total:
                yield from self._one_window(buffered[start - offset:start - offset + size], start)
                start += step
            keep = min(start, total) - offset
            buffered, offset = buffered[keep:], offset + keep
        if total == 0:
            raise AudioDecodeError("no audio samples")
        if start == 0:  # shorter than one window: the whole signal is the window
            yield from self._one_window(buffered, 0)
        elif start < total and start - step + size < total:  # a tail: one more window, looped to a whole one
            tail = buffered[start - offset:]
            yield from self._one_window(loop_pad(tail, size), start, end=start + tail.size)

    def _one_window(self, samples, start, end=None):
        """Items of one window; ``end`` (a sample index) is where its real audio ends, when it was looped."""
        span = _Window(start / self.sample_rate)
        for piece in segment(samples, self.segment_samples, max(1, samples.size // self.segment_samples)):
            yield span, self.standardize(piece), None
        yield span, None, (start + samples.size if end is None else end) / self.sample_rate

    def standardize(self, piece):
        """A segment as the model takes it: standardized float32 of shape (segment_samples, 1)."""
        return ((piece - self.mean) / self.std).astype(np.float32)[:, np.newaxis]

    def feature_model(self, layer=None):
        """A model giving (predictions, ``layer``'s output averaged over time), built once per layer."""
        layer = layer or EMBEDDING_LAYER
        if layer not in self._feature_models and isinstance(self.model, ExportedModel):
            raise ValueError(f"an exported model carries only the {EMBEDDING_LAYER!r} layer, not {layer!r}; "
                             "use the run directory for other layers")
        if layer not in self._feature_models:
            self._feature_models[layer] = keras.Model(self.model.input,
                                                      [self.model.output, embedding_output(self.model, layer)])
        return self._feature_models[layer]

    def top(self, scores, k=5):
        order = np.argsort(scores)[::-1][:k]
        return [(self.classes[i], float(scores[i])) for i in order]

    def above_threshold(self, scores, threshold=None):
        """Classes at or above the threshold (the spec's by default); none for multi-class
        models unless a threshold is given."""
        threshold = self.threshold if threshold is None else threshold
        if threshold is None:
            return []
        return [(c, float(s)) for c, s in zip(self.classes, scores) if s >= threshold]


def _lookahead(streams, count):
    """``streams`` in order, with the next ``count`` already started."""
    started = collections.deque()
    for stream in streams:
        started.append(stream)
        if len(started) > count:
            yield started.popleft()
    yield from started


def _finished(jobs):
    """Results of the jobs at the front of ``jobs`` that are done, in order."""
    while jobs and jobs[0].done:
        yield jobs.popleft().result()
