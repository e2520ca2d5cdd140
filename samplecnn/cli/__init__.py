"""The command line: one module per command, shared plumbing here.

Every command is a module of this package that defines its absl flags, a ``main(argv)``
and a docstring that starts with its usage. It runs as ``samplecnn COMMAND ...``,
``python -m samplecnn COMMAND ...``, ``samplecnn-COMMAND ...`` and, for the four commands
of the original toolkit, as ``python build_dataset.py|train.py|evaluate.py|predict.py``.
New commands are added with :func:`register_command`.
"""
import importlib
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS

USAGE_EXIT = 2
"""Exit code of every bad-input error (flag errors included): one convention."""

INTERRUPTED_EXIT = 130
"""Exit code after Ctrl-C (128 + SIGINT, as shells report it)."""

_COMMANDS = {}


def register_command(name, module):
    """Makes ``samplecnn NAME`` run the command module ``module`` (imported only when used)."""
    _COMMANDS[name] = module


for _name in ("build", "train", "evaluate", "predict", "report", "export", "stream", "serve", "probe"):
    register_command(_name, f"samplecnn.cli.{_name}")


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def flag(name):
    """Value of a flag defined with a hyphenated name, e.g. ``flag("data-dir")``."""
    return FLAGS[name].value


IMPORT_HELP = "Import this module first (repeatable), e.g. one that registers blocks with @register_block."


def import_modules():
    """Imports the modules named by ``--import``; one that cannot be imported is a usage error."""
    from samplecnn.models import PluginError, import_module

    for name in flag("import"):
        try:
            import_module(name)
        except PluginError as error:
            raise UsageError(f"--import {name}: {error}") from None


def command_help(module):
    """The usage of a command module: its docstring and its own flags (not absl's)."""
    own = FLAGS.module_help(module.__name__)
    return f"{(module.__doc__ or '').strip()}\n\nflags:\n{own.split(':', 1)[-1].rstrip()}\n"


def _parse_flags(argv):
    try:
        return FLAGS(argv)
    except flags.Error as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(USAGE_EXIT)


def run(module_name):
    """Runs the command module ``module_name`` with ``sys.argv``: ``-h`` prints its usage and
    flags; bad input is one line on stderr and exit code 2; Ctrl-C is one line (with the
    module's ``resume_hint(interrupt)``, if it has one) and exit code 130."""
    module = importlib.import_module(module_name)
    if any(arg in ("-h", "--help", "-help", "--helpshort", "--helpfull") for arg in sys.argv[1:]):
        print(command_help(module))
        sys.exit(0)

    def guarded(argv):
        try:
            return module.main(argv)
        except UsageError as error:
            print(f"error: {error}", file=sys.stderr)
            return USAGE_EXIT
        except KeyboardInterrupt as interrupt:
            hint = getattr(module, "resume_hint", None)
            end_progress_line = "\n" if sys.stderr.isatty() else ""
            print(f"{end_progress_line}interrupted{'; ' + hint(interrupt) if hint else ''}", file=sys.stderr)
            return INTERRUPTED_EXIT

    app.run(guarded, flags_parser=_parse_flags)


def main():
    """The ``samplecnn`` console script: ``samplecnn COMMAND [ARGS]``."""
    names = ", ".join(sorted(_COMMANDS))
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(f"usage: samplecnn COMMAND [ARGS]   (commands: {names}; samplecnn COMMAND -h for its flags)")
        sys.exit(0 if len(sys.argv) >= 2 else USAGE_EXIT)
    command = sys.argv[1]
    if command not in _COMMANDS:
        print(f"error: unknown command {command!r}; commands: {names}", file=sys.stderr)
        sys.exit(USAGE_EXIT)
    sys.argv = [f"samplecnn {command}", *sys.argv[2:]]
    run(_COMMANDS[command])


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
