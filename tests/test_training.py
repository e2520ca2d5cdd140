"""Training, resume, evaluation and metrics, end to end on a tiny generated data set."""
import csv
import dataclasses
import json
import math
import os


import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from sklearn import metrics as skm

import rawdata
from samplecnn import build, metrics, training
from samplecnn.models import ModelConfig, build_samplecnn

from scripts import ENV, SMALL_MODEL as SMALL, SMALL_NET, command, run_script


def train_cli(*args, cwd):
    return run_script("train.py", *args, cwd=cwd)


def error_lines(stderr):
    """The lines of our own messages (TensorFlow may log a few lines of its own on import)."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_run_directory_holds_every_file(trained):
    run_dir, result = trained
    assert run_dir.name.endswith("-tones-rese2") and run_dir.name[:15].replace("_", "").isdigit()
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.json", "log.csv", "results.json", "state.json", "last.keras", "tensorboard"} <= names
    assert "best.h5" not in names
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["block"] == "rese2" and config["model"]["init_features"] == 8
    assert config["classes"] == ["class0", "class1", "class2"] and config["std"] > 0
    assert config["train"]["lr_decay"] == 0.5 and config["spec"]["segment_samples"] == 22050
    assert "final checkpoint:" in result.stdout and "TensorBoard:" in result.stdout


def test_final_checkpoint_name_matches_results(trained):
    run_dir, _ = trained
    results = json.loads((run_dir / "results.json").read_text())
    test = results["test"]
    expected = f"final-auc_{test['roc_auc']:.6f}-acc_{test['accuracy']:.6f}-f1_{test['f1']:.6f}.h5"
    assert results["checkpoint"] == expected and (run_dir / expected).is_file()
    assert {"roc_auc", "pr_auc", "accuracy", "f1", "f1_micro", "per_class"} <= set(test)
    assert [r["class"] for r in test["per_class"]] == ["class0", "class1", "class2"]


def test_stage_learning_rates_in_the_csv_log(trained):
    run_dir, _ = trained
    rows = read_csv(run_dir / "log.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1))
    stages = {int(r["stage"]) for r in rows}
    assert stages == {0, 1}
    for r in rows:
        assert float(r["lr"]) == pytest.approx(0.01 * 0.5 ** int(r["stage"]))
        assert float(r["lr_now"]) <= float(r["lr"])  # after the per-step inverse-time decay
        assert math.isfinite(float(r["val_loss"]))


def test_model_learns_separable_tones(trained):
    run_dir, _ = trained
    test = json.loads((run_dir / "results.json").read_text())["test"]
    assert test["accuracy"] >= 0.75 and test["roc_auc"] >= 0.85  # chance: 0.33 and 0.5


def test_evaluate_cli_reproduces_results(trained, tmp_path):
    run_dir, _ = trained
    results = json.loads((run_dir / "results.json").read_text())
    out = tmp_path / "eval.json"
    proc = run_script("evaluate.py", run_dir / results["checkpoint"], "--output", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads(out.read_text())
    for key in ("roc_auc", "pr_auc", "accuracy", "f1", "f1_micro", "accuracy_2019", "f1_2019"):
        assert again[key] == pytest.approx(results["test"][key], abs=1e-6)
    assert "class1" in proc.stdout and "ROC-AUC" in proc.stdout and "2019 accuracy" in proc.stdout


def test_evaluate_rejects_a_data_set_with_other_classes(trained, tmp_path):
    run_dir, _ = trained
    rawdata.make_scd(tmp_path / "scd" / "raw")
    build.build_dataset("scd", data_dir=tmp_path, workers=1)
    proc = run_script("evaluate.py", run_dir, "--dataset", "scd", "--data-dir", tmp_path)
    assert proc.returncode == 2 and "trained on 3 classes" in proc.stderr and "Traceback" not in proc.stderr


def test_patience_stops_a_stage(tmp_path):
    config = training.TrainConfig(dataset="x", patience=2, min_steps=0)
    run = training.Run(tmp_path)
    state = training.RunState()
    monitor = training.StageMonitor(run, state, config)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    monitor.set_model(model)
    stopped_after = None
    for epoch, val_loss in enumerate([1.0, 0.8, 0.9, 0.85, 0.7]):
        monitor.on_epoch_end(epoch, {"loss": 1.0, "val_loss": val_loss})
        if model.stop_training:
            stopped_after = epoch + 1
            break
    assert stopped_after == 4 and state.best_val_loss == 0.8 and state.wait == 2
    assert [int(r["epoch"]) for r in read_csv(tmp_path / "log.csv")] == [1, 2, 3, 4]
    assert (tmp_path / "best.h5").exists() and json.loads((tmp_path / "state.json").read_text())["epochs"] == 4


def train_until(args, cwd, log_dir, epochs, **popen):
    """(process, run directory) of a train.py run that is still running after ``epochs`` epochs."""
    proc = subprocess.Popen(command("train.py", *args), cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, **popen)
    deadline, state_files = time.monotonic() + 300, []
    while time.monotonic() < deadline and proc.poll() is None:
        state_files = list(log_dir.glob("*/state.json"))
        if state_files and json.loads(state_files[0].read_text())["epochs"] >= epochs:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be interrupted"
    return proc, state_files[0].parent


def test_resume_after_kill_finishes_the_run(tones, tmp_path):
    args = ["tones", "--data-dir", str(tones), "--log-dir", str(tmp_path), "--num-stages", "2", "--max-epochs", "3",
            "--patience", "5", *SMALL]
    proc, run_dir = train_until(args, tones, tmp_path, epochs=2, stderr=subprocess.DEVNULL)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list(run_dir.glob("final-*.h5"))
    result = train_cli("--resume", str(run_dir), cwd=tones)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_csv(run_dir / "log.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(1, 7))
    assert [int(r["stage"]) for r in rows] == [0, 0, 0, 1, 1, 1]
    assert [int(r["step"]) for r in rows] == [23 * epoch for epoch in range(1, 7)]  # 180 clips, batches of 8
    # The epoch after the kill went on with the same SGD, learning rate and step count.
    for stage in (rows[:3], rows[3:]):
        lr_now = [float(r["lr_now"]) for r in stage]
        assert lr_now == sorted(lr_now, reverse=True) and len(set(lr_now)) == 3
        assert all(value == pytest.approx(float(stage[0]["lr"]), rel=1e-3) for value in lr_now)
    assert len(list(run_dir.glob("final-*.h5"))) == 1 and (run_dir / "results.json").exists()
    again = train_cli("--resume", str(run_dir), cwd=tones)  # a finished run stays finished
    assert again.returncode == 0 and len(read_csv(run_dir / "log.csv")) == 6


def test_divergence_stops_with_a_clear_message(tones, tmp_path):
    result = train_cli("tones", "--data-dir", str(tones), "--log-dir", str(tmp_path), "--lr", "1e30",
                       "--max-epochs", "3", "--num-stages", "1", *SMALL, cwd=tones)
    assert result.returncode == 2
    assert "training diverged" in result.stderr and "lower --lr" in result.stderr


MIRRORED = """
import sys
import tensorflow as tf
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)
from samplecnn import training
strategy = training.make_strategy("mirrored")
print("replicas", strategy.num_replicas_in_sync)
config = training.TrainConfig(dataset="tones", data_dir=sys.argv[1], log_dir=sys.argv[2], strategy="mirrored",
                              init_features=8, batch_size=4, num_stages=1, max_epochs=1, num_readers=2,
                              validation_steps=0, mixed_precision=False)
run_dir, results = training.train(config, verbose=0)
print("accuracy", results["test"]["accuracy"])
"""


def test_mirrored_strategy_on_two_logical_cpus(tones, tmp_path):
    proc = subprocess.run([sys.executable, "-c", MIRRORED, str(tones), str(tmp_path)], env=ENV, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "replicas 2" in proc.stdout
    (run_dir,) = tmp_path.iterdir()
    (row,) = read_csv(run_dir / "log.csv")
    assert math.isfinite(float(row["loss"])) and math.isfinite(float(row["val_loss"]))


def test_multilabel_metrics_agree_with_scikit_learn(caplog):
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0]])  # class 2: no positives
    scores = np.array([[0.9, 0.2, 0.3], [0.6, 0.7, 0.1], [0.2, 0.4, 0.05], [0.3, 0.1, 0.2], [0.4, 0.3, 0.6]])
    with caplog.at_level("WARNING", logger="samplecnn"):
        results = metrics.evaluate_scores(labels, scores, ["a", "b", "c"], "multilabel", threshold=0.5)
    assert "c" in caplog.text and "without both positive and negative" in caplog.text
    assert results["roc_auc"] == pytest.approx(np.mean([skm.roc_auc_score(labels[:, i], scores[:, i]) for i in (0, 1)]))
    assert results["pr_auc"] == pytest.approx(
        np.mean([skm.average_precision_score(labels[:, i], scores[:, i]) for i in (0, 1)]))
    predicted = (scores >= 0.5).astype(int)
    assert results["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
    assert results["f1"] == pytest.approx(skm.f1_score(labels, predicted, average="samples", zero_division=0))
    assert results["f1_micro"] == pytest.approx(skm.f1_score(labels, predicted, average="micro"))
    assert results["per_class"][2]["roc_auc"] is None and results["per_class"][2]["support"] == 0
    assert results["per_class"][0]["f1"] == pytest.approx(skm.f1_score(labels[:, 0], predicted[:, 0]))


def test_multiclass_metrics_agree_with_scikit_learn():
    truth = np.array([0, 1, 2, 2, 1, 0, 2])
    scores = np.random.default_rng(0).dirichlet(np.ones(3), size=7)
    labels = np.eye(3, dtype=int)[truth]
    results = metrics.evaluate_scores(labels, scores, ["x", "y", "z"], "multiclass", threshold=None)
    assert results["accuracy"] == pytest.approx(skm.accuracy_score(truth, scores.argmax(1)))
    assert results["f1"] == pytest.approx(skm.f1_score(truth, scores.argmax(1), average="macro"))
    assert results["roc_auc"] == pytest.approx(skm.roc_auc_score(truth, scores, multi_class="ovr", average="macro"))
    assert "x" in metrics.format_report(results)


def test_every_model_and_optimizer_flag_reaches_the_model():
    from samplecnn.datasets import get_spec

    config = training.TrainConfig(dataset="scd", block="rese1", amplifying_ratio=0.5, multi=True, dropout=0.3,
                                  weight_decay=1e-4, init_features=16, momentum=0.8, lr=0.05, lr_decay=0.1)
    model_config = training.model_config_for(config, get_spec("scd"))
    assert (model_config.block, model_config.amplifying_ratio, model_config.multi, model_config.dropout,
            model_config.weight_decay, model_config.init_features) == ("rese1", 0.5, True, 0.3, 1e-4, 16)
    assert (model_config.num_blocks, model_config.num_classes, model_config.activation) == (8, 35, "softmax")
    model = build_samplecnn(model_config)
    training.compile_model(model, config, stage=2, task="multiclass")
    optimizer = model.optimizer
    assert optimizer.momentum == 0.8 and optimizer.nesterov
    assert float(optimizer.learning_rate) == pytest.approx(0.05 * 0.1 ** 2)
    assert model.loss == "categorical_crossentropy"


@pytest.mark.parametrize("field, value", [("lr", -1.0), ("lr", 0.0), ("lr", math.nan), ("momentum", 1.0),
                                          ("momentum", -0.1), ("dropout", 1.5), ("dropout", 1.0), ("lr_decay", 0.0),
                                          ("lr_decay", -0.2), ("weight_decay", -1e-4), ("amplifying_ratio", 0.0),
                                          ("batch_size", 0), ("patience", -1), ("strategy", "nosuch"),
                                          ("validation_steps", -1), ("min_steps", 2.5)])
def test_values_no_sane_run_uses_are_refused(field, value):
    with pytest.raises(ValueError, match=f"--{field.replace('_', '-')} must be"):
        training.TrainConfig(dataset="scd", **{field: value})


def test_tensorboard_images_are_refused_with_multi_worker_training():
    with pytest.raises(ValueError, match="--tensorboard-images is not available with --strategy multi_worker"):
        training.TrainConfig(dataset="scd", strategy="multi_worker", tensorboard_images=True)


def test_sane_edge_values_are_accepted():
    config = training.TrainConfig(dataset="scd", momentum=0.0, dropout=0.0, weight_decay=0.0, patience=0, lr=1e-6)
    assert (config.momentum, config.dropout, config.patience) == (0.0, 0.0, 0)


@pytest.mark.parametrize("flag, value", [("--lr", "-1"), ("--dropout", "1.5")])
def test_cli_refuses_bad_values_before_creating_a_run_folder(tones, tmp_path, flag, value):
    logs = tmp_path / "logs"
    result = train_cli("tones", "--data-dir", tones, "--log-dir", logs, flag, value, *SMALL, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    expected = "must be in [0, 1), got 1.5" if flag == "--dropout" else "must be a positive number, got -1.0"
    assert result.stderr.strip().splitlines()[-1] == f"error: {flag} {expected}"
    assert not logs.exists()


def test_multiclass_macro_f1_averages_every_class_like_the_table():
    truth = np.array([0, 1, 0, 1, 1])  # class "z" is neither in the labels nor predicted
    scores = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.4, 0.5, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])
    results = metrics.evaluate_scores(np.eye(3, dtype=int)[truth], scores, ["x", "y", "z"], "multiclass")
    per_class = [row["f1"] for row in results["per_class"]]
    assert per_class[2] == 0.0
    assert results["f1"] == pytest.approx(np.mean(per_class)) == pytest.approx((2 / 3 + 6 / 7 + 0) / 3)


def test_last_checkpoint_keeps_the_optimizer_state_after_a_best_checkpoint(tmp_path):
    """What --resume loads mid-stage: the same optimizer class, learning rate schedule, step
    count, momentum and every slot variable as the model that was training."""
    config = training.TrainConfig(dataset="x", lr=0.05, momentum=0.8, patience=5)
    model = build_samplecnn(ModelConfig(num_blocks=3, init_features=4, num_classes=3, activation="softmax"))
    training.compile_model(model, config, stage=1, task="multiclass")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 81, 1)).astype("float32"), np.eye(3)[rng.integers(0, 3, 12)]
    monitor = training.StageMonitor(training.Run(tmp_path), training.RunState(), config)
    model.fit(x, y, batch_size=4, epochs=2, validation_data=(x, y), callbacks=[monitor], verbose=0)
    assert (tmp_path / "best.h5").exists()  # saved before last.keras in every improving epoch
    loaded = keras.models.load_model(tmp_path / "last.keras")
    optimizer = loaded.optimizer
    assert type(optimizer) is keras.optimizers.SGD and optimizer.nesterov and optimizer.momentum == pytest.approx(0.8)
    assert int(optimizer.iterations) == 6 == int(model.optimizer.iterations)
    assert float(optimizer.learning_rate) == pytest.approx(0.05 * 0.2 / (1 + training.STEP_DECAY * 6), rel=1e-6)
    saved = {v.path: v.numpy() for v in model.optimizer.variables}
    restored = {v.path: v.numpy() for v in optimizer.variables}
    assert saved.keys() == restored.keys() and len(saved) > 1
    for name, value in saved.items():
        np.testing.assert_array_equal(restored[name], value, err_msg=name)
    assert any(np.abs(value).sum() > 0 for name, value in saved.items() if "momentum" in name)


def test_evaluate_checks_sample_rate_and_warns_about_dtype_and_statistics(trained, tones, tmp_path):
    run_dir, _ = trained
    build.build_dataset("folder", data_dir=tmp_path / "slow", raw_dir=tones / "raw", name="tones", workers=1,
                        sample_rate=8000, clip_seconds=3.0, val_fraction=0.2, test_fraction=0.2)
    proc = run_script("evaluate.py", run_dir, "--data-dir", tmp_path / "slow")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "trained on audio at 22050 Hz but" in proc.stderr and "holds audio at 8000 Hz" in proc.stderr
    build.build_dataset("folder", data_dir=tmp_path / "other", raw_dir=tones / "raw", name="tones", workers=1,
                        sample_dtype="float32", seed=5, val_fraction=0.2, test_fraction=0.2)
    proc = run_script("evaluate.py", run_dir, "--data-dir", tmp_path / "other")
    assert proc.returncode == 0, proc.stderr[-2000:]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and "float32 samples" in warnings[0] and "inputs are standardized with the model" \
        in warnings[1]


def feed_stage(run, state, config, val_losses, steps=0):
    """Runs one stage's monitor over ``val_losses``, ``steps`` optimizer steps before each;
    returns the CSV 'best' flags of its validations."""
    monitor = training.StageMonitor(run, state, config)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    monitor.set_model(model)
    monitor.on_train_begin()
    first = len(read_csv(run.path("log.csv"))) if run.path("log.csv").exists() else 0
    for epoch, val_loss in enumerate(val_losses):
        for batch in range(steps):
            monitor.on_train_batch_end(batch, {"loss": 1.0})
        monitor.on_epoch_end(epoch, {"loss": 1.0, "val_loss": val_loss})
        if model.stop_training:
            break
    state.stage, state.stage_epochs, state.stage_steps, state.wait = state.stage + 1, 0, 0, 0
    return [int(r["best"]) for r in read_csv(run.path("log.csv"))[first:]]


@pytest.mark.parametrize("recipe, second_stage", [("2019", [1, 0]), ("samplecnn", [0])])
def test_2019_recipe_restarts_the_best_checkpoint_every_stage(tmp_path, recipe, second_stage):
    config = training.TrainConfig(dataset="x", patience=1, recipe=recipe, min_steps=0)
    run, state = training.Run(tmp_path), training.RunState()
    assert feed_stage(run, state, config, [1.0, 0.8, 0.9, 0.7]) == [1, 1, 0]
    # The next stage's first epoch is worse than the previous stage's best.
    assert feed_stage(run, state, config, [0.95, 0.97, 0.5]) == second_stage
    assert state.best_val_loss == (0.95 if recipe == "2019" else 0.8)


def test_patience_0_ends_a_stage_at_the_first_epoch_without_improvement(tmp_path):
    config = training.TrainConfig(dataset="x", patience=0, min_steps=0)
    run, state = training.Run(tmp_path), training.RunState()
    assert feed_stage(run, state, config, [1.0, 0.9, 0.8, 0.85, 0.1]) == [1, 1, 1, 0]


@pytest.mark.parametrize("recipe, min_steps, first_stage", [("samplecnn", 100, 4), ("samplecnn", None, 6),
                                                            ("samplecnn", 0, 2), ("2019", None, 2)])
def test_patience_cannot_end_the_first_stage_before_min_steps(tmp_path, recipe, min_steps, first_stage):
    config = training.TrainConfig(dataset="x", patience=1, recipe=recipe, min_steps=min_steps)
    run, state = training.Run(tmp_path), training.RunState()
    worse = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5]  # patience 1 is spent at the second validation
    assert len(feed_stage(run, state, config, worse, steps=30)) == first_stage  # 120 steps reach 100
    # Later stages start from learned weights: patience alone ends them.
    assert len(feed_stage(run, state, config, [0.9, 1.0, 1.1, 1.2], steps=30)) == 2
    assert [int(r["step"]) for r in read_csv(run.path("log.csv"))] == [30 * n for n in range(1, first_stage + 3)]


def test_a_validation_every_epoch_or_every_150_steps_if_longer():
    samplecnn, original = training.TrainConfig(dataset="x"), training.TrainConfig(dataset="x", recipe="2019")
    assert [training.validation_period(samplecnn, steps) for steps in (31, 59, 183)] == [150, 150, 183]
    assert [training.validation_period(original, steps) for steps in (31, 59, 183)] == [31, 59, 183]
    assert training.validation_period(dataclasses.replace(samplecnn, validation_steps=0), 31) == 31


@pytest.mark.parametrize("recipe, defaults", [("samplecnn", (150, 1500, True)), ("2019", (0, 0, False))])
def test_config_json_records_the_recipes_schedule_and_precision(tones, tmp_path, recipe, defaults):
    run = training.new_run(training.TrainConfig(dataset="tones", data_dir=str(tones), log_dir=str(tmp_path),
                                                recipe=recipe))
    assert tuple(run.config["train"][name] for name in training.RECIPE_OPTIONS) == defaults


def test_validation_cadence_in_steps_in_the_log_and_config(tones, tmp_path):
    result = train_cli("tones", "--data-dir", tones, "--log-dir", tmp_path, "--validation-steps", "30", "--min-steps",
                       "50", "--num-stages", "2", "--max-epochs", "3", "--patience", "0", *SMALL_NET, cwd=tones)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("schedule: validation every 30 steps (an epoch is 23); a stage ends after 1 validations without a lower "
            "val loss (30 steps), or after 3 validations (90 steps); patience cannot end the first stage before 50 "
            "steps") in result.stderr
    (run_dir,) = tmp_path.iterdir()
    rows = read_csv(run_dir / "log.csv")
    assert [int(r["step"]) for r in rows] == [30 * int(r["epoch"]) for r in rows]
    assert sum(r["stage"] == "0" for r in rows) >= 2 and rows[-1]["stage"] == "1"
    config = json.loads((run_dir / "config.json").read_text())["train"]
    assert (config["validation_steps"], config["min_steps"]) == (30, 50)
    assert json.loads((run_dir / "results.json").read_text())["steps"] == int(rows[-1]["step"])


def test_a_run_begun_before_the_schedule_options_resumes_with_a_validation_every_epoch(tones, tmp_path):
    result = train_cli("tones", "--data-dir", tones, "--log-dir", tmp_path, "--num-stages", "2", "--max-epochs", "1",
                       *SMALL, cwd=tones)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()
    # Make it what an older version left when killed after its first stage: no step counts or schedule options.
    config = json.loads((run_dir / "config.json").read_text())
    for name in ("validation_steps", "min_steps"):
        del config["train"][name]
    (run_dir / "config.json").write_text(json.dumps(config))
    (first, _) = read_csv(run_dir / "log.csv")
    del first["step"]
    (run_dir / "log.csv").write_text(",".join(first) + "\n" + ",".join(first.values()) + "\n")
    state = {"stage": 1, "stage_epochs": 0, "epochs": 1, "best_val_loss": float(first["val_loss"]), "wait": 0}
    (run_dir / "state.json").write_text(json.dumps(state))
    (run_dir / "results.json").unlink()
    next(run_dir.glob("final-*.h5")).rename(run_dir / "best.h5")
    result = train_cli("--resume", run_dir, cwd=tones)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "schedule: validation every 23 steps (an epoch is 23)" in result.stderr
    rows = read_csv(run_dir / "log.csv")
    assert list(rows[1]) == list(first) and [r["stage"] for r in rows] == ["0", "1"]
    assert all(math.isfinite(float(r["val_loss"])) and 0 <= float(r["val_categorical_accuracy"]) <= 1 for r in rows)
    assert json.loads((run_dir / "state.json").read_text())["steps"] == 23


def test_patience_0_is_accepted_on_the_command_line(tmp_path):
    result = train_cli("scd", "--patience", "0", "--data-dir", tmp_path, cwd=tmp_path)
    assert result.returncode == 2 and "manifest.json not found" in result.stderr and "--patience" not in result.stderr


def test_train_with_the_2019_recipe(tones, tmp_path):
    patience = 1
    result = train_cli("tones", "--data-dir", tones, "--log-dir", tmp_path, "--recipe", "2019", "--num-stages", "2",
                       "--max-epochs", "4", "--patience", patience, *SMALL_NET, cwd=tones)
    assert result.returncode == 0, result.stderr[-3000:]
    # The tones were built with the samplecnn recipe: one warning naming both paddings.
    warnings = [line for line in result.stderr.splitlines() if "pads short clips" in line]
    assert len(warnings) == 1 and "'loop'" in warnings[0] and "'repeat'" in warnings[0]
    (run_dir,) = tmp_path.iterdir()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["recipe"] == "2019" and config["model"]["recipe"] == "2019"
    assert (config["train"]["validation_steps"], config["train"]["min_steps"]) == (0, 0)
    rows = read_csv(run_dir / "log.csv")
    assert [int(r["step"]) for r in rows] == [23 * int(r["epoch"]) for r in rows]  # a validation every epoch
    for stage in (0, 1):
        stage_rows = [r for r in rows if int(r["stage"]) == stage]
        assert len(stage_rows) >= 1 + patience and int(stage_rows[0]["best"]) == 1
    results = json.loads((run_dir / "results.json").read_text())
    last_stage = [float(r["val_loss"]) for r in rows if int(r["stage"]) == 1]
    assert results["best_val_loss"] == pytest.approx(min(last_stage))
    test = results["test"]
    assert results["checkpoint"] == (f"final-auc_{test['roc_auc']:.6f}-acc_{test['accuracy_2019']:.6f}"
                                     f"-f1_{test['f1_2019']:.6f}.h5")
    assert "2019 accuracy" in result.stdout


def test_2019_scores_of_a_single_label_set_agree_with_scikit_learn():
    labels = np.eye(3, dtype=int)[[0, 1, 2, 2, 1]]
    scores = np.array([[0.7, 0.2, 0.1], [0.4, 0.45, 0.15], [0.1, 0.3, 0.6], [0.5, 0.1, 0.4], [0.2, 0.8, 0.0]])
    results = metrics.evaluate_scores(labels, scores, ["x", "y", "z"], "multiclass", threshold=None)
    assert results["accuracy_2019"] == pytest.approx(skm.accuracy_score(labels, scores > 0.5)) == 0.6
    assert results["f1_2019"] == pytest.approx(skm.f1_score(labels, scores > 0.5, average="samples", zero_division=0))
    assert results["accuracy"] == pytest.approx(0.8)  # top-1: only row 4 is wrong


def test_2019_scores_of_a_multi_label_set_use_strictly_greater():
    labels = np.array([[1, 0], [0, 1], [1, 1]])
    scores = np.array([[0.1, 0.05], [0.1, 0.3], [0.2, 0.1]])
    results = metrics.evaluate_scores(labels, scores, ["a", "b"], "multilabel", threshold=0.1)
    assert results["accuracy_2019"] == pytest.approx(skm.accuracy_score(labels, scores > 0.1)) == pytest.approx(1 / 3)
    assert results["accuracy"] == pytest.approx(skm.accuracy_score(labels, scores >= 0.1))


def test_runs_started_in_the_same_second_get_directories_of_their_own(tones, tmp_path):
    import datetime
    import re

    config = training.TrainConfig(dataset="tones", data_dir=str(tones), log_dir=str(tmp_path), name="same")
    now = datetime.datetime.now()
    for second in range(60):  # every name of the next minute is taken
        (tmp_path / f"{now + datetime.timedelta(seconds=second):%Y%m%d_%H%M%S}-tones-same").mkdir()
    runs = [training.new_run(config).dir for _ in range(2)]
    assert runs[0] != runs[1] and all(re.fullmatch(r"\d{8}_\d{6}-tones-same-\d+", run.name) for run in runs)
    assert all(json.loads((run / "config.json").read_text())["train"]["name"] == "same" for run in runs)


def copy_manifest(tones, tmp_path, edit):
    """A copy of the tones data set's manifest (shards left behind), changed by ``edit(text)``."""
    data = tmp_path / "data"
    (data / "tones" / "tfrecord").mkdir(parents=True)
    manifest = data / "tones" / "tfrecord" / "manifest.json"
    manifest.write_text(edit((tones / "tones" / "tfrecord" / "manifest.json").read_text()))
    return data, manifest


def test_corrupted_manifest_is_one_line_naming_it_and_makes_no_run(tones, trained, tmp_path):
    data, manifest = copy_manifest(tones, tmp_path, lambda text: text[:len(text) // 2])
    logs = tmp_path / "logs"
    for result in (train_cli("tones", "--data-dir", data, "--log-dir", logs, *SMALL, cwd=tmp_path),
                   run_script("evaluate.py", trained[0], "--data-dir", data)):
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        (line,) = error_lines(result.stderr)
        assert f"{manifest} is corrupted" in line and "build_dataset.py folder" in line and "--name tones" in line
    assert not logs.exists() or not list(logs.iterdir())


def test_unwritable_log_dir_is_one_line_and_a_failed_start_leaves_no_run(tones, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for log_dir, message in ((blocker, "is a file"), (blocker / "logs", "cannot create a run directory")):
        result = train_cli("tones", "--data-dir", tones, "--log-dir", log_dir, *SMALL, cwd=tmp_path)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert message in result.stderr and len(error_lines(result.stderr)) == 1
    # A data set whose validation split is empty fails after the run directory was made: it is removed.
    def without_val(text):
        manifest = json.loads(text)
        manifest["splits"]["val"].update(clips=0, segments=0, shards=[])
        return json.dumps(manifest)

    data = tmp_path / "data"
    shutil.copytree(tones / "tones", data / "tones")  # with its shards: they are checked before the run starts
    manifest = data / "tones" / "tfrecord" / "manifest.json"
    manifest.write_text(without_val(manifest.read_text()))
    logs = tmp_path / "logs"
    result = train_cli("tones", "--data-dir", data, "--log-dir", logs, *SMALL, cwd=tmp_path)
    assert result.returncode == 2 and "val split" in result.stderr and "Traceback" not in result.stderr
    assert list(logs.iterdir()) == []


def test_resume_refuses_other_options(trained):
    result = train_cli("--resume", trained[0], "--lr", "0.5", "--block", "basic", cwd=trained[0])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "drop --block --lr" in result.stderr and "config.json" in result.stderr


def test_ctrl_c_stops_training_with_one_line_naming_the_resume_command(tones, tmp_path):
    args = ["tones", "--data-dir", str(tones), "--log-dir", str(tmp_path), "--num-stages", "1", "--max-epochs", "50",
            "--patience", "50", *SMALL]
    proc, run_dir = train_until(args, tones, tmp_path, epochs=1, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == f"interrupted; continue with: python train.py --resume {run_dir}"
    assert (run_dir / "last.keras").exists()


def test_evaluate_stops_at_a_missing_shard_with_the_repair_command(trained, tones, tmp_path):
    run_dir, _ = trained
    shutil.copytree(tones / "tones", tmp_path / "tones")
    (shard,) = (tmp_path / "tones" / "tfrecord").glob("test-*.tfrecord")
    shard.unlink()
    proc = run_script("evaluate.py", run_dir, "--data-dir", tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: shard {shard} is missing; repair the data set "
                                                           "with `python build_dataset.py folder --raw-dir")


def test_a_run_on_random_labels_says_it_did_not_learn(tones, trained, tmp_path):
    assert json.loads((trained[0] / "results.json").read_text())["learned"] is True
    rng = np.random.default_rng(0)
    files = sorted((tones / "raw").rglob("*.wav"))
    (tmp_path / "random.csv").write_text("path,labels\n" + "".join(f"{f},{'abc'[rng.integers(3)]}\n" for f in files))
    build.build_dataset("csv", data_dir=tmp_path / "data", raw_dir=tmp_path / "random.csv", name="noise", workers=1)
    result = train_cli("noise", "--data-dir", tmp_path / "data", "--log-dir", tmp_path / "log", "--num-stages", "1",
                       "--max-epochs", "2", *SMALL, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = (tmp_path / "log").iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["learned"] is False and "within noise of chance (0.333 +" in results["warning"]
    assert "WARNING: the model did not learn" in result.stdout and "too few clips per class" in result.stdout
