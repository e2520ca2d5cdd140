"""Evaluates a trained SampleCNN on a data set's test split at clip level.

  python evaluate.py log/<run>/final-auc_...h5 [--dataset NAME] [--data-dir ./data] [--output results.json]
"""
import json
import sys

from absl import flags

from samplecnn.cli import IMPORT_HELP, UsageError, flag, import_modules, run

flags.DEFINE_string("dataset", None, "Data set to evaluate on (default: the one in the run's config.json).")
flags.DEFINE_string("data-dir", None, "Data root (default: where the model's training data was).")
flags.DEFINE_string("output", None, "Also write the results to this JSON file.")
flags.DEFINE_multi_string("import", [], IMPORT_HELP)


def main(argv):
    from samplecnn import inference, metrics, pipeline, training, writers
    from samplecnn.models import PluginError

    if len(argv) != 2:
        raise UsageError(f"usage: evaluate.py MODEL_PATH [options]; got {argv[1:]}")
    import_modules()
    try:
        if flag("output"):
            writers.check_writable(flag("output"), "--output")
        model, run_config = inference.load_trained(argv[1])
        if flag("dataset") or flag("data-dir"):
            name = flag("dataset") or run_config["train"]["dataset"]
            manifest = pipeline.load_manifest(
                pipeline.dataset_dir(flag("data-dir") or run_config["train"]["data_dir"], name))
        else:
            manifest = pipeline.run_manifest(run_config)
        warnings = training.check_compatible(run_config, manifest)
    except (FileNotFoundError, ValueError, PluginError, pipeline.DataError) as error:
        raise UsageError(str(error)) from None
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    results = training.evaluate(model, training.with_run_statistics(manifest, run_config))
    print(metrics.format_report(results))
    if flag("output"):
        with open(flag("output"), "w") as f:
            json.dump(results, f, indent=1)
    return 0


def run_cli():
    run(__name__)
