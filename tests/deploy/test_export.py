"""samplecnn export: every format reloads and agrees with Keras; whole clips equal predict.py's."""
import json

import numpy as np
import pandas as pd
import pytest

import rawdata
from samplecnn.audio import decode
from samplecnn.deploy import backends, export
from samplecnn.inference import Tagger
from scripts import run_samplecnn, run_script


FLOAT_FORMATS = ["saved_model", "tflite", "onnx"]


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    return export.export_run(trained[0], FLOAT_FORMATS, out_dir=out, progress=lambda line: None), out


def test_every_format_is_written_and_agrees_with_keras(exported, tagger):
    report, out = exported
    assert list(report["formats"]) == FLOAT_FORMATS
    assert (out / "labels.txt").read_text().split("\n")[:3] == tagger.classes
    assert json.loads((out / "export.json").read_text()) == report
    rng = np.random.default_rng(0)
    pcm = np.stack([rawdata.tone(1.0, 22050, rawdata.class_frequency(4 * c), seed=c) for c in range(3)]
                   + [0.1 * rng.normal(size=22050).astype(np.float32)])
    keras_scores = tagger.model.predict_on_batch(((pcm - tagger.mean) / tagger.std)[..., np.newaxis])
    for name, entry in report["formats"].items():
        runner = backends.load_backend(out / entry["file"])
        scores = runner.predict(pcm)["probabilities"]
        assert scores.shape == (4, 3)
        assert entry["max_abs_difference"] <= 1e-5 and entry["top1_agreement"] == 1.0
        assert np.abs(scores - keras_scores).max() <= 1e-5
        assert runner.predict(pcm)["embedding"].shape == (4, tagger.model.get_layer("embedding").output.shape[-1])
        assert (scores.argmax(axis=1)[:3] == [0, 1, 2]).all()


@pytest.mark.parametrize("seconds", [0.3, 1.0, 7.0])
def test_whole_clip_entry_point_equals_predict_file(exported, tagger, tmp_path, seconds):
    _, out = exported
    path = rawdata.write_wav(tmp_path / "clip.wav", rawdata.tone(seconds, 22050, 300.0, seed=3), 22050)
    expected = tagger.predict_file(path).scores
    audio = decode(path, 22050)
    for file in ("saved_model", "model.tflite"):
        got = backends.load_backend(out / file).predict_clip(audio)["probabilities"][0]
        assert np.abs(got - expected).max() <= 1e-5, file
    assert audio.size == round(seconds * 22050)


def test_corrupt_or_foreign_files_are_clear_errors(tmp_path):
    broken = tmp_path / "model.tflite"
    broken.write_bytes(b"not a flatbuffer")
    with pytest.raises(backends.ExportError, match="cannot load .*model.tflite as a litert model.*export it again"):
        backends.load_backend(broken)
    with pytest.raises(backends.ExportError, match="not an exported model"):
        backends.load_backend(tmp_path)
    with pytest.raises(backends.ExportError, match="not found"):
        backends.load_backend(tmp_path / "missing.onnx")


def test_cli_exports_one_format_and_refuses_unknown_ones(trained, tmp_path):
    result = run_samplecnn("export", trained[0], "--format", "onnx", "--out", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "model.onnx").is_file() and "exported onnx" in result.stdout
    result = run_samplecnn("export", trained[0], "--format", "coreml")
    assert result.returncode == 2 and "--format coreml: unknown" in result.stderr


def test_integer_tflite_agrees_with_keras_within_the_limits(trained, tmp_path):
    report = export.export_run(trained[0], ["tflite", "tflite-int8"], out_dir=tmp_path, calibration=100,
                               progress=lambda line: None)
    entry = report["formats"]["tflite-int8"]
    assert entry["top1_agreement"] >= 0.98 and entry["keras_accuracy"] - entry["accuracy"] <= 0.01
    assert entry["bytes"] < report["formats"]["tflite"]["bytes"]
    tagger = Tagger.from_run(trained[0])
    pcm = np.stack([rawdata.tone(1.0, 22050, rawdata.class_frequency(4 * c), seed=c) for c in range(3)])
    keras_scores = tagger.model.predict_on_batch(((pcm - tagger.mean) / tagger.std)[..., np.newaxis])
    scores = backends.load_backend(tmp_path / entry["file"]).predict(pcm)["probabilities"]
    assert (scores.argmax(axis=1) == keras_scores.argmax(axis=1)).all() and np.abs(scores - keras_scores).max() < 0.1


def test_predict_on_every_export_gives_the_runs_top_classes(trained, exported, tmp_path):
    run_dir, _ = trained
    _, out = exported
    files = [rawdata.write_wav(tmp_path / f"c{c}.wav", rawdata.tone(1.5, 16000, rawdata.class_frequency(4 * c),
                                                                    seed=50 + c), 16000) for c in range(3)]
    reference = run_script("predict.py", run_dir, *files, "--output", tmp_path / "run.csv")
    assert reference.returncode == 0, reference.stderr[-2000:]
    expected = pd.read_csv(tmp_path / "run.csv")
    for file in ("saved_model", "model.tflite", "model.onnx"):
        result = run_script("predict.py", out / file, *files, "--output", tmp_path / "export.csv",
                            "--embeddings", tmp_path / "emb.csv")
        assert result.returncode == 0, result.stderr[-2000:]
        table = pd.read_csv(tmp_path / "export.csv")
        assert list(table.columns) == list(expected.columns)
        assert [t.split(":")[0] for t in table["top_classes"]] == [t.split(":")[0] for t in expected["top_classes"]]
        assert np.abs(table[tagger_classes(expected)].to_numpy() - expected[tagger_classes(expected)].to_numpy()).max() \
            <= 2e-5
        assert pd.read_csv(tmp_path / "emb.csv").shape[0] == 3


def tagger_classes(table):
    return [c for c in table.columns if c.startswith("class")]


def test_exported_tagger_refuses_other_layers_and_needs_export_json(exported, tmp_path):
    _, out = exported
    tagger = Tagger.load(out / "model.onnx")
    with pytest.raises(ValueError, match="only the 'embedding' layer"):
        tagger.feature_model("block1_pool")
    lone = tmp_path / "model.onnx"
    lone.write_bytes((out / "model.onnx").read_bytes())
    with pytest.raises(FileNotFoundError, match="export.json not found"):
        Tagger.load(lone)
