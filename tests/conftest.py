"""Shared test set-up: quiet TensorFlow, deterministic seeds."""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)


@pytest.fixture(scope="session")
def tones(tmp_path_factory):
    """A built folder data set of 3 tone classes (100 clips each, 1 s, 60/20/20 split)."""
    import rawdata
    from samplecnn import build

    data = tmp_path_factory.mktemp("tones")
    rawdata.make_tones(data / "raw")
    build.build_dataset("folder", data_dir=data, raw_dir=data / "raw", name="tones", workers=1, val_fraction=0.2,
                        test_fraction=0.2)
    return data


@pytest.fixture(scope="session")
def trained(tones, tmp_path_factory):
    """(run directory, completed process) of a short train.py run on the tones."""
    from scripts import SMALL_MODEL, run_script

    logs = tmp_path_factory.mktemp("log")
    result = run_script("train.py", "tones", "--data-dir", tones, "--log-dir", logs, "--num-stages", "2",
                        "--max-epochs", "6", "--patience", "3", "--lr-decay", "0.5", "--block", "rese2",
                        *SMALL_MODEL, cwd=tones)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = logs.iterdir()
    return run_dir, result
