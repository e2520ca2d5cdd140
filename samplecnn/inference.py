"""Using trained models on any audio: tags, timelines and embeddings."""
import collections
import concurrent.futures
import dataclasses
import json
import pathlib
import time

import keras
import numpy as np

from samplecnn.audio import AudioDecodeError, conform, decode, loop_pad, segment
from samplecnn.models import EMBEDDING_LAYER  # also registers the custom objects of saved models
from samplecnn.training import BEST, CONFIG, Run


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
class _Prepared:
    path: str
    spans: list
    segments: list
    decode_seconds: float


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

    # Single signals and files.

    def predict_array(self, audio, sample_rate):
        """Prediction for a whole mono signal at any sample rate."""
        return self.timeline_array(audio, sample_rate)[0]

    def timeline_array(self, audio, sample_rate, window=None, hop=None, name="<array>"):
        """One Prediction per window of ``window`` seconds every ``hop`` seconds."""
        prepared = self._prepare(name, conform(audio, sample_rate, self.sample_rate), window, hop)
        return self._run(self.model, [prepared])[0].predictions

    def predict_file(self, path):
        return self.timeline(path)[0]

    def timeline(self, path, window=None, hop=None):
        return self.timeline_array(decode(path, self.sample_rate), self.sample_rate, window, hop, name=str(path))

    def embed(self, audio_or_path, layer=None, window=None, hop=None, sample_rate=None):
        """Predictions with ``features`` of ``layer`` (default: the head's hidden layer), one per window.

        Outputs of convolutional layers are averaged over time, then over a window's segments.
        """
        if isinstance(audio_or_path, (str, pathlib.Path)):
            audio, name = decode(audio_or_path, self.sample_rate), str(audio_or_path)
        else:
            audio, name = conform(audio_or_path, sample_rate, self.sample_rate), "<array>"
        prepared = self._prepare(name, audio, window, hop)
        return self._run(self.feature_model(layer), [prepared])[0].predictions

    # Many files: decoding in threads overlaps with inference; segments of several files
    # share a batch.

    def run_files(self, paths, window=None, hop=None, embed_layer=None, decode_threads=2):
        """Yields a FileResult per path, in order; with ``embed_layer``, predictions carry features."""
        model = self.feature_model(embed_layer) if embed_layer else self.model
        paths = iter(paths)
        with concurrent.futures.ThreadPoolExecutor(decode_threads) as pool:
            queue = collections.deque()

            def submit():
                path = next(paths, None)
                if path is not None:
                    queue.append((path, pool.submit(self._decode_and_prepare, path, window, hop)))

            for _ in range(4 * decode_threads):
                submit()
            group = []
            while queue:
                path, future = queue.popleft()
                submit()
                try:
                    group.append(future.result())
                except (AudioDecodeError, OSError, ValueError) as error:
                    yield from self._run(model, group)
                    group = []
                    yield FileResult(str(path), error=str(error))
                    continue
                if sum(len(p.segments) for p in group) >= self.batch_size:
                    yield from self._run(model, group)
                    group = []
            yield from self._run(model, group)

    def _decode_and_prepare(self, path, window, hop):
        started = time.perf_counter()
        prepared = self._prepare(str(path), decode(path, self.sample_rate), window, hop)
        prepared.decode_seconds = time.perf_counter() - started
        return prepared

    def _prepare(self, name, audio, window, hop):
        spans = self.windows(audio, window, hop)
        return _Prepared(name, [(start, end) for start, end, _ in spans],
                         [self.segments(samples) for _, _, samples in spans], 0.0)

    def _run(self, model, group):
        """Runs ``model`` over every segment of a group of prepared files, in batches."""
        if not group:
            return []
        started = time.perf_counter()
        stacked = np.concatenate([s for p in group for s in p.segments])
        batches = [model.predict_on_batch(stacked[i:i + self.batch_size])
                   for i in range(0, len(stacked), self.batch_size)]
        with_features = isinstance(batches[0], (list, tuple))
        scores = np.concatenate([b[0] if with_features else b for b in batches]).astype(np.float64)
        features = np.concatenate([b[1] for b in batches]).astype(np.float64) if with_features else None
        per_file_seconds = (time.perf_counter() - started) / len(group)
        results, offset = [], 0
        for p in group:
            predictions = []
            for (start, end), segs in zip(p.spans, p.segments):
                span = slice(offset, offset + len(segs))
                predictions.append(Prediction(p.path, scores[span].mean(axis=0), start, end,
                                              features[span].mean(axis=0) if with_features else None))
                offset += len(segs)
            results.append(FileResult(p.path, predictions, decode_seconds=p.decode_seconds,
                                      model_seconds=per_file_seconds))
        return results

    # Building blocks.

    def segments(self, audio):
        """Standardized (n, segment_samples, 1) segments; audio shorter than one is looped."""
        segs = segment(audio, self.segment_samples, max(1, audio.size // self.segment_samples))
        return ((segs - self.mean) / self.std).astype(np.float32)[..., np.newaxis]

    def windows(self, audio, window=None, hop=None):
        """(start, end, samples) of each window: every ``hop`` seconds (default: ``window``)
        while a whole window fits, then one more for the tail, looped to a whole window like
        a short file; at least one; the whole signal without ``window``."""
        if audio.size == 0:
            raise AudioDecodeError("no audio samples")
        duration = audio.size / self.sample_rate
        if window is None:
            return [(0.0, duration, audio)]
        if window <= 0 or (hop is not None and hop <= 0):
            raise ValueError("--window and --hop must be positive")
        size, step = int(round(window * self.sample_rate)), int(round((hop or window) * self.sample_rate))
        starts = list(range(0, max(audio.size - size, 0) + 1, step))
        if starts[-1] + size < audio.size and starts[-1] + step < audio.size:
            starts.append(starts[-1] + step)
        return [(s / self.sample_rate, min(s + size, audio.size) / self.sample_rate,
                 loop_pad(audio[s:s + size], size) if s and s + size > audio.size else audio[s:s + size])
                for s in starts]

    def feature_model(self, layer=None):
        """A model giving (predictions, ``layer``'s output averaged over time), built once per layer."""
        layer = layer or EMBEDDING_LAYER
        if layer not in self._feature_models:
            try:
                output = self.model.get_layer(layer).output
            except ValueError:
                names = ", ".join(item.name for item in self.model.layers)
                raise ValueError(f"the model has no layer {layer!r}; its layers are: {names}") from None
            if len(output.shape) == 3:
                output = keras.layers.GlobalAveragePooling1D(name=f"{layer}_time_mean")(output)
            self._feature_models[layer] = keras.Model(self.model.input, [self.model.output, output])
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
