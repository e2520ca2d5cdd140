"""Exports a trained run as self-contained models with the preprocessing inside, checked against Keras.

  samplecnn export RUN_DIR_OR_CHECKPOINT [--format saved_model,tflite,tflite-int8,onnx] [--out RUN/export]
                   [--calibration 200]

Each model takes float32 mono PCM in [-1, 1] at the run's sample rate and returns class
probabilities and the embedding. Beside them:
labels.txt and export.json (classes, rates, source checkpoint's sha256, and per format
its size and its agreement with Keras on the run's test clips).
"""
from absl import flags

from samplecnn.cli import UsageError, flag, run

flags.DEFINE_list("format", ["saved_model", "tflite", "tflite-int8", "onnx"], "Formats to write.")
flags.DEFINE_string("out", None, "Output folder (default: the run directory's export/).")
flags.DEFINE_integer("calibration", 200, "Training segments that calibrate the int8 quantization.", lower_bound=1)


def main(argv):
    from samplecnn.deploy import export

    if len(argv) != 2:
        raise UsageError(f"usage: samplecnn export RUN_DIR_OR_CHECKPOINT [options]; got {argv[1:]}")
    unknown = [f for f in flag("format") if f not in export.list_formats()]
    if unknown:
        raise UsageError(f"--format {','.join(unknown)}: unknown; choose from {','.join(export.list_formats())}")
    try:
        report = export.export_run(argv[1], flag("format"), flag("out"), flag("calibration"))
    except (OSError, ValueError, export.ExportFailed) as error:
        raise UsageError(str(error)) from None
    print(f"exported {', '.join(report['formats'])} (checkpoint sha256 {report['checkpoint_sha256'][:12]}...)")
    return 0


def run_cli():
    run(__name__)
