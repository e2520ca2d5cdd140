"""Fits a linear probe (or a small MLP) on the embeddings of a trained run for another data set.

  samplecnn probe RUN --dataset NAME [--data-dir ./data] [--layer embedding] [--classifier logreg|mlp]

The probe is written as a run directory (the run's layers up to --layer, then the fitted
classifier as Keras layers) with probe.json and results.json: predict.py and evaluate.py take it.
"""
from absl import flags

from samplecnn.cli import IMPORT_HELP, UsageError, flag, import_modules, run

flags.DEFINE_string("dataset", None, "Built data set to fit and score the probe on (train, val and test splits).")
flags.DEFINE_string("data-dir", "./data", "Data root holding DATA_DIR/<dataset>/tfrecord.")
flags.DEFINE_string("log-dir", "./log", "Where to write the probe's run directory.")
flags.DEFINE_string("layer", "embedding", "Layer whose output (averaged over time for convolutional layers) is the "
                    "embedding.")
flags.DEFINE_string("classifier", "logreg", "logreg (StandardScaler + LogisticRegression, one-vs-rest when "
                    "multi-label; C chosen on val) or mlp (one hidden layer of 256, early stopping on a tenth of the "
                    "train segments; alpha chosen on val).")
flags.DEFINE_string("cache-dir", None, "Where embeddings are cached (default: DATA_DIR/<dataset>/embeddings).")
flags.DEFINE_multi_string("import", [], IMPORT_HELP)


def main(argv):
    import logging

    from samplecnn import probe
    from samplecnn.models import PluginError
    from samplecnn.pipeline import DataError
    from samplecnn.training import RunDirectoryError

    if len(argv) != 2 or not flag("dataset"):
        raise UsageError(f"usage: samplecnn probe RUN --dataset NAME [options]; got {argv[1:]}")
    logging.getLogger("samplecnn").setLevel(logging.INFO)
    import_modules()
    try:
        run_dir, results = probe.probe(argv[1], flag("dataset"), data_dir=flag("data-dir"), log_dir=flag("log-dir"),
                                       layer=flag("layer"), classifier=flag("classifier"), cache_dir=flag("cache-dir"))
    except (DataError, FileNotFoundError, ValueError, PluginError, RunDirectoryError) as error:
        raise UsageError(str(error)) from None
    test = results["test"]
    print(f"probe run directory: {run_dir}")
    print(f"test ROC-AUC {test['roc_auc']:.4f}  PR-AUC {test['pr_auc']:.4f}  accuracy {test['accuracy']:.4f}  "
          f"F1 {test['f1']:.4f}  ({test['clips']} clips)")
    if results.get("warning"):
        print(f"WARNING: {results['warning']}")
    return 0


def run_cli():
    run(__name__)
