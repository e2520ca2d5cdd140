"""Trains a SampleCNN on a built data set.

  python train.py DATASET [NAME] [--block se] [--multi] [--recipe samplecnn|2019] ...
  python train.py --resume log/20190424_213449-scd-se
  python train.py MY_SET --init-from log/20190424_213449-scd-se [--freeze-backbone | --backbone-lr-scale 0.1]
"""
from absl import flags

from samplecnn.cli import FLAGS, IMPORT_HELP, UsageError, flag, import_modules, run
from samplecnn.recipes import DEFAULT_RECIPE

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
flags.DEFINE_integer("patience", 2, "Stop training stage after #patiences: epochs in a row without a lower val loss "
                     "(0 stops at the first such epoch, like 1).", lower_bound=0)
flags.DEFINE_integer("num-readers", 8, "Number of TFRecord readers.", lower_bound=1)
flags.DEFINE_integer("max-epochs", 100, "Maximum epochs per stage.", lower_bound=1)
flags.DEFINE_integer("init-features", 128, "Channels of the first convolution.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                  "tf.distribute strategy: mirrored = all local GPUs, multi_worker = hosts in TF_CONFIG.")
flags.DEFINE_boolean("mixed-precision", False, "bfloat16 compute on CPU, float16 on GPU.")
flags.DEFINE_boolean("tensorboard-images", False, "Draw the validation confusion matrix (single-label) or per-class "
                     "AUC bars (multi-label) into TensorBoard after every epoch (one extra pass over val).")
flags.DEFINE_string("resume", None, "Continue the interrupted run in this run directory.")
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
           "strategy", "mixed-precision", "tensorboard-images", "recipe", "init-from", "freeze-backbone",
           "backbone-lr-scale", "class-weight")


def main(argv):
    import logging

    from samplecnn import training
    from samplecnn.models import PluginError, list_blocks
    from samplecnn.pipeline import DataError
    from samplecnn.recipes import list_recipes
    from samplecnn.transfer import TransferError

    logging.getLogger("samplecnn").setLevel(logging.INFO)
    import_modules()
    try:
        if flag("resume"):
            given = [*argv[1:], *(f"--{name}" for name in OPTIONS if FLAGS[name].present)]
            if given:
                raise UsageError("--resume takes its data set and options from the run's config.json; "
                                 f"drop {' '.join(given)}")
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


def resume_hint(interrupt):
    run_dir = getattr(interrupt, "run_dir", None)
    return f"continue with: python train.py --resume {run_dir}" if run_dir else "no run directory was made yet"


def run_cli():
    run(__name__)
