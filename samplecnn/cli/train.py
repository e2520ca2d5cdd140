"""Trains a SampleCNN on a built data set.

  python train.py DATASET [NAME] [--block se] [--multi] [--recipe samplecnn|2019] ...
  python train.py --resume log/20190424_213449-scd-se
  python train.py NAME --cv | --fold K          (a fold set: every fold, or fold K)
  python train.py --resume log/20190424_213449-NAME-se-cv
  python train.py MY_SET --init-from log/20190424_213449-scd-se [--freeze-backbone | --backbone-lr-scale 0.1]
"""
from absl import flags

from samplecnn.cli import FLAGS, IMPORT_HELP, UsageError, flag, import_modules, run
from samplecnn.recipes import DEFAULT_RECIPE, get_recipe, list_recipes


def recipe_values(field):
    """``samplecnn 150, 2019 0``: a recipe field's value in every registered recipe, for the help."""
    return ", ".join(f"{name} {getattr(get_recipe(name), field)}" for name in list_recipes())


flags.DEFINE_string("data-dir", "./data", "Data root holding DATA_DIR/<dataset>/tfrecord.")
flags.DEFINE_string("log-dir", "./log", "Directory where to write event logs and models.")
flags.DEFINE_string("block", "se", "Convolutional block to build a model (basic/se/res1/res2/rese1/rese2, or any "
                    "registered block).")
flags.DEFINE_float("amplifying-ratio", 0.125, "Width of the squeeze-excitation bottleneck relative to the channels.")
flags.DEFINE_boolean("multi", False, "Use multi-level feature aggregation.")
flags.DEFINE_integer("batch-size", 23, "Mini-batch size (per replica).", lower_bound=1)
flags.DEFINE_float("momentum", 0.9, "Momentum for SGD.")
flags.DEFINE_float("lr", 0.01, "Learning rate.")
flags.DEFINE_float("lr-decay", 0.2, "Learning rate decay rate between stages.")
flags.DEFINE_float("dropout", 0.5, "Dropout rate.")
flags.DEFINE_float("weight-decay", 0.0, "Weight decay (L2 on kernels).")
flags.DEFINE_integer("num-stages", 5, "Number of stages to train.", lower_bound=1)
flags.DEFINE_integer("patience", 2, "Stop training stage after #patiences: validations in a row without a lower val "
                     "loss (0 stops at the first such validation, like 1).", lower_bound=0)
flags.DEFINE_integer("num-readers", 8, "Number of TFRecord readers.", lower_bound=1)
flags.DEFINE_integer("max-epochs", 100, "Maximum validations (epochs, or --validation-steps if longer) per stage.",
                     lower_bound=1)
flags.DEFINE_integer("validation-steps", None, "Validate every epoch or every this many optimizer steps, whichever is "
                     f"longer (default: the recipe's: {recipe_values('validation_steps')}).", lower_bound=0)
flags.DEFINE_integer("min-steps", None, "Patience cannot end the first stage before this many optimizer steps "
                     f"(default: the recipe's: {recipe_values('min_steps')}).", lower_bound=0)
flags.DEFINE_integer("init-features", 128, "Channels of the first convolution.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                  "tf.distribute strategy: mirrored = all local GPUs, multi_worker = hosts in TF_CONFIG.")
flags.DEFINE_boolean("mixed-precision", None, "Compute in bfloat16 or float16 where that is faster: on a CPU "
                     "a short probe of both precisions decides (cached), on a GPU its compute capability; "
                     "--nomixed-precision: float32 (default: the recipe's: "
                     f"{recipe_values('mixed_precision')}).")
flags.DEFINE_boolean("tensorboard-images", False, "Draw the validation confusion matrix (single-label) or per-class "
                     "AUC bars (multi-label) into TensorBoard after every epoch (one extra pass over val).")
flags.DEFINE_string("resume", None, "Continue the interrupted run in this run directory (or the cross-validation "
                    "in this parent directory).")
flags.DEFINE_boolean("cv", False, "Cross-validate on a fold set: one run per fold (test fold k, validation fold "
                     "k+1, training the rest) under one parent directory, summarized in its cv_results.json.")
flags.DEFINE_integer("fold", None, "Like --cv, for fold K only (0 to folds-1).")
flags.DEFINE_string("recipe", DEFAULT_RECIPE, "Recipe (samplecnn or 2019, see the README): initializers, stages, "
                    "shuffling, scores in the checkpoint name, weight-decay targets.")
flags.DEFINE_string("init-from", None, "Fine-tune: start from the layers of this run directory (its final checkpoint, "
                    "else its best.h5) or checkpoint whose names and weight shapes match; the rest starts fresh.")
flags.DEFINE_boolean("freeze-backbone", False, "With --init-from: train only the head (head_dense, head_bn, logits); "
                     "the frozen layers' BatchNorm stays in inference mode.")
flags.DEFINE_float("backbone-lr-scale", 1.0, "With --init-from: train the backbone at this fraction of the head's "
                   "learning rate.")
flags.DEFINE_enum("class-weight", "none", ["none", "balanced"], "balanced: weigh the loss by inverse class frequency "
                  "in the train split (single-label) or by each class's negatives/positives (multi-label).")
flags.DEFINE_multi_string("import", [], IMPORT_HELP)

OPTIONS = ("data-dir", "log-dir", "block", "amplifying-ratio", "multi", "batch-size", "momentum", "lr", "lr-decay",
           "dropout", "weight-decay", "num-stages", "patience", "num-readers", "max-epochs", "init-features", "seed",
           "validation-steps", "min-steps",
           "strategy", "mixed-precision", "tensorboard-images", "recipe", "init-from", "freeze-backbone",
           "backbone-lr-scale", "class-weight")


def main(argv):
    import logging

    from samplecnn import crossval, training
    from samplecnn.models import PluginError, list_blocks
    from samplecnn.pipeline import DataError
    from samplecnn.transfer import TransferError

    logging.getLogger("samplecnn").setLevel(logging.INFO)
    import_modules()
    try:
        if flag("resume"):
            given = [*argv[1:], *(f"--{name}" for name in (*OPTIONS, "cv", "fold") if FLAGS[name].present)]
            if given:
                raise UsageError("--resume takes its data set and options from the run's config.json; "
                                 f"drop {' '.join(given)}")
            if crossval.is_parent(flag("resume")):
                return report_cv(*crossval.resume(flag("resume")))
            run_dir, results = training.resume(flag("resume"))
        else:
            if len(argv) not in (2, 3):
                raise UsageError(f"usage: train.py DATASET [NAME] [options]; got {argv[1:]}")
            if flag("block") not in list_blocks():
                raise UsageError(f"--block {flag('block')} is not registered; choose from {', '.join(list_blocks())}, "
                                 "or --import the module that registers it")
            if flag("recipe") not in list_recipes():
                raise UsageError(f"--recipe {flag('recipe')} is not registered; "
                                 f"choose from {', '.join(list_recipes())}")
            values = {k.replace("-", "_"): flag(k) for k in OPTIONS}
            try:
                config = training.TrainConfig(dataset=argv[1], name=argv[2] if len(argv) == 3 else None, **values)
            except ValueError as error:
                raise UsageError(str(error)) from None
            if flag("cv") and flag("fold") is not None:
                raise UsageError("--cv trains every fold and --fold K one of them; give one of the two")
            if flag("cv") or flag("fold") is not None:
                try:
                    return report_cv(*crossval.cross_validate(config, None if flag("cv") else [flag("fold")]))
                except ValueError as error:
                    raise UsageError(str(error)) from None
            run_dir, results = training.train(config)
    except (DataError, FileNotFoundError, PluginError, training.TrainingDiverged, training.RunDirectoryError,
            TransferError) as error:
        raise UsageError(str(error)) from None
    if run_dir is None:
        print("worker finished; the chief worker wrote the run directory")
        return 0
    test = results["test"]
    print(f"run directory: {run_dir}")
    print(f"final checkpoint: {run_dir / results['checkpoint']}")
    print(f"test ROC-AUC {test['roc_auc']:.4f}  PR-AUC {test['pr_auc']:.4f}  accuracy {test['accuracy']:.4f}  "
          f"F1 {test['f1']:.4f}  micro F1 {test['f1_micro']:.4f}  2019 accuracy {test['accuracy_2019']:.4f}  "
          f"2019 F1 {test['f1_2019']:.4f}")
    if results.get("warning"):
        print(f"WARNING: {results['warning']}")
    print(f"TensorBoard: tensorboard --logdir {run_dir / training.TENSORBOARD}")
    return 0


def report_cv(parent, summary):
    """Prints each fold's scores and the mean +/- std lines of a cross-validation."""
    from samplecnn import crossval

    for fold in summary["per_fold"]:
        test = fold["test"]
        print(f"fold {fold['fold']} ({fold['run']}): accuracy {test['accuracy']:.4f}  F1 {test['f1']:.4f}  "
              f"ROC-AUC {test['roc_auc']:.4f}  ({test['clips']} test clips)")
        if fold["warning"]:
            print(f"WARNING: fold {fold['fold']}: {fold['warning']}")
    for line in crossval.summary_lines(summary):
        print(line)
    if not summary["complete"]:
        missing = sorted(set(range(summary["folds"])) - set(summary["finished"]))
        print(f"folds {', '.join(map(str, missing))} of {summary['folds']} are not trained yet: run "
              f"`python train.py {summary['dataset']} --cv` with the same options, or --fold K, to add them")
    print(f"cross-validation: {parent / crossval.CV_RESULTS}")
    return 0


def resume_hint(interrupt):
    run_dir = getattr(interrupt, "run_dir", None)
    return f"continue with: python train.py --resume {run_dir}" if run_dir else "no run directory was made yet"


def run_cli():
    run(__name__)
