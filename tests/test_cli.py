"""The command line: one `samplecnn` script with subcommands, -h with flags, exit code 2 for bad input."""
import pytest

from scripts import run_samplecnn as samplecnn, run_script


@pytest.mark.parametrize("command, script, own_flag", [("build", "build_dataset.py", "--sample-dtype"),
                                                       ("train", "train.py", "--lr-decay"),
                                                       ("evaluate", "evaluate.py", "--dataset"),
                                                       ("predict", "predict.py", "--top-k")])
def test_help_lists_the_commands_own_flags(command, script, own_flag):
    for result in (samplecnn(command, "-h"), run_script(script, "-h")):
        assert result.returncode == 0, result.stderr
        assert own_flag in result.stdout and "usage" not in result.stderr
        assert "--flagfile" not in result.stdout  # absl's own flags are not the command's


def test_unknown_command_and_bad_flags_exit_2_with_one_line():
    result = samplecnn("nosuch")
    assert result.returncode == 2 and "unknown command 'nosuch'" in result.stderr and "train" in result.stderr
    for result in (samplecnn("train", "scd", "--batch-size", "0"), run_script("train.py", "scd", "--nosuchflag")):
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().startswith("error:") and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("script", ["train.py", "build_dataset.py"])
def test_unknown_recipe_exits_2_naming_the_registered_ones(script):
    result = run_script(script, "scd", "--recipe", "nope")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        "error: --recipe nope is not registered; choose from 2019, samplecnn")
