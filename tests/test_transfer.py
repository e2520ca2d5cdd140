"""Fine-tuning from a trained run (--init-from, --freeze-backbone, --backbone-lr-scale) and class weights."""
import hashlib
import json
import shutil
import signal
import subprocess

import keras
import numpy as np
import pytest

import rawdata
from samplecnn import balance, build, pipeline, training, transfer
from samplecnn.models import HEAD_LAYERS, ModelConfig, build_samplecnn
from scripts import SMALL_MODEL, run_script
from test_training import read_csv, train_until

TINY_SCHEDULE = ["--num-stages", "1", "--max-epochs", "1"]


def fine_tune(pairs, logs, *args):
    return run_script("train.py", "pairs", "--data-dir", pairs, "--log-dir", logs, "--init-from", *args,
                      "--block", "rese2", *SMALL_MODEL, cwd=pairs)


@pytest.fixture(scope="module")
def frozen(trained, pairs, tmp_path_factory):
    """(run directory, completed process) of a one-epoch --freeze-backbone run from the tones run."""
    logs = tmp_path_factory.mktemp("frozen")
    result = fine_tune(pairs, logs, trained[0], "--freeze-backbone", *TINY_SCHEDULE)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = logs.iterdir()
    return run_dir, result


def weights_by_layer(model):
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def test_fine_tuning_loads_the_matching_layers_and_skips_the_classifier(trained, frozen):
    run_dir, result = frozen
    source = training.Run(trained[0]).final_checkpoint()
    record = json.loads((run_dir / "config.json").read_text())["init_from"]
    source_model = keras.models.load_model(source, compile=False)
    with_weights = [layer.name for layer in source_model.layers if layer.weights]
    assert record["loaded"] == [name for name in with_weights if name != "logits"] and len(record["loaded"]) > 20
    assert record["skipped"] == {"logits": "weights [(32, 3), (3,)] in the source, [(32, 2), (2,)] here"}
    assert record["checkpoint"] == str(source.resolve()) and record["source"] == str(trained[0].resolve())
    assert record["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    (line,) = [line for line in result.stderr.splitlines() if "fine-tuning from" in line]
    assert f"loaded {len(record['loaded'])} layers, skipped 1: logits" in line


def test_frozen_backbone_keeps_every_weight_and_statistic_over_an_epoch(trained, frozen):
    run_dir, _ = frozen
    before = weights_by_layer(keras.models.load_model(training.Run(trained[0]).final_checkpoint(), compile=False))
    after = weights_by_layer(keras.models.load_model(training.Run(run_dir).final_checkpoint(), compile=False))
    assert json.loads((run_dir / "state.json").read_text())["epochs"] == 1
    backbone = [name for name in after if name not in HEAD_LAYERS]
    for name in backbone:  # kernels, biases and BatchNorm moving statistics alike
        for old, new in zip(before[name], after[name]):
            np.testing.assert_array_equal(new, old, err_msg=name)
    assert not all(np.array_equal(old, new) for old, new in zip(before["head_dense"], after["head_dense"]))


def test_predict_on_a_fine_tuned_run_gives_probabilities_of_its_own_classes(frozen, pairs, tmp_path):
    run_dir, _ = frozen
    clip = next((pairs / "raw" / "high").iterdir())
    result = run_script("predict.py", run_dir, clip, "--output", tmp_path / "p.json")
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads((tmp_path / "p.json").read_text())["predictions"]
    assert sorted(row["scores"]) == ["high", "low"] and sum(row["scores"].values()) == pytest.approx(1, abs=1e-5)


def test_another_block_is_one_line_naming_it_and_makes_no_run(trained, pairs, tmp_path):
    result = run_script("train.py", "pairs", "--data-dir", pairs, "--log-dir", tmp_path / "logs", "--init-from",
                        trained[0], "--block", "se", *SMALL_MODEL, cwd=pairs)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --init-from {trained[0]} was trained with block 'rese2', this run builds block 'se'; "
        "pass --block rese2 to fine-tune from it")
    assert not (tmp_path / "logs").exists()


def test_another_sample_rate_is_an_error_naming_both_before_any_run(trained, tones, tmp_path):
    build.build_dataset("folder", data_dir=tmp_path, raw_dir=tones / "raw", name="slow", workers=1, sample_rate=16000,
                        clip_seconds=2.0, val_fraction=0.2, test_fraction=0.2)
    config = training.TrainConfig(dataset="slow", data_dir=str(tmp_path), log_dir=str(tmp_path / "logs"),
                                  block="rese2", init_features=8, init_from=str(trained[0]))
    with pytest.raises(transfer.TransferError, match="segments of 22050 samples at 22050 Hz, but slow has segments "
                                                     "of 22050 samples at 16000 Hz; build slow with --sample-rate "
                                                     "22050 --segment-samples 22050 to use it"):
        training.train(config, verbose=0)
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("options", [dict(freeze_backbone=True), dict(backbone_lr_scale=0.5),
                                     dict(init_from="x", freeze_backbone=True, backbone_lr_scale=0.5)])
def test_backbone_options_without_a_source_or_together_are_refused(options):
    with pytest.raises(ValueError, match="--init-from|leave one of them out"):
        training.TrainConfig(dataset="x", **options)


def test_backbone_lr_scale_scales_exactly_the_backbone_steps():
    config = ModelConfig(block="se", num_blocks=3, init_features=4, num_classes=3, activation="softmax", dropout=0.0)
    models = [build_samplecnn(config) for _ in range(2)]
    models[1].set_weights(models[0].get_weights())
    plain = keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True)
    models[0].compile(optimizer=plain, loss="categorical_crossentropy")
    models[1].compile(optimizer=transfer.scale_backbone_lr(plain, models[1], 0.25), loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 81, 1)).astype("float32"), np.eye(3)[rng.integers(0, 3, 6)]
    start = {v.path: v.numpy() for v in models[0].trainable_variables}
    for model in models:
        model.train_on_batch(x, y)
    steps = [{v.path: v.numpy() - start[v.path] for v in model.trainable_variables} for model in models]
    backbone = set(transfer.backbone_layers(models[0]))
    for path, step in steps[0].items():
        expected = step * (0.25 if path.split("/")[0] in backbone else 1.0)
        np.testing.assert_allclose(steps[1][path], expected, rtol=1e-4, atol=1e-7, err_msg=path)
    assert {path.split("/")[0] for path in steps[0]} - backbone == set(HEAD_LAYERS)


def test_a_killed_fine_tuned_run_resumes_from_its_own_weights_without_its_source(trained, pairs, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(trained[0], source)
    logs = tmp_path / "logs"
    args = ["pairs", "--data-dir", pairs, "--log-dir", logs, "--init-from", source, "--backbone-lr-scale", "0.1",
            "--block", "rese2", "--num-stages", "2", "--max-epochs", "2", "--patience", "5", *SMALL_MODEL]
    proc, run_dir = train_until(list(map(str, args)), pairs, logs, epochs=1, stderr=subprocess.DEVNULL)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    shutil.rmtree(source)
    (run_dir / transfer.INIT_WEIGHTS).write_bytes(b"not weights: a resume must not read the start again")
    last = keras.models.load_model(run_dir / training.LAST)
    assert isinstance(last.optimizer, transfer.BackboneScaledSGD) and last.optimizer.scale == pytest.approx(0.1)
    assert set(last.optimizer.scaled_layers) == set(transfer.backbone_layers(last))
    result = run_script("train.py", "--resume", run_dir, cwd=pairs)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [int(r["epoch"]) for r in read_csv(run_dir / "log.csv")] == [1, 2, 3, 4]
    assert json.loads((run_dir / "results.json").read_text())["test"]["clips"] == 12


@pytest.fixture(scope="module")
def lopsided(tmp_path_factory):
    """A tiny folder data set with 8 clips of one class and 24 of the other (0.1 s at 8000 Hz)."""
    data = tmp_path_factory.mktemp("lopsided")
    for c, count in enumerate((8, 24)):
        for i in range(count):
            audio = rawdata.tone(0.1, 8000, rawdata.class_frequency(6 * c), seed=i)
            rawdata.write_wav(data / "raw" / f"class{c}" / f"{i}.wav", audio, 8000)
    build.build_dataset("folder", data_dir=data, raw_dir=data / "raw", name="lopsided", workers=1, sample_rate=8000,
                        clip_seconds=0.1, segment_samples=729, val_fraction=0.25, test_fraction=0.25)
    return data


def test_balanced_class_weights_are_counted_from_the_train_split_and_kept_for_resume(lopsided, tmp_path):
    result = run_script("train.py", "lopsided", "--data-dir", lopsided, "--log-dir", tmp_path, "--class-weight",
                        "balanced", "--num-stages", "1", "--max-epochs", "2", "--patience", "5", *SMALL_MODEL,
                        cwd=lopsided)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["class_weight"] == "balanced"
    assert config["class_weights"] == {"mode": "balanced", "train_segments": {"class0": 4, "class1": 12},
                                       "weights": [2.0, pytest.approx(2 / 3)]}
    loss = keras.models.load_model(run_dir / training.LAST).loss
    assert isinstance(loss, balance.WeightedCrossEntropy) and loss.weights == config["class_weights"]["weights"]


def test_counted_labels_are_those_of_the_train_records(lopsided):
    manifest = pipeline.load_manifest(pipeline.dataset_dir(lopsided, "lopsided"))
    labels = np.concatenate([y.numpy() for _, y in pipeline.segment_dataset(manifest, "val", batch_size=5)])
    assert balance.count_labels(manifest, "val") == labels.sum(axis=0).astype(int).tolist() == [2, 6]


def test_weighted_cross_entropy_weighs_classes_and_equals_keras_with_unit_weights():
    y = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    p = np.array([[0.7, 0.2, 0.1], [0.3, 0.5, 0.2], [0.1, 0.1, 0.8]], np.float32)
    unit = balance.WeightedCrossEntropy([1, 1, 1], multilabel=False)
    assert float(unit(y, p)) == pytest.approx(float(keras.losses.CategoricalCrossentropy()(y, p)), rel=1e-6)
    weighted = balance.WeightedCrossEntropy([2, 1, 0.5], multilabel=False)
    assert float(weighted(y, p)) == pytest.approx(-(2 * np.log(0.7) + np.log(0.5) + 0.5 * np.log(0.8)) / 3, rel=1e-5)
    y_multi = np.array([[1, 0, 1], [0, 1, 0]], np.float32)
    p_multi = np.array([[0.9, 0.2, 0.4], [0.3, 0.6, 0.1]], np.float32)
    unit = balance.WeightedCrossEntropy([1, 1, 1], multilabel=True)
    assert float(unit(y_multi, p_multi)) == pytest.approx(float(keras.losses.BinaryCrossentropy()(y_multi, p_multi)),
                                                          rel=1e-5)
    weights = np.array([3.0, 1.0, 2.0])
    terms = weights * y_multi * np.log(p_multi) + (1 - y_multi) * np.log(1 - p_multi)
    weighted = balance.WeightedCrossEntropy(weights.tolist(), multilabel=True)
    assert float(weighted(y_multi, p_multi)) == pytest.approx(-terms.mean(), rel=1e-5)


def test_balanced_weights_follow_inverse_frequency_and_positive_ratio():
    assert balance.balanced_weights([10, 30, 0], 40, "multiclass") == pytest.approx([40 / 30, 40 / 90, 1.0])
    assert balance.balanced_weights([10, 30, 0], 40, "multilabel") == pytest.approx([3.0, 1 / 3, 1.0])


@pytest.mark.parametrize("field, value, expected", [("backbone_lr_scale", 0.0, "--backbone-lr-scale must be in (0, 1]"),
                                                    ("backbone_lr_scale", 1.5, "--backbone-lr-scale must be in (0, 1]"),
                                                    ("class_weight", "inverse", "--class-weight must be one of none, "
                                                                                "balanced")])
def test_backbone_lr_scale_and_class_weight_outside_their_values_are_refused(field, value, expected):
    with pytest.raises(ValueError) as error:
        training.TrainConfig(dataset="x", init_from="run", **{field: value})
    assert str(error.value) == f"{expected}, got {value!r}"
