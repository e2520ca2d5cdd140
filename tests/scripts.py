"""Running the entry-point scripts as a user would, in a subprocess."""
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", "CUDA_VISIBLE_DEVICES": ""}
TINY_NET = ["--init-features", "8", "--batch-size", "8", "--num-readers", "2"]
SMALL_NET = [*TINY_NET, "--nomixed-precision"]
"""A tiny model in float32: the same numerics on every machine (the precision probe has its own tests)."""
EPOCH_SCHEDULE = ["--validation-steps", "0", "--min-steps", "0"]
"""Validation every epoch and no minimum of steps, the schedule a large set gets anyway: runs
on the tests' tiny sets stay short."""
SMALL_MODEL = [*SMALL_NET, *EPOCH_SCHEDULE]


def command(script, *args):
    return [sys.executable, str(REPO / script), *map(str, args)]


def run_script(script, *args, cwd=None):
    return subprocess.run(command(script, *args), cwd=cwd, env=ENV, capture_output=True, text=True)


def run_samplecnn(*args, cwd=REPO):
    """``python -m samplecnn ARGS``: the ``samplecnn`` console script."""
    return subprocess.run([sys.executable, "-m", "samplecnn", *map(str, args)], cwd=cwd, env=ENV, capture_output=True,
                          text=True)
