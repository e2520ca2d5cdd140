"""Dataset builder on small raw data sets in the exact layouts of the real downloads."""
import json
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf

import rawdata
from scripts import run_script
from samplecnn import audio, build, records
from samplecnn.datasets import LayoutError, dcs, get_spec, mtt



def read_examples(path):
    """Every record of a TFRecord file, parsed by TensorFlow's own protobuf classes."""
    out = []
    for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        example = tf.train.Example.FromString(raw)
        out.append({k: v.bytes_list.value[0] for k, v in example.features.feature.items()})
    return out


def read_sequence_examples(path):
    out = []
    for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        seq = tf.train.SequenceExample.FromString(raw)
        ctx = {k: v.bytes_list.value[0] for k, v in seq.context.feature.items()}
        ctx["audio"] = [f.bytes_list.value[0] for f in seq.feature_lists.feature_list["audio"].feature]
        out.append(ctx)
    return out


def split_records(out_dir, manifest, split):
    read = read_sequence_examples if split == "test" else read_examples
    return [r for shard in manifest["splits"][split]["shards"] for r in read(out_dir / shard)]


def label_names(label_bytes, classes):
    return {classes[i] for i in np.flatnonzero(np.frombuffer(label_bytes, np.uint8))}


@pytest.fixture(scope="module")
def scd_build(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    rawdata.make_scd(data / "scd" / "raw")
    manifest = build.build_dataset("scd", data_dir=data, workers=1)
    return data, manifest


def test_scd_splits_labels_and_manifest(scd_build):
    data, manifest = scd_build
    out = data / "scd" / "tfrecord"
    assert {s: manifest["splits"][s]["clips"] for s in ("train", "val", "test")} == {"train": 6, "val": 3, "test": 3}
    assert manifest["splits"]["train"]["shards"] == ["train-0000-of-0001.tfrecord"]
    assert manifest["spec"]["segment_samples"] == 22050 and manifest["spec"]["task"] == "multiclass"
    assert manifest["classes"] == list(get_spec("scd").classes) and manifest["failures"] == []
    assert set(manifest) >= {"dataset", "spec", "classes", "splits", "mean", "std", "failures", "options",
                             "version", "created", "recipe", "padding"}
    assert (manifest["recipe"], manifest["padding"]) == ("samplecnn", "loop")
    train = split_records(out, manifest, "train")
    assert len(train) == 6
    for r in train:
        onehot = np.frombuffer(r["label"], np.uint8)
        assert onehot.sum() == 1 and label_names(r["label"], manifest["classes"]) == {r["clip_id"].decode().split("/")[0]}
        assert len(r["audio"]) == 2 * 22050
    test_ids = sorted(r["clip_id"].decode() for r in split_records(out, manifest, "test"))
    listed = sorted((data / "scd" / "raw" / "testing_list.txt").read_text().split())
    assert test_ids == listed
    assert not any("_background_noise_" in r["clip_id"].decode() for r in train)


def test_scd_samples_match_the_source_and_short_clips_loop(scd_build):
    data, manifest = scd_build
    raw = data / "scd" / "raw"
    by_id = {r["clip_id"].decode(): r for split in ("train", "val")
             for r in split_records(data / "scd" / "tfrecord", manifest, split)}
    for clip_id, record in by_id.items():
        stored = records.from_pcm(record["audio"], "int16")
        expected = audio.loop_pad(audio.decode(raw / clip_id, 22050), 22050)
        np.testing.assert_allclose(stored, expected, atol=1.0 / 32768 + 1e-7)
    short = by_id["yes/00000003_nohash_0.wav"]  # 0.4 s at 16 kHz: 8820 samples at 22050 Hz
    stored = records.from_pcm(short["audio"], "int16")
    np.testing.assert_array_equal(stored[8820:17640], stored[:8820])  # looped, not stretched
    np.testing.assert_array_equal(stored[17640:], stored[:22050 - 17640])


def test_2019_recipe_build_stretches_short_clips_with_np_repeat(tmp_path, scd_build):
    data, _ = scd_build
    shutil.copytree(data / "scd" / "raw", tmp_path / "scd" / "raw")
    short = tmp_path / "scd" / "raw" / "yes" / "00000003_nohash_0.wav"
    rawdata.write_wav(short, rawdata.tone(0.5, 22050, 440.0), 22050)  # 11025 samples
    result = run_script("build_dataset.py", "scd", "--data-dir", tmp_path, "--recipe", "2019", "--workers", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "scd" / "tfrecord" / "manifest.json").read_text())
    assert (manifest["recipe"], manifest["padding"]) == ("2019", "repeat")
    (record,) = [r for r in split_records(tmp_path / "scd" / "tfrecord", manifest, "train")
                 if r["clip_id"] == b"yes/00000003_nohash_0.wav"]
    source = audio.decode(short, 22050)
    stored = records.from_pcm(record["audio"], "int16")
    np.testing.assert_allclose(stored, np.repeat(source, 3)[:22050], atol=1.0 / 32768 + 1e-7)
    assert np.abs(stored - audio.loop_pad(source, 22050)).max() > 0.1
    again = run_script("build_dataset.py", "scd", "--data-dir", tmp_path, "--workers", "1")  # the other padding
    assert again.returncode == 2 and "other options" in again.stderr and "--overwrite" in again.stderr


def test_train_mean_and_std_are_computed_from_the_stored_training_audio(scd_build):
    data, manifest = scd_build
    train = split_records(data / "scd" / "tfrecord", manifest, "train")
    samples = np.concatenate([records.from_pcm(r["audio"], "int16").astype(np.float64) for r in train])
    assert manifest["mean"] == pytest.approx(samples.mean(), abs=1e-9)
    assert manifest["std"] == pytest.approx(samples.std(), rel=1e-9)


def test_resume_after_interruption_gives_identical_shards(tmp_path, scd_build):
    data, manifest = scd_build
    reference = data / "scd" / "tfrecord"
    shutil.copytree(data / "scd" / "raw", tmp_path / "scd" / "raw")
    out = tmp_path / "scd" / "tfrecord"
    build.build_dataset("scd", data_dir=tmp_path, workers=2)
    # Simulate a kill: one shard never finished (only its temporary file exists), another
    # was renamed but its sidecar was never written.
    (out / "val-0000-of-0001.tfrecord").rename(out / "val-0000-of-0001.tfrecord.tmp-999")
    (out / build.STATE_DIR / "val-0000-of-0001.tfrecord.json").unlink()
    (out / build.STATE_DIR / "test-0000-of-0001.tfrecord.json").unlink()
    (out / build.MANIFEST).unlink()
    done = []
    resumed = build.build_dataset("scd", data_dir=tmp_path, workers=1, progress=done.append)
    assert done[-1].shards_done == 3 and done[-1].clips_total == 6  # only two shards were redone
    assert not list(out.glob("*.tmp-*"))
    for shard in ("train-0000-of-0001", "val-0000-of-0001", "test-0000-of-0001"):
        assert (out / f"{shard}.tfrecord").read_bytes() == (reference / f"{shard}.tfrecord").read_bytes()
    assert resumed["splits"] == manifest["splits"] and resumed["mean"] == manifest["mean"]


def test_a_build_with_other_options_is_not_mixed_in(tmp_path):
    rawdata.make_scd(tmp_path / "scd" / "raw", per_word=3)
    build.build_dataset("scd", data_dir=tmp_path, workers=1)
    with pytest.raises(ValueError, match="--overwrite"):
        build.build_dataset("scd", data_dir=tmp_path, workers=1, sample_dtype="float32")
    manifest = build.build_dataset("scd", data_dir=tmp_path, workers=1, sample_dtype="float32", overwrite=True)
    record = split_records(tmp_path / "scd" / "tfrecord", manifest, "train")[0]
    assert manifest["sample_dtype"] == "float32" and len(record["audio"]) == 4 * 22050


def test_broken_layouts_stop_with_a_message_naming_the_expected_path(tmp_path):
    with pytest.raises(LayoutError, match=r"annotations_final\.csv.*README"):
        build.build_dataset("mtt", data_dir=tmp_path)
    (tmp_path / "scd" / "raw" / "yes").mkdir(parents=True)
    with pytest.raises(LayoutError, match=r"validation_list\.txt"):
        build.build_dataset("scd", data_dir=tmp_path)
    raw = tmp_path / "dcs" / "raw"
    raw.mkdir(parents=True)
    (raw / "groundtruth_weak_label_training_set.csv").write_text("a.wav,0,10,Car\n")
    with pytest.raises(LayoutError, match=r"training_set\.csv, line 1: expected 4 tab-separated fields"):
        build.build_dataset("dcs", data_dir=tmp_path)


@pytest.fixture(scope="module")
def mtt_build(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    clips = rawdata.make_mtt(data / "mtt" / "raw", mtt.CLASSES)
    manifest = build.build_dataset("mtt", data_dir=data, workers=2)
    return data, clips, manifest


def test_mtt_splits_multi_hot_labels_and_the_empty_mp3(mtt_build):
    data, clips, manifest = mtt_build
    out = data / "mtt" / "tfrecord"
    assert {s: manifest["splits"][s]["clips"] for s in ("train", "val", "test")} == {"train": 3, "val": 2, "test": 2}
    assert manifest["splits"]["train"]["segments"] == 30 and manifest["classes"] == list(mtt.CLASSES)
    assert manifest["notes"] == []
    (failure,) = manifest["failures"]
    assert failure["path"].endswith(".mp3") and "/b/" in failure["path"] and "empty" in failure["error"]
    for split in ("train", "val"):
        for r in split_records(out, manifest, split):
            assert label_names(r["label"], manifest["classes"]) == set(clips[r["clip_id"].decode()][1])
            assert len(r["audio"]) == 2 * 59049
    test = split_records(out, manifest, "test")
    assert len(test) == 2 and all(len(r["audio"]) == 10 for r in test)


def test_mtt_decoded_mp3_matches_ffmpeg_and_short_clip_loops(mtt_build):
    data, clips, manifest = mtt_build
    by_clip = {}
    for r in split_records(data / "mtt" / "tfrecord", manifest, "train"):
        by_clip.setdefault(r["clip_id"].decode(), []).append(records.from_pcm(r["audio"], "int16"))
    path, _ = clips["2"]
    reference = audio.conform(*audio._decode_with_ffmpeg(path), 22050)[: 59049 * 10]
    stored = np.concatenate(by_clip["2"])
    # Different MP3 decoders and resamplers agree to well below the signal level.
    assert np.sqrt(np.mean((stored - reference) ** 2)) < 0.02
    short = np.concatenate(by_clip["16"])  # 10 s clip looped to 29 s
    period = 10 * 22050
    np.testing.assert_allclose(short[period:2 * period], short[:period], atol=1e-4)


def test_mtt_top_tags_are_least_frequent_first():
    import pandas as pd

    table = pd.DataFrame({"a": ["1", "0", "0"], "b": ["1", "1", "1"], "c": ["1", "1", "0"], "d": ["0", "0", "0"]})
    assert mtt.top_tags(table, ["a", "b", "c", "d"], 3) == ["a", "c", "b"]


def test_mtt_reports_a_tag_list_that_differs_from_the_paper(tmp_path):
    classes = list(mtt.CLASSES)
    classes[0] = "tuba"
    rawdata.make_mtt(tmp_path / "mtt" / "raw", classes)
    index = mtt.index(tmp_path / "mtt" / "raw")
    assert "tuba" in index.spec.classes and "choral" not in index.spec.classes
    assert "added ['tuba']" in index.notes[0] and "dropped ['choral']" in index.notes[0]


DCS_FOLDERS = rawdata.DCS_FOLDERS


def dcs_audio_plan():
    """Names given audio: 3 val and 3 train files (one multi-label), 3 evaluation files (one multi-label)."""
    tables = {p: dcs.read_weak_labels(rawdata.FIXTURES / "dcs" / dcs.csv_name(p)) for p in DCS_FOLDERS}
    train = {**tables["training"], **tables["testing"]}
    all_val = dcs.pick_validation([row for p in ("training", "testing")
                                   for row in dcs.read_weak_label_rows(rawdata.FIXTURES / "dcs" / dcs.csv_name(p))])
    val = sorted(all_val)[:3]
    rest = sorted(f for f in tables["training"] if f not in all_val)
    multi = [f for f in rest if len(train[f]) > 1]
    evaluation = sorted(tables["evaluation"])
    chosen = val + multi[:1] + rest[:2] + [f for f in evaluation if len(tables["evaluation"][f]) > 1][:1] + evaluation[:2]
    plan = {folder: [] for folder in DCS_FOLDERS.values()}
    for name in chosen:
        part = next(p for p in DCS_FOLDERS if name in tables[p])
        plan[DCS_FOLDERS[part]].append(name)
    return plan, train, tables["evaluation"]


def test_dcs_real_ground_truth_with_missing_audio(tmp_path):
    plan, train_labels, eval_labels = dcs_audio_plan()
    rawdata.make_dcs(tmp_path / "dcs" / "raw", plan)
    manifest = build.build_dataset("dcs", data_dir=tmp_path, workers=1)
    with_audio = {n for names in plan.values() for n in names}
    listed = set(train_labels) | set(eval_labels)
    assert sum(manifest["splits"][s]["clips"] for s in ("train", "val", "test")) == len(with_audio)
    assert [manifest["splits"][s]["clips"] for s in ("train", "val", "test")] == [3, 3, 3]
    assert len(manifest["failures"]) == len(listed - with_audio)
    assert all("no audio file" in f["error"] for f in manifest["failures"])
    out = tmp_path / "dcs" / "tfrecord"
    labels = {**train_labels, **eval_labels}
    seen_multi = False
    for split in ("train", "val", "test"):
        for r in split_records(out, manifest, split):
            names = label_names(r["label"], manifest["classes"])
            assert names == labels[r["clip_id"].decode() + ".wav"]
            seen_multi |= len(names) > 1
    assert seen_multi
    assert manifest["splits"]["train"]["segments"] == 10 * manifest["splits"]["train"]["clips"]


def paper_val_files(raw):
    """The 2019 code's validation files of the ground truth in ``raw``, computed as it did."""
    import pandas as pd

    def read(part):
        return pd.read_csv(raw / dcs.csv_name(part), delimiter="\t", names=["file", "start", "end", "label"])

    rows = pd.concat([read("training"), read("testing")])
    return {f for c in dcs.CLASSES for f in rows[rows.label == c].sample(frac=0.1, random_state=123)["file"]}


@pytest.fixture(scope="module")
def full_dcs(tmp_path_factory):
    data = tmp_path_factory.mktemp("full")
    stubs = rawdata.make_full_dcs(data / "dcs" / "raw")
    return data, stubs


def split_files(index, split):
    return {pathlib.Path(clip.path).name[1:] for clip in index.clips if clip.split == split}


def test_dcs_dry_run_of_the_full_ground_truth_gives_the_papers_split(full_dcs):
    data, _ = full_dcs
    result = run_script("build_dataset.py", "dcs", "--data-dir", data, "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert {"train: 46042 clips", "  val: 5618 clips", " test: 1103 clips"} <= set(lines)
    assert "17 classes: Train horn, Air horn, truck horn," in result.stdout
    assert "no failures found before decoding" in lines
    assert not (data / "dcs" / "tfrecord").exists()
    index = dcs.index(data / "dcs" / "raw")
    assert split_files(index, "val") == paper_val_files(data / "dcs" / "raw")


def test_dcs_partial_download_keeps_a_subset_of_the_papers_val_set(full_dcs, tmp_path):
    data, stubs = full_dcs
    raw = tmp_path / "raw"
    shutil.copytree(data / "dcs" / "raw", raw)
    removed = set(sorted(stubs)[::3])
    for name in removed:
        (raw / stubs[name].relative_to(data / "dcs" / "raw")).unlink()
    (raw / DCS_FOLDERS["training"] / "Yunlisted_0.000_10.000.wav").touch()
    index = dcs.index(raw)
    assert split_files(index, "val") == paper_val_files(raw) - removed
    missing = [f for f in index.failures if "no audio file" in f["error"]]
    assert {pathlib.Path(f["path"]).name[1:] for f in missing} == removed
    assert {f["split"] for f in missing} == {"train", "val", "test"}
    (unlisted,) = [f for f in index.failures if "not listed" in f["error"]]
    assert unlisted["path"].endswith("Yunlisted_0.000_10.000.wav")
    result = run_script("build_dataset.py", "dcs", "--raw-dir", raw, "--data-dir", tmp_path, "--dry-run")
    assert result.returncode == 0 and f"{len(removed) + 1} failure(s) found before decoding" in result.stdout


def make_folder_set(root, formats=(".wav", ".mp3", ".flac", ".m4a")):
    for c, name in enumerate(["bell", "hum"]):
        for i in range(10):
            suffix = formats[i % len(formats)]
            signal = rawdata.tone(2.0 if i else 0.3, 16000, rawdata.class_frequency(3 * c), seed=i)
            path = root / name / f"clip{i}{suffix}"
            (rawdata.write_wav if suffix in (".wav", ".flac") else rawdata.write_encoded)(path, signal, 16000)
    (root / "hum" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")


def test_folder_data_set_any_format_stratified_splits_and_failures(tmp_path):
    make_folder_set(tmp_path / "sounds")
    manifest = build.build_dataset("folder", data_dir=tmp_path / "data", raw_dir=tmp_path / "sounds", name="bells",
                                   workers=1, clip_seconds=2.0, segment_samples=11025, val_fraction=0.2,
                                   test_fraction=0.2)
    spec = manifest["spec"]
    assert manifest["dataset"] == "bells" and manifest["classes"] == ["bell", "hum"]
    assert (spec["segments_per_clip"], spec["num_blocks"], spec["task"]) == (4, 7, "multiclass")
    (failure,) = manifest["failures"]
    assert failure["path"].endswith("broken.wav")
    out = tmp_path / "data" / "bells" / "tfrecord"
    for split, per_class in (("train", 6), ("val", 2), ("test", 2)):
        clips = split_records(out, manifest, split)
        ids = {r["clip_id"].decode() for r in clips}
        assert sorted(i.split("/")[0] for i in ids).count("bell") == per_class
    assert manifest["splits"]["train"]["segments"] == 4 * manifest["splits"]["train"]["clips"]


def test_csv_data_set_multi_label_with_given_splits(tmp_path):
    rows = ["path,labels,split"]
    for i in range(12):
        labels = ["dog;bark", "cat", "dog"][i % 3]
        path = rawdata.write_wav(tmp_path / "audio" / f"{i}.wav", rawdata.tone(1.0, 22050, 300 + 50 * (i % 3)), 22050)
        rows.append(f"audio/{path.name},{labels},{['train', 'train', 'val', 'test'][i % 4]}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    manifest = build.build_dataset("csv", data_dir=tmp_path / "data", raw_dir=tmp_path / "labels.csv", name="pets",
                                   workers=1)
    assert manifest["classes"] == ["bark", "cat", "dog"] and manifest["spec"]["task"] == "multilabel"
    assert [manifest["splits"][s]["clips"] for s in ("train", "val", "test")] == [6, 3, 3]
    train = split_records(tmp_path / "data" / "pets" / "tfrecord", manifest, "train")
    assert {frozenset(label_names(r["label"], manifest["classes"])) for r in train} == \
        {frozenset({"bark", "dog"}), frozenset({"cat"}), frozenset({"dog"})}


def test_csv_with_wrong_columns_is_rejected(tmp_path):
    (tmp_path / "x.csv").write_text("file,label\na.wav,dog\n")
    with pytest.raises(LayoutError, match="columns path,labels"):
        build.build_dataset("csv", raw_dir=tmp_path / "x.csv", name="x", data_dir=tmp_path)


def run_cli(*args, cwd):
    return run_script("build_dataset.py", *args, cwd=cwd)


def test_cli_builds_with_the_seed_command_and_reports(tmp_path):
    rawdata.make_scd(tmp_path / "data" / "scd" / "raw", per_word=3)
    (tmp_path / "data" / "scd" / "raw" / "no" / "01000002_nohash_0.wav").write_bytes(b"")
    result = run_cli("scd", "--workers", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "train: 2 clips" in result.stdout and "1 clip(s) skipped" in result.stdout
    assert "shards 3/3" in result.stderr and "clips/s" in result.stderr
    assert (tmp_path / "data" / "scd" / "tfrecord" / "manifest.json").exists()


def test_cli_refuses_options_that_do_not_apply(tmp_path):
    result = run_cli("scd", "--name", "words", "--clip-seconds", "2", cwd=tmp_path)
    assert result.returncode == 2 and "--clip-seconds only apply to folder and csv" in result.stderr
    result = run_cli("scd", "--name", "words", cwd=tmp_path)
    assert result.returncode == 2 and "--name cannot be used with scd" in result.stderr


def test_cli_broken_layout_exits_with_one_clear_line(tmp_path):
    result = run_cli("mtt", "--data-dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: MagnaTagATune annotations not found")
    assert "Traceback" not in result.stderr


def test_interrupted_mid_shard_resumes_to_identical_shards(tmp_path, scd_build):
    import dataclasses

    data, _ = scd_build
    index = build.load_index("scd", data / "scd" / "raw")
    index.spec = dataclasses.replace(index.spec, clips_per_shard=4)  # 1-clip chunks: shards of several chunks
    reference = build.build_from_index(index, tmp_path / "a", "scd", workers=2)

    class Stop(Exception):
        pass

    def stop_after_five_chunks(progress):
        if progress.clips_done == 5:
            raise Stop

    with pytest.raises(Stop):
        build.build_from_index(index, tmp_path / "b", "scd", workers=1, progress=stop_after_five_chunks)
    # The first train shard was finished, the second was not: no trace of it is left.
    assert (tmp_path / "b" / "train-0000-of-0002.tfrecord").exists()
    assert not (tmp_path / "b" / "train-0001-of-0002.tfrecord").exists()
    assert not list((tmp_path / "b").glob("*.tmp-*")) and not (tmp_path / "b" / build.MANIFEST).exists()
    resumed = build.build_from_index(index, tmp_path / "b", "scd", workers=2)
    assert resumed["splits"] == reference["splits"] and resumed["splits"]["train"]["shards"] == \
        ["train-0000-of-0002.tfrecord", "train-0001-of-0002.tfrecord"]
    for split in ("train", "val", "test"):
        for shard in reference["splits"][split]["shards"]:
            assert (tmp_path / "b" / shard).read_bytes() == (tmp_path / "a" / shard).read_bytes()


def test_csv_listing_a_file_twice(tmp_path):
    for i in range(10):
        rawdata.write_wav(tmp_path / "audio" / f"{i}.wav", rawdata.tone(1.0, 22050, 300 + 50 * (i % 2)), 22050)
    rows = ["path,labels"] + [f"audio/{i}.wav,{'cat' if i % 2 else 'dog'}" for i in range(10)]
    (tmp_path / "same.csv").write_text("\n".join(rows + ["./audio/1.wav,cat", "audio/../audio/2.wav,dog"]) + "\n")
    index = build.load_index("csv", tmp_path / "same.csv", name="pets")
    assert len(index.clips) == 10
    assert index.notes == ["same.csv lists 2 file(s) more than once with the same labels; each is used once "
                           "(lines 3 and 12: ./audio/1.wav; lines 4 and 13: audio/../audio/2.wav)"]
    (tmp_path / "clash.csv").write_text("\n".join(rows + ["./audio/3.wav,dog"]) + "\n")
    with pytest.raises(LayoutError, match=r"lines 5 and 12 list './audio/3.wav' with different labels "
                                          r"\('cat' and 'dog'\)"):
        build.load_index("csv", tmp_path / "clash.csv", name="pets")
    result = run_cli("csv", "--csv", tmp_path / "clash.csv", "--name", "pets", cwd=tmp_path)
    assert result.returncode == 2 and "different labels" in result.stderr and not (tmp_path / "data").exists()


def test_truncated_and_too_short_clips_are_skipped_with_the_reason(tmp_path):
    rows = ["path,labels,split"]
    for i in range(8):
        path = rawdata.write_wav(tmp_path / "audio" / f"{i}.wav", rawdata.tone(1.0, 16000, 300 + 200 * (i % 2)), 16000)
        rows.append(f"audio/{path.name},{'ab'[i % 2]},{['train', 'train', 'val', 'test'][i // 2]}")
    whole = (tmp_path / "audio" / "6.wav").read_bytes()
    (tmp_path / "audio" / "6.wav").write_bytes(whole[: len(whole) // 3])  # a test clip cut to a third
    rawdata.write_wav(tmp_path / "audio" / "1.wav", np.full(1, 0.5, np.float32), 16000)  # one sample
    rawdata.write_wav(tmp_path / "audio" / "2.wav", rawdata.tone(0.09, 16000, 300.0), 16000)  # under 0.1 s
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    manifest = build.build_dataset("csv", data_dir=tmp_path / "data", raw_dir=tmp_path / "labels.csv", name="ab",
                                   workers=1)
    reasons = {f["path"].rsplit("/", 1)[-1]: f["error"] for f in manifest["failures"]}
    assert reasons.keys() == {"1.wav", "2.wav", "6.wav"}
    assert reasons["6.wav"].startswith("truncated file: its header states 16000 frames")
    assert reasons["1.wav"].startswith("too short: 0.000 s, the minimum is 0.100 s")
    assert reasons["2.wav"].startswith("too short: 0.090 s")
    assert [manifest["splits"][s]["clips"] for s in ("train", "val", "test")] == [2, 2, 1]
    assert manifest["options"]["min_seconds"] == 0.1
    manifest = build.build_dataset("csv", data_dir=tmp_path / "data", raw_dir=tmp_path / "labels.csv", name="ab",
                                   workers=1, min_seconds=0.05, overwrite=True)
    assert {f["path"].rsplit("/", 1)[-1] for f in manifest["failures"]} == {"1.wav", "6.wav"}
    with pytest.raises(ValueError, match="--min-seconds must be between 0 and the clip length"):
        build.build_dataset("csv", data_dir=tmp_path / "data", raw_dir=tmp_path / "labels.csv", name="ab",
                            min_seconds=2.0)


def test_a_locked_output_folder_is_refused_and_a_stale_lock_taken_over(tmp_path):
    import json
    import os
    import socket
    import subprocess
    import sys

    rawdata.make_scd(tmp_path / "scd" / "raw", per_word=3)
    out = tmp_path / "scd" / "tfrecord"
    host = socket.gethostname()
    with build.BuildLock(out):  # this process is building into out
        result = run_cli("scd", "--data-dir", tmp_path, "--workers", "1", cwd=tmp_path)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert f"pid {os.getpid()} on {host}" in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert json.loads((out / build.LOCK).read_text())["pid"] == os.getpid() and not (out / build.MANIFEST).exists()
    assert not (out / build.LOCK).exists()

    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    reused = {"pid": os.getpid(), "host": host, "start": 1}  # a live pid, but not the process that locked
    for holder in ({"pid": gone, "host": host}, reused):
        (out / build.LOCK).write_text(json.dumps(holder))
        manifest = build.build_dataset("scd", data_dir=tmp_path, workers=1)
        assert manifest["splits"]["train"]["clips"] == 3 and not (out / build.LOCK).exists()

    (out / build.LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "2026-01-01T00:00:00"}))
    with pytest.raises(build.BuildLocked, match=r"pid 1 on elsewhere, since 2026-01-01T00:00:00.*delete .*\.build\.lock"):
        build.build_dataset("scd", data_dir=tmp_path, workers=1)


def slow_folder_set(root, files_per_class=30):
    """Clips that go through ffmpeg (m4a), so that a 3-worker build runs for a few seconds."""
    source = rawdata.write_encoded(root / "source.m4a", rawdata.tone(2.0, 16000, 440.0), 16000)
    for name in ("low", "high"):
        (root / "raw" / name).mkdir(parents=True)
        for i in range(files_per_class):
            shutil.copy(source, root / "raw" / name / f"{i}.m4a")
    return ["folder", "--raw-dir", root / "raw", "--name", "slow", "--data-dir", root / "data", "--workers", "3",
            "--val-fraction", "0.2", "--test-fraction", "0.2"]


def descendants(pid):
    """Pids of the live (not zombie) processes below ``pid``."""
    import pathlib

    children = {}
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start_build_with_workers(args, cwd, stderr):
    """A build_dataset.py process in a session of its own, once its workers run. Its output
    goes to files: orphaned workers would hold a pipe open forever."""
    import subprocess
    import time

    from scripts import ENV, command

    proc = subprocess.Popen(command("build_dataset.py", *args), cwd=cwd, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=stderr, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while len(descendants(proc.pid)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # two workers and the resource tracker
    time.sleep(1.0)
    assert proc.poll() is None, "the build ended before it could be interrupted"
    return proc


def test_killed_build_leaves_no_process_behind_and_resumes(tmp_path):
    import signal
    import subprocess
    import time

    args = slow_folder_set(tmp_path)
    proc = start_build_with_workers(args, tmp_path, subprocess.DEVNULL)
    below = descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 60
    while any(map(alive, below)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in below if alive(pid)], "workers or the resource tracker outlived the killed build"
    result = run_cli(*args, cwd=tmp_path)  # the dead build's lock is stale
    assert result.returncode == 0, result.stderr[-2000:]
    assert "train: 36 clips" in result.stdout


def test_ctrl_c_stops_a_build_with_one_line_and_it_resumes(tmp_path):
    import os
    import signal

    args = slow_folder_set(tmp_path)
    with open(tmp_path / "stderr", "w") as stderr_file:
        proc = start_build_with_workers(args, tmp_path, stderr_file)
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: the whole process group
        proc.wait(timeout=120)
    stderr = (tmp_path / "stderr").read_text()
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if not line.startswith("slow: shards")]
    assert lines == ["interrupted; finished shards are kept: run the same command again to resume"]
    out = tmp_path / "data" / "slow" / "tfrecord"
    assert not list(out.glob("*.tmp-*")) and not (out / build.LOCK).exists()
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0 and "train: 36 clips" in result.stdout, result.stderr[-2000:]


def test_deleted_truncated_or_damaged_shards_are_rebuilt(tmp_path, scd_build):
    data, _ = scd_build
    reference = data / "scd" / "tfrecord"
    shutil.copytree(data / "scd" / "raw", tmp_path / "scd" / "raw")
    out = tmp_path / "scd" / "tfrecord"
    manifest = build.build_dataset("scd", data_dir=tmp_path, workers=1)
    train, val, test = (f"{split}-0000-of-0001.tfrecord" for split in ("train", "val", "test"))
    assert manifest["shard_files"][train] == {"bytes": (out / train).stat().st_size,
                                              "crc32c": records.file_crc32c(out / train), "records": 6}
    assert manifest["shard_files"][test]["records"] == 3 and manifest["repaired"] == []
    (out / val).unlink()
    whole = (out / test).read_bytes()
    (out / test).write_bytes(whole[: len(whole) // 2])
    again = build.build_dataset("scd", data_dir=tmp_path, workers=1)
    assert again["repaired"] == [{"shard": val, "problem": "missing"},
                                 {"shard": test, "problem": f"{len(whole) // 2} bytes instead of {len(whole)}"}]
    damaged = bytearray((out / train).read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # same size: only a checksum finds it
    (out / train).write_bytes(bytes(damaged))
    assert build.build_dataset("scd", data_dir=tmp_path, workers=1)["repaired"] == []
    result = run_cli("scd", "--data-dir", tmp_path, "--verify", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"rebuilt {train}: it was checksum mismatch" in result.stdout
    for shard in (train, val, test):
        assert (out / shard).read_bytes() == (reference / shard).read_bytes()


def test_read_records_counts_and_checks_every_record(scd_build, tmp_path):
    data, manifest = scd_build
    shard = data / "scd" / "tfrecord" / manifest["splits"]["train"]["shards"][0]
    assert len(list(records.read_records(shard))) == 6
    cut = tmp_path / "cut.tfrecord"
    cut.write_bytes(shard.read_bytes()[:-3])
    with pytest.raises(ValueError, match="file ends inside a record"):
        list(records.read_records(cut))


def test_changed_source_files_are_noticed(tmp_path):
    rawdata.make_scd(tmp_path / "scd" / "raw", per_word=3)
    first = build.build_dataset("scd", data_dir=tmp_path, workers=1)
    path = tmp_path / "scd" / "raw" / "no" / "01000002_nohash_0.wav"  # a training clip
    size = path.stat().st_size
    rawdata.write_wav(path, rawdata.tone(1.0, 16000, 1000.0, amplitude=0.9), 16000)  # same name, new audio
    assert path.stat().st_size == size
    with pytest.raises(ValueError, match="changed in size or modification time.*--overwrite"):
        build.build_dataset("scd", data_dir=tmp_path, workers=1)
    rebuilt = build.build_dataset("scd", data_dir=tmp_path, workers=1, overwrite=True)
    assert rebuilt["std"] != pytest.approx(first["std"], rel=1e-3)
