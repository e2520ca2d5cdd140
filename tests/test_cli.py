"""The command line: one `samplecnn` script with subcommands, -h with flags, exit code 2 for bad input."""
import pathlib
import re
import subprocess
import sys

import pytest

from scripts import ENV, REPO, run_samplecnn as samplecnn, run_script


@pytest.mark.parametrize("command, script, own_flag", [("build", "build_dataset.py", "--sample-dtype"),
                                                       ("train", "train.py", "--lr-decay"),
                                                       ("evaluate", "evaluate.py", "--dataset"),
                                                       ("predict", "predict.py", "--top-k")])
def test_help_lists_the_commands_own_flags(command, script, own_flag):
    console_script = pathlib.Path(sys.executable).parent / f"samplecnn-{command}"  # installed by pip (setup.py)
    installed = subprocess.run([console_script, "-h"], env=ENV, capture_output=True, text=True)
    for result in (samplecnn(command, "-h"), run_script(script, "-h"), installed):
        assert result.returncode == 0, result.stderr
        assert own_flag in result.stdout and "usage" not in result.stderr
        assert "--flagfile" not in result.stdout  # absl's own flags are not the command's


@pytest.mark.parametrize("command, own_flag", [("report", "--analysis"), ("export", "--calibration"),
                                               ("stream", "--hop"), ("probe", "--classifier")])
def test_help_of_the_commands_beyond_the_original_scripts(command, own_flag):
    result = samplecnn(command, "-h")
    assert result.returncode == 0 and own_flag in result.stdout and "--flagfile" not in result.stdout


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


def test_layout_errors_point_to_a_readme_section_that_exists(tmp_path):
    from samplecnn import build
    from samplecnn.datasets import LayoutError

    with pytest.raises(LayoutError) as error:
        build.build_dataset("scd", data_dir=tmp_path)
    (section,) = re.findall(r"README's '([^']+)' section", str(error.value))
    assert f"## {section}" in (REPO / "README.md").read_text().splitlines()


def test_the_command_suggested_for_an_unbuilt_custom_set_builds_it(tmp_path):
    import rawdata

    result = run_script("train.py", "birds", "--data-dir", tmp_path / "data", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    suggested = re.search(r"`python (build_dataset\.py [^`]*)`", result.stderr).group(1).split()
    assert suggested[:2] == ["build_dataset.py", "folder"] and "--name" in suggested and "birds" in suggested
    rawdata.make_tones(tmp_path / "sounds", classes=2, per_class=10)
    suggested[suggested.index("YOUR_FOLDER")] = str(tmp_path / "sounds")
    built = run_script(*suggested, "--workers", "1", cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-2000:]
    assert (tmp_path / "data" / "birds" / "tfrecord" / "manifest.json").is_file()


def test_make_installs_python3_venv_where_python_cannot_make_a_virtual_environment(tmp_path):
    no_venv = tmp_path / "python3"
    no_venv.write_text("#!/bin/sh\nexit 1\n")  # like Debian's python3 without python3-venv: import ensurepip fails
    no_venv.chmod(0o755)
    outputs = [subprocess.run(["make", "-s", "system-deps", f"PYTHON={python}", "SUDO=echo"], cwd=REPO,
                              capture_output=True, text=True) for python in (no_venv, sys.executable)]
    assert "apt-get install -y -qq" in outputs[0].stdout and "python3-venv" in outputs[0].stdout
    assert "python3-venv" not in outputs[1].stdout
