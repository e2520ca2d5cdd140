"""Block plugins from the command line: an installed package's entry point, and --import MODULE."""
import json
import os
import subprocess
import sys

import pytest

import rawdata
import samplecnn
from samplecnn.models import PluginError, block_module, blocks, get_block, list_blocks

from scripts import ENV, SMALL_MODEL, command

GATED = '''"""A block with a layer of its own: Keras loads its models only where this module is imported."""
import keras


@keras.saving.register_keras_serializable(package="chirpblocks")
class Gate(keras.layers.Layer):
    def build(self, input_shape):
        self.gate = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="gate")

    def call(self, x):
        return x * keras.ops.sigmoid(self.gate)


def gated_block(x, filters, config, name):
    x = keras.layers.Conv1D(filters, 3, padding="same", name=f"{name}_conv")(x)
    x = Gate(name=f"{name}_gate")(x)
    return keras.layers.MaxPooling1D(3, name=f"{name}_pool")(x)
'''

TINY = '''import keras
from samplecnn.models import register_block


@register_block("tiny")
def tiny_block(x, filters, config, name):
    x = keras.layers.Conv1D(filters, 3, padding="same", activation="relu", name=f"{name}_conv")(x)
    return keras.layers.MaxPooling1D(3, name=f"{name}_pool")(x)
'''


def install_package(site):
    """chirpblocks, installed as pip would: the package and its dist-info with the entry point."""
    (site / "chirpblocks").mkdir(parents=True)
    (site / "chirpblocks" / "__init__.py").write_text(GATED)
    info = site / "chirpblocks-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: chirpblocks\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[samplecnn.blocks]\nchirp_gate = chirpblocks:gated_block\n")


def test_entry_point_blocks_load_when_first_asked_for(tmp_path, monkeypatch):
    install_package(tmp_path)
    broken = tmp_path / "brokenblocks-0.1.dist-info"
    broken.mkdir()
    (broken / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenblocks\nVersion: 0.1\n")
    (broken / "entry_points.txt").write_text("[samplecnn.blocks]\nbroken = nosuchpackage.blocks:block\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for registry in ("_BLOCKS", "_MODULES"):  # this test's blocks stay out of the other tests
        monkeypatch.setattr(blocks, registry, dict(getattr(blocks, registry)))
    assert {"chirp_gate", "broken"} <= set(list_blocks()) and "chirpblocks" not in sys.modules
    model = samplecnn.build_model("scd", block="chirp_gate", init_features=4)
    assert "chirpblocks" in sys.modules and model.get_layer("block1_gate").__class__.__name__ == "Gate"
    assert block_module("chirp_gate") == "chirpblocks" and block_module("se") is None
    with pytest.raises(PluginError, match="'nosuchpackage.blocks:block' .entry point of package brokenblocks"):
        get_block("broken")


def run(script, *args, path=None, cwd=None):
    env = {**ENV, "PYTHONPATH": os.pathsep.join([ENV["PYTHONPATH"], *([str(path)] if path else [])])}
    return subprocess.run(command(script, *args), cwd=cwd, env=env, capture_output=True, text=True)


def train(data, logs, *args, path=None):
    result = run("train.py", "chirps", "--data-dir", data, "--log-dir", logs, "--num-stages", "1", "--max-epochs", "1",
                 *SMALL_MODEL, *args, path=path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = logs.iterdir()
    return run_dir


def test_a_block_of_an_installed_package_trains_and_loads_where_the_package_is(chirps, tmp_path):
    site = tmp_path / "site"
    install_package(site)
    run_dir = train(chirps, tmp_path / "log", "--block", "chirp_gate", path=site)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["block"] == "chirp_gate" and config["block_module"] == "chirpblocks"
    wav = rawdata.write_wav(tmp_path / "a.wav", rawdata.tone(0.3, 8000, rawdata.class_frequency(0)), 8000)
    tagged = run("predict.py", run_dir, wav, path=site)
    assert tagged.returncode == 0, tagged.stderr[-3000:]
    assert "class0" in tagged.stdout and "1 file(s) tagged" in tagged.stdout
    for script, args in (("predict.py", [run_dir, wav]), ("evaluate.py", [run_dir])):
        result = run(script, *args)  # the package is not on the path
        assert result.returncode == 2, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        assert "cannot import module 'chirpblocks' (it provides block 'chirp_gate' of" in result.stderr.splitlines()[-1]


def test_import_flag_registers_a_block_for_train_and_evaluate(chirps, tmp_path):
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "tinyblocks.py").write_text(TINY)
    missing = run("train.py", "chirps", "--data-dir", chirps, "--block", "tiny", path=modules)
    assert missing.returncode == 2 and "--import the module" in missing.stderr
    run_dir = train(chirps, tmp_path / "log", "--import", "tinyblocks", "--block", "tiny", path=modules)
    assert json.loads((run_dir / "config.json").read_text())["block_module"] == "tinyblocks"
    resumed = run("train.py", "--resume", run_dir)  # the module is not on the path
    assert resumed.returncode == 2 and "cannot import module 'tinyblocks'" in resumed.stderr.splitlines()[-1]
    evaluated = run("evaluate.py", run_dir, "--import", "tinyblocks", path=modules)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "class1" in evaluated.stdout
    unknown = run("predict.py", run_dir, tmp_path, "--import", "nosuchmodule", path=modules)
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines()[-1] == (
        "error: --import nosuchmodule: cannot import module 'nosuchmodule': No module named 'nosuchmodule'. "
        "Install its package or add its folder to PYTHONPATH")
