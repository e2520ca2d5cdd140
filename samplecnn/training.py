"""Staged SGD training of a SampleCNN on a built data set, with a resumable run directory.

Stage s trains with lr * lr_decay**s (SGD, Nesterov momentum, the paper's per-step
inverse-time decay of 1e-6) until the validation loss has not improved on the best so
far for ``patience`` epochs or ``max_epochs`` have run; each stage starts from the best
weights. After every epoch the run directory holds the model with its optimizer state
(last.keras), the best model (best.h5), a CSV row and state.json, each replaced
atomically, so ``resume(run_dir)`` continues a run killed at any point.
"""
import csv
import dataclasses
import datetime
import functools
import io
import json
import logging
import math
import os
import pathlib
import shutil
import sys
import time

import keras
import tensorflow as tf

from samplecnn import distributed, metrics, pipeline
from samplecnn.datasets import MULTILABEL
from samplecnn.models import ModelConfig, block_module, build_samplecnn, import_module
from samplecnn.records import write_text_atomic

log = logging.getLogger("samplecnn")


class _QuietLegacyH5(logging.Filter):
    """The seed's checkpoint names end in .h5 by design; Keras warns at every such save."""

    def filter(self, record):
        return "considered legacy" not in record.getMessage()


logging.getLogger("absl").addFilter(_QuietLegacyH5())

STEP_DECAY = 1e-6
"""Per-step inverse-time learning-rate decay of the paper's code: lr / (1 + 1e-6 * step)."""

CONFIG, STATE, CSV_LOG, BEST, LAST, RESULTS = ("config.json", "state.json", "log.csv", "best.h5", "last.keras",
                                               "results.json")
TENSORBOARD = "tensorboard"
FINAL_PATTERN = "final-auc_{roc_auc:.6f}-acc_{accuracy:.6f}-f1_{f1:.6f}.h5"


@dataclasses.dataclass
class TrainConfig:
    """Every option of ``train.py``; stored in config.json."""

    dataset: str
    name: str | None = None
    data_dir: str = "./data"
    log_dir: str = "./log"
    block: str = "se"
    amplifying_ratio: float = 0.125
    multi: bool = False
    batch_size: int = 23
    momentum: float = 0.9
    lr: float = 0.01
    lr_decay: float = 0.2
    dropout: float = 0.5
    weight_decay: float = 0.0
    num_stages: int = 5
    patience: int = 2
    num_readers: int = 8
    max_epochs: int = 100
    init_features: int = 128
    seed: int = 0
    strategy: str = "default"
    mixed_precision: bool = False


class TrainingDiverged(Exception):
    """The training loss became NaN or infinite."""


@dataclasses.dataclass
class RunState:
    """Progress of a run, rewritten after every epoch."""

    stage: int = 0
    stage_epochs: int = 0
    epochs: int = 0
    best_val_loss: float = math.inf
    wait: int = 0
    finished: bool = False


def stage_lr(config, stage):
    return config.lr * config.lr_decay ** stage


def run_name(config, model_config):
    stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
    return f"{stamp}-{config.dataset}-{config.name or model_config.signature}"


MODEL_OPTIONS = ("block", "multi", "init_features", "amplifying_ratio", "dropout", "weight_decay")
"""TrainConfig fields that are ModelConfig fields; the rest of the model comes from the spec."""


def model_config_for(config, spec):
    return ModelConfig.for_spec(spec, **{name: getattr(config, name) for name in MODEL_OPTIONS})


def make_strategy(name):
    """The tf.distribute strategy: ``mirrored`` replicates over all GPUs, or over all
    logical CPUs when there is no GPU (useful for testing distribution on one host)."""
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "default":
        return tf.distribute.get_strategy()
    raise ValueError(f"strategy must be default, mirrored or multi_worker, got {name!r}")


def set_precision(enabled):
    """bfloat16 compute on CPUs, float16 on GPUs; float32 otherwise.

    On a 2-core AVX512-BF16 CPU bfloat16 halves convolution time but not batch norm,
    ReLU or pooling, so whole models gain 1.1-1.3x (bench/README.md).
    """
    if not enabled:
        keras.mixed_precision.set_global_policy("float32")
    else:
        gpu = bool(tf.config.list_logical_devices("GPU"))
        keras.mixed_precision.set_global_policy("mixed_float16" if gpu else "mixed_bfloat16")


def compile_model(model, config, stage, task):
    schedule = keras.optimizers.schedules.InverseTimeDecay(stage_lr(config, stage), decay_steps=1,
                                                           decay_rate=STEP_DECAY)
    optimizer = keras.optimizers.SGD(schedule, momentum=config.momentum, nesterov=True)
    multilabel = task == MULTILABEL
    model.compile(optimizer=optimizer,
                  loss="binary_crossentropy" if multilabel else "categorical_crossentropy",
                  metrics=["binary_accuracy" if multilabel else "categorical_accuracy"])


def save_atomic(model, path):
    """Saves ``model`` under a temporary name with the same suffix, then renames it."""
    path = pathlib.Path(path)
    tmp = path.with_name(f"tmp-{os.getpid()}-{path.name}")
    model.save(tmp)
    os.replace(tmp, path)


class Run:
    """A run directory: config, state, logs and checkpoints."""

    def __init__(self, directory):
        self.dir = pathlib.Path(directory)

    def path(self, name):
        return self.dir / name

    @property
    def config(self):
        return json.loads(self.path(CONFIG).read_text())

    def load_state(self):
        return RunState(**json.loads(self.path(STATE).read_text())) if self.path(STATE).exists() else RunState()

    def save_state(self, state):
        write_text_atomic(self.path(STATE), json.dumps(dataclasses.asdict(state)))

    def append_csv(self, row):
        path = self.path(CSV_LOG)
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def truncate_csv(self, epochs):
        """Drops CSV rows of epochs after ``epochs`` (written just before a kill)."""
        path = self.path(CSV_LOG)
        if not path.exists():
            return
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        kept = [r for r in rows if int(r["epoch"]) <= epochs]
        if len(kept) != len(rows):
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(kept)
            write_text_atomic(path, text.getvalue())

    def final_checkpoint(self):
        finals = sorted(self.dir.glob("final-*.h5"))
        return finals[-1] if finals else None


class StageMonitor(keras.callbacks.Callback):
    """Per-epoch bookkeeping: best checkpoint, patience, NaN check, CSV row, resumable state."""

    def __init__(self, run, state, config):
        super().__init__()
        self.run, self.state, self.config = run, state, config
        self.diverged = None
        self.started = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged = f"loss became {float(loss)} at stage {self.state.stage}, epoch {self.state.epochs + 1}"
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.diverged:
            return
        logs = dict(logs or {})
        state = self.state
        val_loss = float(logs.get("val_loss", math.nan))
        if val_loss < state.best_val_loss:
            state.best_val_loss, state.wait = val_loss, 0
            save_atomic(self.model, self.run.path(BEST))
        else:
            state.wait += 1
        save_atomic(self.model, self.run.path(LAST))
        state.epochs, state.stage_epochs = state.epochs + 1, state.stage_epochs + 1
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row = {"epoch": state.epochs, "stage": state.stage, "lr": stage_lr(self.config, state.stage),
               "lr_now": lr, **{k: float(v) for k, v in sorted(logs.items()) if k != "learning_rate"},
               "seconds": round(time.monotonic() - self.started, 3)}
        self.run.append_csv(row)
        self.run.save_state(state)
        self.started = time.monotonic()
        if state.wait >= self.config.patience:
            self.model.stop_training = True


def import_block_module(run_config, owner):
    """Imports the plugin module that provides the block of a run (recorded in its config.json)."""
    if run_config.get("block_module"):
        import_module(run_config["block_module"], needed_for=f"block {run_config['model']['block']!r} of {owner}")


def new_run(config):
    """Creates the run directory and config.json of a new run; returns the Run."""
    manifest = pipeline.load_manifest(pipeline.dataset_dir(config.data_dir, config.dataset))
    spec = pipeline.spec_of(manifest)
    model_config = model_config_for(config, spec)
    run = Run(pathlib.Path(config.log_dir) / run_name(config, model_config))
    run.dir.mkdir(parents=True, exist_ok=False)
    values = {
        "train": dataclasses.asdict(config),
        "model": model_config.to_dict(),
        "block_module": block_module(model_config.block),
        "spec": spec.to_dict(),
        "classes": manifest["classes"],
        "mean": manifest["mean"],
        "std": manifest["std"],
        "sample_dtype": manifest["sample_dtype"],
        "data": str(pathlib.Path(manifest["dir"]).resolve()),
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    write_text_atomic(run.path(CONFIG), json.dumps(values, indent=1))
    return run


def progress_verbosity():
    """Keras progress bars on a terminal; one line per epoch in logs and pipes."""
    return 1 if sys.stdout.isatty() else 2


def train(config, verbose=None):
    """Trains a new run of ``config`` and returns (run directory, test results).

    ``verbose`` is Keras's: 0 silent, 1 progress bar, 2 one line per epoch (default:
    a bar on a terminal, lines otherwise). Workers of a multi-worker run other than the
    chief return (None, None): the chief writes the run directory."""
    keras.utils.set_random_seed(config.seed)
    with distributed.scratch_dir(config.strategy) as scratch:  # None on the chief
        run_dir, results = _train(new_run(dataclasses.replace(config, log_dir=scratch or config.log_dir)), verbose)
        return (run_dir, results) if scratch is None else (None, None)


def resume(run_dir, verbose=None):
    """Continues an interrupted run from its last completed epoch; returns (run dir, results)."""
    run = Run(run_dir)
    if not run.path(CONFIG).exists():
        raise FileNotFoundError(f"{run.path(CONFIG)} not found: --resume needs a run directory made by train.py")
    keras.utils.set_random_seed(run.config["train"]["seed"] + run.load_state().epochs)
    with distributed.scratch_dir(run.config["train"]["strategy"]) as scratch:  # None on the chief
        if scratch:
            run = Run(shutil.copytree(run.dir, pathlib.Path(scratch) / run.dir.name,
                                      ignore=shutil.ignore_patterns(TENSORBOARD)))
        run_dir, results = _train(run, verbose)
        return (run_dir, results) if scratch is None else (None, None)


def _train(run, verbose):
    stored = run.config
    import_block_module(stored, run.dir)
    config = TrainConfig(**stored["train"])
    model_config = ModelConfig.from_dict(stored["model"])
    manifest = pipeline.load_manifest(stored["data"])
    spec = pipeline.spec_of(manifest)
    state = run.load_state()
    run.truncate_csv(state.epochs)
    if state.finished:
        return run.dir, json.loads(run.path(RESULTS).read_text())
    set_precision(config.mixed_precision)
    strategy = make_strategy(config.strategy)
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    steps = math.ceil(manifest["splits"]["train"]["segments"] / global_batch)
    train_data = distributed.input_data(strategy, global_batch, functools.partial(
        pipeline.segment_dataset, manifest, "train", training=True, num_readers=config.num_readers, seed=config.seed,
        drop_remainder=True))
    val_data = distributed.input_data(strategy, global_batch, functools.partial(
        pipeline.segment_dataset, manifest, "val"))
    tensorboard = keras.callbacks.TensorBoard(str(run.path(TENSORBOARD)))

    while state.stage < config.num_stages:
        with strategy.scope():
            if state.stage_epochs and run.path(LAST).exists():
                model = keras.models.load_model(run.path(LAST))  # mid-stage: weights and optimizer state
            else:
                model = build_samplecnn(model_config)
                if run.path(BEST).exists():
                    model.set_weights(keras.models.load_model(run.path(BEST), compile=False).get_weights())
                compile_model(model, config, state.stage, spec.task)
        monitor = StageMonitor(run, state, config)
        remaining = config.max_epochs - state.stage_epochs
        if remaining > 0 and state.wait < config.patience:
            fit = distributed.fit_function(model)  # model.fit, unless training on several workers
            fit(train_data, steps_per_epoch=steps, epochs=state.epochs + remaining, initial_epoch=state.epochs,
                validation_data=val_data, callbacks=[monitor, tensorboard], shuffle=False,
                verbose=progress_verbosity() if verbose is None else verbose)
        if monitor.diverged:
            kept = (f"the best checkpoint so far is kept in {run.path(BEST)}" if run.path(BEST).exists()
                    else "no epoch finished, so there is no checkpoint")
            raise TrainingDiverged(f"training diverged: {monitor.diverged}; {kept}. Try a lower --lr.")
        log.info("stage %d (lr %g): best val loss %.4f after %d epoch(s)", state.stage, stage_lr(config, state.stage),
                 state.best_val_loss, state.stage_epochs)
        state.stage, state.stage_epochs, state.wait = state.stage + 1, 0, 0
        run.save_state(state)
    return run.dir, finish(run, manifest, state)


def finish(run, manifest, state):
    """Evaluates the best checkpoint on the test set, writes results.json, renames it final-*.h5."""
    if not run.path(BEST).exists() and run.final_checkpoint() and run.path(RESULTS).exists():
        state.finished = True  # killed between the rename and the state update
        run.save_state(state)
        return json.loads(run.path(RESULTS).read_text())
    model = keras.models.load_model(run.path(BEST), compile=False)
    results = evaluate(model, manifest)
    final = run.path(FINAL_PATTERN.format(**results))
    write_text_atomic(run.path(RESULTS), json.dumps({"test": results, "checkpoint": final.name,
                                                     "best_val_loss": state.best_val_loss,
                                                     "epochs": state.epochs}, indent=1))
    os.replace(run.path(BEST), final)
    state.finished = True
    run.save_state(state)
    log.info("test: %s", metrics.format_report(results).splitlines()[0])
    return json.loads(run.path(RESULTS).read_text())


def evaluate(model, manifest):
    """Clip-level scores of ``model`` on the test split of a built data set (the only split
    stored one clip per record)."""
    spec = pipeline.spec_of(manifest)
    labels, scores, _ = metrics.predict_clips(model, pipeline.clip_dataset(manifest))
    return metrics.evaluate_scores(labels, scores, spec.classes, spec.task, spec.threshold)


def check_compatible(run_config, manifest):
    """Raises ValueError when a model cannot be evaluated on a data set."""
    if list(run_config["classes"]) != list(manifest["classes"]):
        raise ValueError(f"the model was trained on {len(run_config['classes'])} classes of "
                         f"{run_config['train']['dataset']} but {manifest['dir']} has {len(manifest['classes'])} "
                         "other classes; evaluate it on the data set it was trained on")
    if run_config["spec"]["segment_samples"] != manifest["spec"]["segment_samples"]:
        raise ValueError(f"the model takes segments of {run_config['spec']['segment_samples']} samples but "
                         f"{manifest['dir']} holds segments of {manifest['spec']['segment_samples']}")
