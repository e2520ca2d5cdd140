"""Shared by the serve tests: data sets for training jobs."""
import json
import shutil

import pytest


@pytest.fixture(scope="session")
def data_dir(tones, tmp_path_factory):
    """The tones data set, and 'broken': a copy whose first train shard is missing."""
    data = tmp_path_factory.mktemp("serve-data")
    shutil.copytree(tones / "tones", data / "tones")
    shutil.copytree(tones / "tones", data / "broken")
    manifest = json.loads((data / "broken" / "tfrecord" / "manifest.json").read_text())
    (data / "broken" / "tfrecord" / manifest["splits"]["train"]["shards"][0]).unlink()
    return data
