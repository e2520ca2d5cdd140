"""Input pipelines read what the builder wrote, standardized with the manifest's statistics."""
import numpy as np
import pytest

import rawdata
from samplecnn import build, pipeline, records
from test_build import read_examples


@pytest.fixture(scope="module")
def scd(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    rawdata.make_scd(data / "scd" / "raw", per_word=5)
    build.build_dataset("scd", data_dir=data, workers=1)
    return pipeline.load_manifest(pipeline.dataset_dir(data, "scd"))


def test_val_batches_are_standardized_segments_in_order(scd):
    batches = list(pipeline.segment_dataset(scd, "val", batch_size=2))
    assert [b[0].shape[0] for b in batches] == [2, 1]
    audio = np.concatenate([b[0].numpy() for b in batches])[..., 0]
    stored = [records.from_pcm(r["audio"], "int16") for r in read_examples(
        pipeline.shard_paths(scd, "val")[0])]
    np.testing.assert_allclose(audio, (np.stack(stored) - scd["mean"]) / scd["std"], rtol=1e-5, atol=1e-5)
    labels = np.concatenate([b[1].numpy() for b in batches])
    assert labels.shape == (3, 35) and np.all(labels.sum(axis=1) == 1)


def test_train_data_repeats_in_full_batches(scd):
    data = pipeline.segment_dataset(scd, "train", batch_size=4, training=True, seed=1, drop_remainder=True)
    shapes = [tuple(a.shape) for a, _ in data.take(5)]  # 9 train segments: must repeat to give 20
    assert shapes == [(4, 22050, 1)] * 5


def test_test_data_has_one_element_per_clip(scd):
    clips = list(pipeline.clip_dataset(scd))
    assert len(clips) == 3
    audio, label, clip_id = clips[0]
    assert audio.shape == (1, 22050, 1) and label.shape == (35,) and clip_id.numpy().endswith(b".wav")


def test_missing_manifest_says_how_to_build(tmp_path):
    with pytest.raises(pipeline.DataError, match="build_dataset.py scd"):
        pipeline.load_manifest(pipeline.dataset_dir(tmp_path, "scd"))


def graph_nodes(dataset):
    """The nodes of a tf.data pipeline's serialized graph, by name."""
    import tensorflow as tf

    graph = tf.compat.v1.GraphDef.FromString(dataset._as_serialized_graph().numpy())
    return {node.name: node for node in graph.node}


def constant(nodes, input_name):
    import tensorflow as tf

    return tf.make_ndarray(nodes[input_name.split(":")[0]].attr["value"].tensor)


@pytest.mark.parametrize("recipe, interleaved, buffers", [("2019", False, [10000]), ("samplecnn", True, [1, 2048])])
def test_recipe_chooses_shard_order_and_shuffle_buffer(scd, recipe, interleaved, buffers):
    data = pipeline.segment_dataset(scd, "train", batch_size=4, training=True, seed=1, drop_remainder=True,
                                    recipe=recipe)
    nodes = graph_nodes(data)
    shuffles = [node for node in nodes.values() if node.op.startswith("ShuffleDataset")]
    assert sorted(int(constant(nodes, node.input[1])) for node in shuffles) == buffers  # 1 = the shard list
    assert any("Interleave" in node.op for node in nodes.values()) == interleaved
    if not interleaved:  # the 2019 code read the shards one after another in a fixed order
        (files,) = [node for node in nodes.values() if node.op == "TensorSliceDataset"]
        assert [p.decode() for p in constant(nodes, files.input[0])] == pipeline.shard_paths(scd, "train")
        assert not any(node.op.startswith("ShuffleDataset") and node.input[0] == files.name for node in shuffles)
    assert [tuple(a.shape) for a, _ in data.take(3)] == [(4, 22050, 1)] * 3


def test_a_missing_or_cut_shard_stops_training_before_the_first_step(tmp_path):
    import shlex

    from scripts import run_script

    data = tmp_path / "data"
    rawdata.make_scd(data / "scd" / "raw", per_word=3)
    manifest = build.build_dataset("scd", data_dir=data, workers=1)
    shard = data / "scd" / "tfrecord" / manifest["splits"]["train"]["shards"][0]
    size = shard.stat().st_size
    shard.write_bytes(shard.read_bytes()[:100])
    repair = f"python build_dataset.py scd --data-dir {data}"
    with pytest.raises(pipeline.DataError, match=f"has 100 bytes instead of {size}; repair the data set with"):
        pipeline.load_manifest(pipeline.dataset_dir(data, "scd"))
    result = run_script("train.py", "scd", "--data-dir", data, "--log-dir", tmp_path / "logs", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == \
        f"error: shard {shard} has 100 bytes instead of {size}; repair the data set with `{repair}`"
    assert not (tmp_path / "logs").exists()
    shard.unlink()
    with pytest.raises(pipeline.DataError, match=f"shard {shard} is missing"):
        pipeline.load_manifest(pipeline.dataset_dir(data, "scd"))
    rebuilt = run_script("build_dataset.py", *shlex.split(repair)[2:], cwd=tmp_path)
    assert rebuilt.returncode == 0 and shard.stat().st_size == size
    assert pipeline.load_manifest(pipeline.dataset_dir(data, "scd"))["splits"]["train"]["clips"] == 3


def test_rebuild_command_of_a_custom_set_repeats_its_options(tmp_path):
    rawdata.make_tones(tmp_path / "raw", classes=2, per_class=10)
    manifest = build.build_dataset("folder", data_dir=tmp_path / "d", raw_dir=tmp_path / "raw", name="t", workers=1,
                                   sample_rate=16000, clip_seconds=2.0, seed=3, sample_dtype="float32",
                                   min_seconds=0.5)
    manifest["dir"] = str(tmp_path / "d" / "t" / "tfrecord")
    command = build.rebuild_command(manifest)
    assert command.startswith(f"python build_dataset.py folder --raw-dir {tmp_path / 'raw'} --name t ")
    for option in ("--sample-rate 16000", "--clip-seconds 2.0", f"--data-dir {tmp_path / 'd'}",
                   "--sample-dtype float32", "--seed 3", "--min-seconds 0.5"):
        assert option in command
    from scripts import run_script
    import shlex

    again = run_script("build_dataset.py", *shlex.split(command)[2:], cwd=tmp_path)
    assert again.returncode == 0, again.stderr  # the same plan: resumed, not refused
