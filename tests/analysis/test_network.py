"""The paper's analyses find their layers by role: filters, excitations."""
import keras
import numpy as np
import pytest

import samplecnn
from samplecnn.analysis import network

SAMPLE_RATE = 22050


def test_front_end_band_pass_peaks_are_found_in_sorted_order():
    taps, n_fft = 64, 512
    truth = np.array([5000.0, 1000.0, 8000.0, 3000.0])
    t = np.arange(taps) / SAMPLE_RATE
    kernel = (np.hanning(taps)[:, None] * np.cos(2 * np.pi * truth[None, :] * t[:, None]))[:, None, :]
    inputs = keras.Input((None, 1))
    conv = keras.layers.Conv1D(len(truth), taps, strides=3, use_bias=False, name="front")
    outputs = keras.layers.Dense(2)(keras.layers.GlobalMaxPooling1D()(conv(inputs)))
    model = keras.Model(inputs, outputs)
    conv.set_weights([kernel.astype(np.float32)])
    layer = network.front_end(model)
    assert layer.name == "front"
    responses = network.filter_responses(layer.get_weights()[0], SAMPLE_RATE, n_fft=n_fft)
    bin_hz = SAMPLE_RATE / n_fft
    assert np.all(np.abs(responses["peaks"] - np.sort(truth)) <= bin_hz)
    assert list(responses["order"]) == list(np.argsort(truth))
    assert responses["responses"].shape == (len(truth), n_fft // 2 + 1)


def test_excitations_need_squeeze_excitation_blocks():
    model = samplecnn.build_model("scd", block="basic", init_features=4)
    assert network.excitation_gates(model) == []
    clips = [(np.zeros((1, 22050, 1), np.float32), np.eye(35)[0])]
    with pytest.raises(network.AnalysisError, match="no squeeze-excitation gates.*se, rese1 or rese2"):
        network.excitations(model, clips, samplecnn.get_spec("scd").classes)
    se = samplecnn.build_model("scd", block="rese1", init_features=4)
    assert [g.name for g in network.excitation_gates(se)] == [f"block{i}_se_expand" for i in range(1, 9)]
