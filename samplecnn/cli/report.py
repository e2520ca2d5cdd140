"""Draws a run's report: training curves, per-class scores, confusions, the paper's analyses.

  samplecnn report RUN_DIR [--out RUN_DIR/report] [--analysis]

Writes one self-contained report.html (figures embedded, nothing loaded from the
network), each figure as PNG and figures.json with every plotted number.
"""
from absl import flags

from samplecnn.cli import UsageError, flag, run

flags.DEFINE_string("out", None, "Output folder (default: RUN_DIR/report).")
flags.DEFINE_boolean("analysis", False, "Add the paper's analyses: squeeze-excitation per class and block, "
                     "learned filters of the front end, maximally activating input spectra per block.")


def main(argv):
    from samplecnn.analysis import report

    if len(argv) != 2:
        raise UsageError(f"usage: samplecnn report RUN_DIR [--out DIR] [--analysis]; got {argv[1:]}")
    try:
        made = report.make_report(argv[1], flag("out"), analysis=flag("analysis"))
    except (FileNotFoundError, NotADirectoryError, PermissionError) as error:
        raise UsageError(str(error)) from None
    print(f"report: {made.html} ({len(made.figures)} figures, {made.seconds:.1f} s)")
    return 0


def run_cli():
    run(__name__)
