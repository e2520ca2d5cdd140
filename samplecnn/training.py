"""Staged SGD training of a SampleCNN on a built data set, with a resumable run directory.

Stage s trains with lr * lr_decay**s (SGD, Nesterov momentum, the paper's per-step
inverse-time decay of 1e-6) until ``patience`` validations in a row (at least one) have not
improved on the best validation loss or ``max_epochs`` validations have run; each stage starts
from the best weights. A validation follows every epoch, or every ``validation_steps``
optimizer steps when an epoch is shorter, and patience cannot end the first stage before
``min_steps`` steps (both the recipe's unless given), so that a small set is not stopped on
the plateau at chance where every new model starts. The recipe (samplecnn.recipes) says
whether the best is kept over the whole run or, as in the 2019 code, restarts at every
stage. After every validation the run directory holds the model with its optimizer state
(last.keras), the best model (best.h5), a CSV row and state.json, each replaced atomically,
so ``resume(run_dir)`` continues a run killed at any point.
"""
import contextlib
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

from samplecnn import balance, distributed, metrics, pipeline, precision, transfer
from samplecnn.datasets import MULTILABEL
from samplecnn.models import ModelConfig, block_module, build_samplecnn, import_module
from samplecnn.recipes import DEFAULT_RECIPE, get_recipe, list_recipes
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
FINAL_PATTERN = "final-auc_{:.6f}-acc_{:.6f}-f1_{:.6f}.h5"


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
    validation_steps: int | None = None
    min_steps: int | None = None
    init_features: int = 128
    seed: int = 0
    strategy: str = "default"
    mixed_precision: bool | None = None
    tensorboard_images: bool = False
    recipe: str = DEFAULT_RECIPE
    init_from: str | None = None
    freeze_backbone: bool = False
    backbone_lr_scale: float = 1.0
    class_weight: str = "none"
    fold: int | None = None
    """The fold tested on, for a fold set (samplecnn.crossval); None for a set with splits."""

    def __post_init__(self):
        check_values(self)


STRATEGIES = ("default", "mirrored", "multi_worker")


def _number(low, high=math.inf, low_open=False, high_open=True, integer=False):
    """A rule accepting finite numbers between ``low`` and ``high`` (NaN never passes)."""

    def accepts(value):
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            return False
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        return above and below and math.isfinite(value)

    return accepts


def _or_none(accepts):
    """A rule that also accepts None (the recipe's value)."""
    return lambda value: value is None or accepts(value)


VALUE_RULES = {
    "lr": (_number(0, low_open=True), "a positive number"),
    "lr_decay": (_number(0, low_open=True), "a positive number"),
    "momentum": (_number(0, 1), "in [0, 1)"),
    "dropout": (_number(0, 1), "in [0, 1)"),
    "weight_decay": (_number(0), "zero or a positive number"),
    "amplifying_ratio": (_number(0, low_open=True), "a positive number"),
    "batch_size": (_number(1, integer=True), "a whole number >= 1"),
    "num_stages": (_number(1, integer=True), "a whole number >= 1"),
    "patience": (_number(0, integer=True), "a whole number >= 0"),
    "num_readers": (_number(1, integer=True), "a whole number >= 1"),
    "max_epochs": (_number(1, integer=True), "a whole number >= 1"),
    "validation_steps": (_or_none(_number(0, integer=True)), "a whole number >= 0"),
    "min_steps": (_or_none(_number(0, integer=True)), "a whole number >= 0"),
    "mixed_precision": (_or_none(lambda value: isinstance(value, bool)), "true or false"),
    "init_features": (_number(1, integer=True), "a whole number >= 1"),
    "strategy": (lambda value: value in STRATEGIES, f"one of {', '.join(STRATEGIES)}"),
    "recipe": (lambda value: value in list_recipes(), f"one of {', '.join(list_recipes())}"),
    "backbone_lr_scale": (_number(0, 1, low_open=True, high_open=False), "in (0, 1]"),
    "class_weight": (lambda value: value in balance.CLASS_WEIGHTS, f"one of {', '.join(balance.CLASS_WEIGHTS)}"),
}
"""What no sane run uses is refused before anything is created: (accepts(value), what is expected)."""


def check_values(config):
    """Raises ValueError naming the first TrainConfig value outside its range (the one place
    that checks them: train.py, the library and --resume all construct a TrainConfig)."""
    for name, (accepts, expected) in VALUE_RULES.items():
        value = getattr(config, name)
        if not accepts(value):
            raise ValueError(f"--{name.replace('_', '-')} must be {expected}, got {value!r}")
    if config.tensorboard_images and config.strategy == "multi_worker":
        raise ValueError("--tensorboard-images is not available with --strategy multi_worker (validation data is "
                         "spread over the workers); leave one of them out")
    check_fine_tuning(config)


def check_fine_tuning(config):
    """The backbone options need a source to fine-tune, and exclude each other."""
    if config.init_from is None and (config.freeze_backbone or config.backbone_lr_scale != 1):
        raise ValueError("--freeze-backbone and --backbone-lr-scale act on weights loaded from a trained run; "
                         "add --init-from RUN_DIR_OR_CHECKPOINT")
    if config.freeze_backbone and config.backbone_lr_scale != 1:
        raise ValueError("--freeze-backbone trains no backbone weights, so --backbone-lr-scale has nothing to scale; "
                         "leave one of them out")


class TrainingDiverged(Exception):
    """The training loss became NaN or infinite."""


class RunDirectoryError(Exception):
    """The run directory cannot be created where it was asked for."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run; ``resume(run_dir)`` continues it."""

    def __init__(self, run_dir):
        super().__init__(str(run_dir))
        self.run_dir = run_dir


@dataclasses.dataclass
class RunState:
    """Progress of a run, rewritten after every epoch."""

    stage: int = 0
    stage_epochs: int = 0
    epochs: int = 0
    best_val_loss: float = math.inf
    wait: int = 0
    finished: bool = False
    steps: int = 0
    stage_steps: int = 0


def stage_lr(config, stage):
    return config.lr * config.lr_decay ** stage


RECIPE_OPTIONS = ("validation_steps", "min_steps", "mixed_precision")
"""TrainConfig fields whose None means the recipe's value (samplecnn.recipes.Recipe)."""

EPOCH_SCHEDULE = {"validation_steps": 0, "min_steps": 0}
"""The schedule of runs whose config.json predates these options: a validation every epoch."""


def with_recipe_defaults(config):
    """``config`` with the recipe's values where none were given (stored so in config.json,
    so that a resumed run keeps its schedule and precision)."""
    recipe = get_recipe(config.recipe)
    return dataclasses.replace(config, **{name: getattr(recipe, name) for name in RECIPE_OPTIONS
                                          if getattr(config, name) is None})


def validation_period(config, steps_per_epoch):
    """Optimizer steps between two validations: an epoch, or ``validation_steps`` if longer."""
    return max(steps_per_epoch, with_recipe_defaults(config).validation_steps)


def run_name(config, model_config):
    stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
    return f"{stamp}-{config.dataset}-{config.name or model_config.signature}"


def make_run_dir(log_dir, name):
    """Creates ``log_dir/name``, or ``name-2``, ``name-3``, ... when that exists (runs
    started in the same second); raises RunDirectoryError when ``log_dir`` is not writable."""
    log_dir = pathlib.Path(log_dir)
    if log_dir.exists() and not log_dir.is_dir():
        raise RunDirectoryError(f"--log-dir {log_dir} is a file, not a folder; choose a folder for the runs")
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        for number in range(1, 10_000):
            directory = log_dir / (name if number == 1 else f"{name}-{number}")
            try:
                directory.mkdir()
                return directory
            except FileExistsError:
                continue
    except OSError as error:
        raise RunDirectoryError(f"cannot create a run directory in {log_dir}: {error.strerror or error}; "
                                "choose a writable --log-dir") from None
    raise RunDirectoryError(f"{log_dir} already holds runs {name} to {name}-9999")


MODEL_OPTIONS = ("block", "multi", "init_features", "amplifying_ratio", "dropout", "weight_decay", "recipe")
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


def probe_key(model_config, spec, batch_size):
    """What a precision probe measured, in its cache: the model and the batch's shape."""
    return (f"{model_config.signature} {model_config.init_features} features, {spec.segment_samples} samples, "
            f"batch {batch_size}")


def run_precision(run, config, model_config, spec):
    """Sets the run's dtype policy: chosen once (samplecnn.precision), recorded in config.json
    under "precision" and kept by --resume."""
    stored = run.config
    if "precision" not in stored:
        def make_model():
            model = build_samplecnn(model_config)
            compile_model(model, config, 0, spec.task)
            return model

        wanted = with_recipe_defaults(config).mixed_precision
        choice = precision.choose(wanted, make_model,
                                  (config.batch_size, spec.segment_samples, 1), spec.num_classes,
                                  probe_key(model_config, spec, config.batch_size),
                                  measure=config.strategy != "multi_worker")
        stored["precision"] = dataclasses.asdict(choice)
        write_text_atomic(run.path(CONFIG), json.dumps(stored, indent=1))
        if wanted:
            log.info("mixed precision: %s (%s)", choice.policy, choice.reason)
    precision.set_policy(stored["precision"]["policy"])


def compile_model(model, config, stage, task, class_weights=None):
    """Compiles for stage ``stage``; ``class_weights`` is config.json's record of them (balance)."""
    schedule = keras.optimizers.schedules.InverseTimeDecay(stage_lr(config, stage), decay_steps=1,
                                                           decay_rate=STEP_DECAY)
    optimizer = keras.optimizers.SGD(schedule, momentum=config.momentum, nesterov=True)
    if config.backbone_lr_scale != 1:
        optimizer = transfer.scale_backbone_lr(optimizer, model, config.backbone_lr_scale)
    multilabel = task == MULTILABEL
    model.compile(optimizer=optimizer,
                  loss=balance.weighted_loss(class_weights, task) or (
                      "binary_crossentropy" if multilabel else "categorical_crossentropy"),
                  metrics=["binary_accuracy" if multilabel else "categorical_accuracy"])


def save_atomic(model, path):
    """Saves ``model`` under a temporary name with the same suffix, then renames it.

    An .h5 checkpoint is saved without the optimizer: Keras's legacy H5 writer deletes the
    optimizer from the model's compile config while saving, after which every .keras save
    (last.keras, which --resume needs) would hold no optimizer and loading it would fall
    back to RMSprop at lr 0.001. Only last.keras needs the optimizer state.
    """
    path = pathlib.Path(path)
    tmp = path.with_name(f"tmp-{os.getpid()}-{path.name}")
    model.save(tmp, **({"include_optimizer": False} if path.suffix == ".h5" else {}))
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
        """Appends ``row`` under the log's header: a log begun by an older version without
        some of the columns keeps its own, so that no value lands under another's name."""
        path = self.path(CSV_LOG)
        new = not path.exists()
        if not new:
            with open(path, newline="") as f:
                fields = next(csv.reader(f))
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row) if new else fields, extrasaction="ignore")
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

    @contextlib.contextmanager
    def removed_if_failed_unstarted(self):
        """Deletes the run directory when an error (not Ctrl-C) stops the run before its
        first epoch is recorded: it holds nothing to keep, and no half-made run is left."""
        try:
            yield
        except Exception:
            if not self.path(STATE).exists():
                shutil.rmtree(self.dir, ignore_errors=True)
            raise


def patience_exhausted(state, config):
    """True once ``patience`` validations in a row, and at least one, have not improved: an
    improving one never ends a stage, so ``patience`` 0 ends it at the first validation that
    does not improve, as 1 does (the 2019 code's Keras EarlyStopping behaved so). The first
    stage does not end so before ``min_steps`` optimizer steps."""
    started = state.stage > 0 or state.stage_steps >= with_recipe_defaults(config).min_steps
    return started and state.wait >= max(config.patience, 1)


class StageMonitor(keras.callbacks.Callback):
    """Bookkeeping at every step (step count, NaN check) and validation (best checkpoint,
    patience, CSV row, resumable state)."""

    def __init__(self, run, state, config):
        super().__init__()
        self.run, self.state, self.config = run, state, config
        self.diverged = None
        self.started = time.monotonic()

    def on_train_begin(self, logs=None):
        if get_recipe(self.config.recipe).best_per_stage and self.state.stage_epochs == 0:
            self.state.best_val_loss = math.inf  # a new stage: its first epoch becomes best.h5

    def on_train_batch_end(self, batch, logs=None):
        self.state.steps, self.state.stage_steps = self.state.steps + 1, self.state.stage_steps + 1
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
        improved = val_loss < state.best_val_loss
        if improved:
            state.best_val_loss, state.wait = val_loss, 0
            save_atomic(self.model, self.run.path(BEST))
        else:
            state.wait += 1
        save_atomic(self.model, self.run.path(LAST))
        state.epochs, state.stage_epochs = state.epochs + 1, state.stage_epochs + 1
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row = {"epoch": state.epochs, "step": state.steps, "stage": state.stage,
               "lr": stage_lr(self.config, state.stage),
               "lr_now": lr, **{k: float(v) for k, v in sorted(logs.items()) if k != "learning_rate"},
               "best": int(improved), "seconds": round(time.monotonic() - self.started, 3)}
        self.run.append_csv(row)
        self.run.save_state(state)
        self.started = time.monotonic()
        if patience_exhausted(state, self.config):
            self.model.stop_training = True


def import_block_module(run_config, owner):
    """Imports the plugin module that provides the block of a run (recorded in its config.json)."""
    if run_config.get("block_module"):
        import_module(run_config["block_module"], needed_for=f"block {run_config['model']['block']!r} of {owner}")


def new_run(config, directory=None):
    """Creates the run directory (``directory``, else a new one named by run_name in the log
    directory) and config.json of a new run; returns the Run."""
    manifest = pipeline.training_manifest(pipeline.dataset_dir(config.data_dir, config.dataset), config.fold)
    spec = pipeline.spec_of(manifest)
    model_config = model_config_for(config, spec)
    start = transfer.prepare(config.init_from, spec, model_config) if config.init_from else None
    class_weights = balance.class_weight_record(config.class_weight, manifest)
    if directory is None:
        run = Run(make_run_dir(config.log_dir, run_name(config, model_config)))
    else:
        pathlib.Path(directory).mkdir()
        run = Run(directory)
    values = {
        "train": dataclasses.asdict(with_recipe_defaults(config)),
        "model": model_config.to_dict(),
        "block_module": block_module(model_config.block),
        "spec": spec.to_dict(),
        "classes": manifest["classes"],
        "mean": manifest["mean"],
        "std": manifest["std"],
        "sample_dtype": manifest["sample_dtype"],
        "data": str(pathlib.Path(manifest["dir"]).resolve()),
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "init_from": start.record if start else None,
        "class_weights": class_weights,
    }
    with run.removed_if_failed_unstarted():
        if start:
            start.save(run.dir)
        write_text_atomic(run.path(CONFIG), json.dumps(values, indent=1))
    return run


def progress_verbosity():
    """Keras progress bars on a terminal; one line per epoch in logs and pipes."""
    return 1 if sys.stdout.isatty() else 2


def train(config, verbose=None, directory=None):
    """Trains a new run of ``config`` and returns (run directory, test results).

    ``verbose`` is Keras's: 0 silent, 1 progress bar, 2 one line per epoch (default:
    a bar on a terminal, lines otherwise). ``directory`` names the run directory to create
    (default: a new one in the log directory). Workers of a multi-worker run other than the
    chief return (None, None): the chief writes the run directory."""
    keras.utils.set_random_seed(config.seed)
    with distributed.scratch_dir(config.strategy) as scratch:  # None on the chief
        run = new_run(dataclasses.replace(config, log_dir=scratch or config.log_dir),
                      None if scratch else directory)
        with run.removed_if_failed_unstarted():
            run_dir, results = _train(run, verbose)
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
    try:
        return _train_stages(run, verbose)
    except KeyboardInterrupt:
        raise RunInterrupted(run.dir) from None


def _train_stages(run, verbose):
    stored = run.config
    import_block_module(stored, run.dir)
    config = TrainConfig(**{**EPOCH_SCHEDULE, **stored["train"]})
    model_config = ModelConfig.from_dict(stored["model"])
    manifest = pipeline.run_manifest(stored)
    spec = pipeline.spec_of(manifest)
    state = run.load_state()
    run.truncate_csv(state.epochs)
    if state.finished:
        return run.dir, json.loads(run.path(RESULTS).read_text())
    run_precision(run, config, model_config, spec)
    strategy = make_strategy(config.strategy)
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    epoch_steps = math.ceil(manifest["splits"]["train"]["segments"] / global_batch)
    steps = validation_period(config, epoch_steps)
    log.info("schedule: validation every %d steps (an epoch is %d); a stage ends after %d validations without a lower "
             "val loss (%d steps), or after %d validations (%d steps); patience cannot end the first stage before %d "
             "steps", steps, epoch_steps, max(config.patience, 1), max(config.patience, 1) * steps, config.max_epochs,
             config.max_epochs * steps, config.min_steps)
    warn_if_padding_differs(manifest, config.recipe)
    train_data = distributed.input_data(strategy, global_batch, functools.partial(
        pipeline.segment_dataset, manifest, "train", training=True, num_readers=config.num_readers, seed=config.seed,
        drop_remainder=True, recipe=config.recipe))
    val_data = distributed.input_data(strategy, global_batch, functools.partial(pipeline.segment_dataset, manifest,
                                                                                "val"))
    callbacks = [keras.callbacks.TensorBoard(str(run.path(TENSORBOARD)))]
    if config.tensorboard_images:
        from samplecnn.analysis.tensorboard import IMAGES, ValidationImages

        callbacks.append(ValidationImages(val_data, spec.classes, spec.task == MULTILABEL,
                                          run.path(TENSORBOARD) / IMAGES))

    while state.stage < config.num_stages:
        with strategy.scope():
            if state.stage_epochs and run.path(LAST).exists():
                model = keras.models.load_model(run.path(LAST))  # mid-stage: weights and optimizer state
            else:
                model = build_samplecnn(model_config)
                if run.path(BEST).exists():
                    model.set_weights(keras.models.load_model(run.path(BEST), compile=False).get_weights())
                else:
                    transfer.initialize(model, run.dir)  # a fine-tuned run's first epoch
                if config.freeze_backbone:
                    transfer.freeze_backbone(model)
                compile_model(model, config, state.stage, spec.task, stored.get("class_weights"))
        monitor = StageMonitor(run, state, config)
        remaining = config.max_epochs - state.stage_epochs
        if remaining > 0 and not patience_exhausted(state, config):
            fit = distributed.fit_function(model)  # model.fit, unless training on several workers
            fit(train_data, steps_per_epoch=steps, epochs=state.epochs + remaining, initial_epoch=state.epochs,
                validation_data=val_data, callbacks=[monitor, *callbacks], shuffle=False,
                verbose=progress_verbosity() if verbose is None else verbose)
        if monitor.diverged:
            kept = (f"the best checkpoint so far is kept in {run.path(BEST)}" if run.path(BEST).exists()
                    else "no epoch finished, so there is no checkpoint")
            raise TrainingDiverged(f"training diverged: {monitor.diverged}; {kept}. Try a lower --lr.")
        log.info("stage %d (lr %g): best val loss %.4f after %d validation(s), %d steps", state.stage,
                 stage_lr(config, state.stage), state.best_val_loss, state.stage_epochs, state.stage_steps)
        state.stage, state.stage_epochs, state.stage_steps, state.wait = state.stage + 1, 0, 0, 0
        run.save_state(state)
    return run.dir, finish(run, manifest, state, config.recipe)


def warn_if_padding_differs(manifest, recipe):
    """Logs a warning when the data set's short clips were padded otherwise than ``recipe`` pads them."""
    built, wanted = manifest.get("padding", "loop"), get_recipe(recipe).padding
    if built != wanted:
        log.warning("%s was built with recipe %s, which pads short clips by %r, but this run uses recipe %s, which "
                    "pads by %r; rebuild the data set with --recipe %s --overwrite to train as that recipe does",
                    manifest["dir"], manifest.get("recipe", DEFAULT_RECIPE), built, recipe, wanted, recipe)


def final_name(results, recipe):
    """The final checkpoint's name, from the scores the recipe reports (ROC-AUC, accuracy, F1)."""
    return FINAL_PATTERN.format(*(results[key] for key in get_recipe(recipe).checkpoint_scores))


CHANCE_MARGIN = 3.0
"""Standard errors above chance that the best validation accuracy must reach to count as learning."""


def did_not_learn(rows, spec, val_segments):
    """A warning in plain words when the best validation accuracy of a single-label run is
    within noise of chance (1 / classes), else None. Multi-label accuracy is dominated by
    absent labels, so those runs are not judged."""
    column = next((key for key in rows[0] if key.startswith("val_") and key.endswith("accuracy")), None) \
        if rows and spec.task != MULTILABEL else None
    if column is None:
        return None
    best, chance = max(float(row[column]) for row in rows), 1 / spec.num_classes
    noise = CHANCE_MARGIN * math.sqrt(chance * (1 - chance) / max(val_segments, 1))
    if best > chance + noise:
        return None
    return (f"the model did not learn: its best validation accuracy {best:.3f} is within noise of chance "
            f"({chance:.3f} + {noise:.3f} for {spec.num_classes} classes and {val_segments} validation segments). "
            "Likely causes: too few clips per class, a learning rate too high or too low (--lr), or a schedule "
            "that stops before the model leaves its starting plateau (--max-epochs, --patience)")


def finish(run, manifest, state, recipe):
    """Evaluates the best checkpoint on the test set, writes results.json, renames it final-*.h5."""
    if not run.path(BEST).exists() and run.final_checkpoint() and run.path(RESULTS).exists():
        state.finished = True  # killed between the rename and the state update
        run.save_state(state)
        return json.loads(run.path(RESULTS).read_text())
    model = precision.load_float32(run.path(BEST))  # scored as evaluate.py scores it
    results = evaluate(model, manifest)
    final = run.path(final_name(results, recipe))
    with open(run.path(CSV_LOG), newline="") as f:
        warning = did_not_learn(list(csv.DictReader(f)), pipeline.spec_of(manifest),
                                manifest["splits"]["val"]["segments"])
    if warning:
        log.warning(warning)
    write_text_atomic(run.path(RESULTS), json.dumps({"test": results, "checkpoint": final.name,
                                                     "best_val_loss": state.best_val_loss,
                                                     "epochs": state.epochs, "steps": state.steps,
                                                     "learned": warning is None,
                                                     "warning": warning}, indent=1))
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
    """Raises ValueError when a model cannot be evaluated on a data set; returns warnings
    about differences that leave the scores meaningful but worth knowing."""
    if list(run_config["classes"]) != list(manifest["classes"]):
        raise ValueError(f"the model was trained on {len(run_config['classes'])} classes of "
                         f"{run_config['train']['dataset']} but {manifest['dir']} has {len(manifest['classes'])} "
                         "other classes; evaluate it on the data set it was trained on")
    if run_config["spec"]["segment_samples"] != manifest["spec"]["segment_samples"]:
        raise ValueError(f"the model takes segments of {run_config['spec']['segment_samples']} samples but "
                         f"{manifest['dir']} holds segments of {manifest['spec']['segment_samples']}")
    if run_config["spec"]["sample_rate"] != manifest["spec"]["sample_rate"]:
        rate = run_config["spec"]["sample_rate"]
        raise ValueError(f"the model was trained on audio at {rate} Hz but {manifest['dir']} holds audio at "
                         f"{manifest['spec']['sample_rate']} Hz; build the data set at the model's rate "
                         f"(--sample-rate {rate})")
    warnings = []
    if run_config["sample_dtype"] != manifest["sample_dtype"]:
        warnings.append(f"{manifest['dir']} stores {manifest['sample_dtype']} samples, the model's training data "
                        f"{run_config['sample_dtype']}: scores can differ slightly")
    if not all(math.isclose(run_config[key], manifest[key], rel_tol=1e-6) for key in ("mean", "std")):
        warnings.append(f"{manifest['dir']} has mean {manifest['mean']:.6g} and std {manifest['std']:.6g}, the model's "
                        f"training data {run_config['mean']:.6g} and {run_config['std']:.6g}: its audio differs from "
                        "the training data; inputs are standardized with the model's statistics, as in training")
    return warnings


def with_run_statistics(manifest, run_config):
    """The manifest with the run's training mean/std, which the model's inputs must be
    standardized with whatever data it is evaluated on (as the Tagger does)."""
    return {**manifest, "mean": run_config["mean"], "std": run_config["std"]}
