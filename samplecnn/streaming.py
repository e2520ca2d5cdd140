"""Tagging a live stream: a window every hop, as soon as its samples have arrived.

Squeeze-excitation averages over a whole segment, so a SampleCNN has no per-layer state
to carry from one hop to the next: the stream keeps the last window of samples in a
buffer and runs the model on the whole window every hop. The windows and their
probabilities are those of ``Tagger.timeline(path, window, hop)`` on the same audio.
"""
import numpy as np

from samplecnn.inference import Prediction, window_samples
from samplecnn.audio import loop_pad


class StreamTagger:
    """Feeds mono samples at the model's rate through ``push``; ``flush`` at the end.

    >>> stream = StreamTagger(Tagger.load("log/run"), window=1.0, hop=0.25)   # doctest: +SKIP
    >>> for prediction in stream.push(samples):                                 # doctest: +SKIP
    ...     print(prediction.start, stream.tagger.top(prediction.scores, 3))
    """

    def __init__(self, tagger, window=1.0, hop=0.25):
        self.tagger = tagger
        self.rate = tagger.sample_rate
        self.size, self.step = window_samples(window, hop, self.rate)
        self.buffer = np.zeros(0, np.float32)
        self.offset = 0  # stream position of buffer[0]
        self.start = 0  # stream position of the next window
        self.total = 0

    def push(self, samples):
        """Adds samples; returns the Predictions of every window completed by them."""
        samples = np.asarray(samples, np.float32).reshape(-1)
        self.buffer, self.total = np.concatenate([self.buffer, samples]), self.total + samples.size
        done = []
        while self.start + self.size <= self.total:
            begin = self.start - self.offset
            done.append(self._predict(self.buffer[begin:begin + self.size], self.start, self.start + self.size))
            self.start += self.step
        keep = min(self.start, self.total) - self.offset
        self.buffer, self.offset = self.buffer[keep:], self.offset + keep
        return done

    def flush(self):
        """The last window at the end of the stream: the tail after the last whole window,
        looped to a window (or the whole stream when it was shorter than one window)."""
        if self.total == 0:
            return []
        if self.start == 0:
            return [self._predict(self.buffer, 0, self.total)]
        if self.start < self.total and self.start - self.step + self.size < self.total:
            tail = self.buffer[self.start - self.offset:]
            return [self._predict(loop_pad(tail, self.size), self.start, self.total)]
        return []

    def _predict(self, samples, start, end):
        scores = self.tagger.predict_array(samples, self.rate).scores
        return Prediction("<stream>", scores, start / self.rate, end / self.rate)
