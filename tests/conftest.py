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


@pytest.fixture(scope="session")
def chirps(tmp_path_factory):
    """A tiny folder data set (2 classes, 0.1 s clips of 729 samples) in several shards per split."""
    import dataclasses

    import rawdata
    from samplecnn import build, pipeline
    from samplecnn.datasets import custom

    data = tmp_path_factory.mktemp("chirps")
    for c in range(2):
        for i in range(24):
            audio = rawdata.tone(0.1, 8000, rawdata.class_frequency(6 * c), seed=i)
            rawdata.write_wav(data / "raw" / f"class{c}" / f"{i}.wav", audio, 8000)
    index = custom.index_folder(data / "raw", "chirps", sample_rate=8000, clip_seconds=0.1, segment_samples=729,
                                val_fraction=0.25, test_fraction=0.25)
    index = dataclasses.replace(index, spec=dataclasses.replace(index.spec, clips_per_shard=8))
    build.build_from_index(index, pipeline.dataset_dir(data, "chirps"), "chirps", workers=1)
    return data


@pytest.fixture(scope="session")
def pairs(tmp_path_factory):
    """A folder data set with other classes than the tones (2 pitches, 24 clips each), in the tones' format."""
    import shutil

    import rawdata
    from samplecnn import build

    data = tmp_path_factory.mktemp("pairs")
    rawdata.make_tones(data / "raw" / "all", classes=2, per_class=24)
    for c, name in enumerate(("low", "high")):
        shutil.move(data / "raw" / "all" / f"class{c}", data / "raw" / name)
    build.build_dataset("folder", data_dir=data, raw_dir=data / "raw", name="pairs", workers=1, val_fraction=0.25,
                        test_fraction=0.25)
    return data


@pytest.fixture(scope="session")
def tagger(trained):
    """The Tagger of the ``trained`` run, loaded once for every test module."""
    from samplecnn.inference import Tagger

    return Tagger.from_run(trained[0])
