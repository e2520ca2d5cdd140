"""One model shared by concurrent requests: their segments are batched together.

Every request runs the library's own Tagger code (decoding, segmenting, averaging) in a
thread of its own, so requests decode in parallel; only the model calls meet here, where a
single thread merges the segments that arrive within a short window into one batch.
"""
import concurrent.futures
import contextlib
import queue
import threading
import time

import numpy as np

from samplecnn.inference import EMBEDDING_LAYER, Tagger


class Traffic:
    """How many requests are being answered: the batcher waits only for those that have not
    sent their segments yet, so a lone request never waits."""

    def __init__(self):
        self.active, self._lock = 0, threading.Lock()

    @contextlib.contextmanager
    def request(self):
        with self._lock:
            self.active += 1
        try:
            yield
        finally:
            with self._lock:
                self.active -= 1


class BatchingModel:
    """``predict_on_batch`` for many threads at once: calls that are waiting when the model is
    free go through ``model`` as one batch of at most ``max_batch`` segments (a call is never
    split), after waiting up to ``wait`` seconds for the calls of other active requests."""

    def __init__(self, model, traffic, max_batch=64, wait=0.01):
        self.model, self.traffic, self.max_batch, self.wait = model, traffic, max_batch, wait
        self._calls, self._held = queue.Queue(), None  # _held: a call that did not fit in the last batch
        threading.Thread(target=self._serve, name="samplecnn-batcher", daemon=True).start()

    def predict_on_batch(self, segments):
        future = concurrent.futures.Future()
        self._calls.put((np.asarray(segments), future))
        return future.result()

    def _gather(self):
        """The next calls to run together: the first that comes, then those already waiting, then
        those of other active requests arriving within ``wait`` seconds, while they fit in
        ``max_batch``. A request has at most one call waiting, so once every active request
        has sent one there is nothing more to wait for."""
        calls = [self._held or self._calls.get()]
        self._held = None
        size, deadline = len(calls[0][0]), time.monotonic() + self.wait
        while size < self.max_batch:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                if len(calls) >= self.traffic.active:
                    break
                try:
                    call = self._calls.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
            if size + len(call[0]) > self.max_batch:
                self._held = call
                break
            calls.append(call)
            size += len(call[0])
        return calls

    def _serve(self):
        while True:
            calls = self._gather()
            try:
                outputs = self.model.predict_on_batch(np.concatenate([segments for segments, _ in calls]))
            except Exception as error:  # every waiting request gets the model's error
                for _, future in calls:
                    future.set_exception(error)
                continue
            parts = [np.asarray(o) for o in outputs] if isinstance(outputs, (list, tuple)) else np.asarray(outputs)
            start = 0
            for segments, future in calls:
                end = start + len(segments)
                future.set_result([p[start:end] for p in parts] if isinstance(parts, list) else parts[start:end])
                start = end


class BatchingTagger(Tagger):
    """A Tagger whose model calls (and feature-model calls, per layer) are batched across threads."""

    def __init__(self, tagger, max_batch=64, wait=0.01):
        self.traffic = Traffic()
        super().__init__(BatchingModel(tagger.model, self.traffic, max_batch, wait), tagger.config,
                         tagger.batch_size)
        self.inner, self._batching = tagger, (max_batch, wait)
        self._lock = threading.Lock()

    def feature_model(self, layer=None):
        layer = layer or EMBEDDING_LAYER
        with self._lock:
            if layer not in self._feature_models:
                self._feature_models[layer] = BatchingModel(self.inner.feature_model(layer), self.traffic,
                                                            *self._batching)
            return self._feature_models[layer]
