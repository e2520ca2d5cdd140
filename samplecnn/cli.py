"""Shared plumbing of the command-line entry points (absl flags, errors, progress)."""
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def flag(name):
    """Value of a flag defined with a hyphenated name, e.g. ``flag("data-dir")``."""
    return FLAGS[name].value


def run(main):
    """``absl.app.run(main)`` with ``-h`` as help and one clear line for expected errors."""
    sys.argv = ["--helpshort" if arg == "-h" else arg for arg in sys.argv]

    def guarded(argv):
        try:
            return main(argv)
        except UsageError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    app.run(guarded)


def format_seconds(seconds):
    if seconds != seconds:  # NaN: not known yet
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressLine:
    """Prints a status line in place on a terminal, or every few seconds to a log."""

    def __init__(self, stream=sys.stderr, interval=5.0):
        self.stream, self.interval, self.last = stream, interval, 0.0
        self.tty = stream.isatty()

    def __call__(self, text, final=False):
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + text.ljust(79) + ("\n" if final else ""))
        elif final or now - self.last >= self.interval:
            self.stream.write(text + "\n")
        else:
            return
        self.last = now
        self.stream.flush()
