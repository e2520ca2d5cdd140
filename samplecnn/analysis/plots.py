"""One picture per tagged file: waveform, log-mel spectrogram and class probabilities over time.

The three panels share the time axis, so a peak of a class lines up with the sound
that caused it. The plotted probabilities are written beside the PNG as JSON.
"""
import json
import pathlib

import librosa
import librosa.display
import numpy as np
from matplotlib.figure import Figure

from samplecnn.analysis import report

MEL_BANDS = 64


def class_heatmap(predictions, classes, top_k):
    """(class names, classes x windows matrix) of the ``top_k`` classes with the highest peak."""
    scores = np.stack([p.scores for p in predictions], axis=1)  # classes x windows
    top = np.argsort(scores.max(axis=1))[::-1][:top_k]
    return [classes[i] for i in top], scores[top]


def plot_file(png_path, audio, sample_rate, predictions, classes, top_k=5, title=None):
    """Draws ``audio`` and its window ``predictions`` to ``png_path``; writes ``<png>.json`` with the numbers."""
    png_path = pathlib.Path(png_path)
    names, matrix = class_heatmap(predictions, classes, top_k)
    duration = audio.size / sample_rate
    figure = Figure(figsize=(10, 7), layout="constrained")
    wave_axes, mel_axes, class_axes = figure.subplots(3, 1, sharex=True, height_ratios=[1, 2, 0.4 + 0.3 * len(names)])
    librosa.display.waveshow(audio, sr=sample_rate, ax=wave_axes)
    wave_axes.set_title(title or png_path.stem, fontsize="small")
    mel = librosa.feature.melspectrogram(y=audio, sr=sample_rate, n_mels=MEL_BANDS)
    librosa.display.specshow(librosa.power_to_db(mel, ref=np.max), sr=sample_rate, x_axis="time", y_axis="mel",
                             ax=mel_axes)
    starts = np.array([p.start for p in predictions])
    ends = np.array([p.end for p in predictions])
    # One column per window, from its start to the next window's start (windows may overlap).
    edges = np.append(starts, ends[-1])
    class_axes.pcolormesh(edges, np.arange(len(names) + 1) - 0.5, matrix, cmap="viridis", vmin=0, vmax=1)
    class_axes.set_yticks(range(len(names)), names, fontsize="small")
    class_axes.set_ylim(len(names) - 0.5, -0.5)
    class_axes.set_xlim(0, max(duration, ends[-1]))
    class_axes.set_xlabel("time (s)")
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path, dpi=80, metadata={"Software": None})
    numbers = {"classes": names, "starts": starts, "ends": ends, "probabilities": matrix, "duration": duration}
    png_path.with_suffix(".json").write_text(json.dumps(report._plain(numbers)))
    return png_path

