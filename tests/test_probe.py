"""Linear probes on the embeddings of a trained run (samplecnn probe)."""
import json

import keras
import numpy as np
import pytest

from samplecnn import inference, pipeline, probe, training
from scripts import run_samplecnn, run_script


@pytest.fixture(scope="module")
def probes(trained, pairs, tmp_path_factory):
    """{classifier: (probe run directory, probe.json)}: logreg computes the embeddings, mlp
    runs while any model call fails, so it can only have used the cache."""
    logs, cache = tmp_path_factory.mktemp("probes"), tmp_path_factory.mktemp("cache")
    made = {"logreg": probe.probe(trained[0], "pairs", data_dir=pairs, log_dir=logs, cache_dir=cache)}

    def no_model_call(*args, **kwargs):
        raise AssertionError("the model was called although the embeddings are cached")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keras.Model, "predict_on_batch", no_model_call)
        patch.setattr(keras.Model, "__call__", no_model_call)
        made["mlp"] = probe.probe(trained[0], "pairs", data_dir=pairs, log_dir=logs, cache_dir=cache,
                                  classifier="mlp")
    assert len(list(cache.iterdir())) == 1
    return made


def test_probe_json_has_the_keys_of_results_json(trained, probes):
    keys = set(json.loads((trained[0] / "results.json").read_text()))
    for run_dir, record in probes.values():
        assert set(json.loads((run_dir / probe.PROBE).read_text())) == keys == set(record)
        assert json.loads((run_dir / "results.json").read_text()) == record
        assert record["test"]["clips"] == 12
    assert probes["logreg"][1]["learned"] and probes["logreg"][1]["warning"] is None


def test_second_probe_used_the_cached_embeddings(probes):
    cached = {name: json.loads((run_dir / "config.json").read_text())["probe"]["cached_embeddings"]
              for name, (run_dir, _) in probes.items()}
    assert cached == {"logreg": False, "mlp": True}


@pytest.mark.parametrize("classifier", ["logreg", "mlp"])
def test_the_probe_as_a_keras_model_scores_what_the_probe_scored(probes, pairs, classifier):
    run_dir, record = probes[classifier]
    model, config = inference.load_trained(run_dir)
    manifest = pipeline.load_manifest(pipeline.dataset_dir(pairs, "pairs"))
    scores = training.evaluate(model, training.with_run_statistics(manifest, config))
    for key in ("roc_auc", "pr_auc", "accuracy", "f1"):
        assert scores[key] == pytest.approx(record["test"][key], abs=1e-6), key
    config_record = config["probe"]
    assert config_record["chosen"] in probe._PROBES[classifier].grid
    assert len(config_record["validation_loss"]) == len(probe._PROBES[classifier].grid)


def test_predict_and_evaluate_take_a_probe_run(probes, pairs, tmp_path):
    run_dir, record = probes["logreg"]
    clip = next((pairs / "raw" / "low").iterdir())
    result = run_script("predict.py", run_dir, clip, "--output", tmp_path / "p.json")
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads((tmp_path / "p.json").read_text())["predictions"]
    assert sorted(row["scores"]) == ["high", "low"] and sum(row["scores"].values()) == pytest.approx(1, abs=1e-5)
    result = run_script("evaluate.py", run_dir, "--output", tmp_path / "e.json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "e.json").read_text())["accuracy"] == pytest.approx(record["test"]["accuracy"])


def test_a_probe_run_gets_a_report_without_training_curves(probes):
    run_dir, _ = probes["logreg"]
    result = run_samplecnn("report", run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((run_dir / "report" / "figures.json").read_text())
    assert {"model", "confusion"} <= set(figures) and "curves" not in figures


def test_a_missing_layer_is_one_line_listing_the_layers_and_makes_no_run(trained, pairs, tmp_path):
    result = run_samplecnn("probe", trained[0], "--dataset", "pairs", "--data-dir", pairs, "--log-dir",
                           tmp_path / "logs", "--layer", "nope")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: the model has no layer 'nope'; its layers are: audio, conv0_conv")
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("classifier, task, num_classes", [("logreg", "multilabel", 3), ("mlp", "multilabel", 3),
                                                           ("logreg", "multiclass", 4), ("mlp", "multiclass", 2)])
def test_the_keras_head_gives_the_probabilities_of_the_fitted_probe(classifier, task, num_classes):
    from samplecnn.models import ModelConfig, build_samplecnn

    model = build_samplecnn(ModelConfig(num_blocks=3, init_features=4, num_classes=2, activation="softmax"))
    features = keras.Model(model.input, model.get_layer("embedding").output)
    rng = np.random.default_rng(0)
    audio = rng.normal(size=(60, 81, 1)).astype("float32")
    x = np.asarray(features.predict_on_batch(audio))
    if task == "multilabel":
        labels = (rng.random((60, num_classes)) < 0.5).astype(float)
    else:
        labels = np.eye(num_classes)[np.arange(60) % num_classes]
    arrays = {"train_x": x[:40], "train_y": labels[:40], "val_x": x[40:], "val_y": labels[40:]}
    kind = probe._PROBES[classifier]
    fitted, _, _ = probe.fit_probe(kind, arrays, task)
    head = probe.keras_head(model, "embedding", kind, fitted, num_classes,
                            "sigmoid" if task == "multilabel" else "softmax")
    np.testing.assert_allclose(np.asarray(head.predict_on_batch(audio)), probe.probabilities(fitted, x, num_classes),
                               atol=1e-4)
