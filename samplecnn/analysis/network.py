"""The SampleCNN paper's analyses of what a trained network learned.

Layers are found by their role in the graph, not by name, so the analyses work for any
registered block:

- squeeze-excitation gates: a Dense layer with a sigmoid whose output (through reshapes)
  scales a tensor in a Multiply;
- the front end: the first Conv1D with a stride above 1;
- block outputs: the last layer of each ``block<i>_`` prefix, the names the model builder
  gives every block's layers.
"""
import re

import keras
import numpy as np
import tensorflow as tf


class AnalysisError(ValueError):
    """The model lacks what an analysis needs (e.g. excitations of a block without SE)."""


def _producer(tensor):
    return tensor._keras_history.operation


def excitation_gates(model):
    """The sigmoid Dense layers that scale channels (squeeze-excitation), in model order."""
    sigmoid = keras.activations.get("sigmoid")
    gates = []
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Multiply):
            continue
        for tensor in layer.input:
            source = _producer(tensor)
            while isinstance(source, keras.layers.Reshape):
                source = _producer(source.input)
            if isinstance(source, keras.layers.Dense) and source.activation is sigmoid and source not in gates:
                gates.append(source)
    return gates


def excitations(model, clips, classes):
    """Mean excitation per class and channel of every SE gate, over test clips.

    ``clips`` yields (segments (n, samples, 1), multi-hot label) per clip; a clip's
    excitations are averaged over its segments, then over the clips of each class.
    Returns one dict per gate: ``layer``, ``matrix`` (classes x channels) and
    ``class_std`` (the standard deviation across classes, averaged over channels: the
    paper's measure of how class-specific a depth is).
    """
    gates = excitation_gates(model)
    if not gates:
        raise AnalysisError(f"{model.name} has no squeeze-excitation gates (a sigmoid Dense that scales channels): "
                            "excitation analysis needs an SE-type block such as se, rese1 or rese2")
    probe = keras.Model(model.input, [gate.output for gate in gates])
    sums = [np.zeros((len(classes), gate.output.shape[-1])) for gate in gates]
    counts = np.zeros(len(classes))
    for segments, label in clips:
        outputs = probe.predict_on_batch(np.asarray(segments))
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        present = np.asarray(label) > 0
        counts += present
        for total, output in zip(sums, outputs):
            total[present] += np.asarray(output, np.float64).mean(axis=0)
    seen = counts > 0
    results = []
    for gate, total in zip(gates, sums):
        matrix = np.full_like(total, np.nan)
        matrix[seen] = total[seen] / counts[seen, None]
        results.append({"layer": gate.name, "matrix": matrix,
                        "class_std": float(np.nanstd(matrix[seen], axis=0).mean())})
    return results


def front_end(model):
    """The first strided Conv1D: the layer that looks at raw samples."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv1D) and layer.strides[0] > 1:
            return layer
    raise AnalysisError(f"{model.name} has no strided Conv1D front end")


def filter_responses(kernel, sample_rate, n_fft=512):
    """Magnitude frequency responses of Conv1D kernels (k, in, out), sorted by peak frequency.

    Input channels are summed (a raw-waveform front end has one). Returns frequencies
    (Hz), responses (out x bins, in dB), peak frequency of each filter and the order
    applied (indices of the original filters).
    """
    taps = np.asarray(kernel, np.float64).sum(axis=1).T  # (out, k)
    magnitude = np.abs(np.fft.rfft(taps, n=max(n_fft, taps.shape[1]), axis=1))
    peaks = magnitude.argmax(axis=1)
    order = np.argsort(peaks, kind="stable")
    frequencies = np.fft.rfftfreq(max(n_fft, taps.shape[1]), d=1.0 / sample_rate)
    decibels = 20 * np.log10(np.maximum(magnitude[order], 1e-12))
    return {"frequencies": frequencies, "responses": decibels, "peaks": frequencies[peaks[order]], "order": order}


def block_outputs(model):
    """(block name, output tensor) of each ``block<i>`` in order of depth."""
    last = {}
    for layer in model.layers:
        match = re.match(r"(block\d+)_", layer.name)
        if match:
            last[match.group(1)] = layer
    return sorted(((name, layer.output) for name, layer in last.items()), key=lambda item: int(item[0][5:]))


MIN_ANALYSIS_SAMPLES = 3 ** 7


def maximal_spectra(model, sample_rate, steps=20, n_fft=512, seed=0, step_size=0.1):
    """Per block, the spectrum of the input that maximally activates each channel.

    Gradient ascent from random noise (the method of the SampleCNN papers): every
    channel of a block gets its own input, all optimized in one batch. The input is one
    receptive field of the block long (at least ``3 ** 7`` samples). Returns one
    dict per block: ``block``, ``frequencies``, ``spectra`` (channels x bins, dB, rows
    sorted by peak frequency) and ``peaks`` (Hz).
    """
    rng = np.random.default_rng(seed)
    results = []
    for depth, (name, output) in enumerate(block_outputs(model), start=1):
        channels = output.shape[-1]
        length = max(MIN_ANALYSIS_SAMPLES, 3 ** (depth + 1))  # the block's receptive field
        probe = keras.Model(model.input, output)
        signal = tf.Variable(rng.normal(0, 0.1, (channels, length, 1)).astype(np.float32))
        select = tf.one_hot(tf.range(channels), channels)[:, tf.newaxis, :]

        @tf.function
        def ascend():
            with tf.GradientTape() as tape:
                activation = tf.reduce_sum(tf.reduce_mean(probe(signal, training=False) * select, axis=1))
            gradient = tape.gradient(activation, signal)
            signal.assign_add(step_size * gradient / (tf.math.reduce_std(gradient) + 1e-8))

        for _ in range(steps):
            ascend()
        frames = signal.numpy()[..., 0]
        window = np.hanning(min(n_fft, length))
        usable = length - length % len(window)
        spectrum = np.abs(np.fft.rfft(frames[:, :usable].reshape(channels, -1, len(window)) * window, axis=2))
        spectrum = spectrum.mean(axis=1)
        peaks = spectrum.argmax(axis=1)
        order = np.argsort(peaks, kind="stable")
        frequencies = np.fft.rfftfreq(len(window), d=1.0 / sample_rate)
        results.append({"block": name, "frequencies": frequencies,
                        "spectra": 20 * np.log10(np.maximum(spectrum[order], 1e-12)),
                        "peaks": frequencies[peaks[order]]})
    return results
