"""Fold sets (build_dataset.py --folds / --fold-column) and k-fold cross-validation (train.py --cv / --fold)."""
import collections
import json
import os
import re
import signal
import statistics
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf

import rawdata
from samplecnn import build, crossval, pipeline, records, training
from samplecnn.datasets import LayoutError
from scripts import ENV, SMALL_MODEL, command, run_script

CLASSES, GROUPS, PER_GROUP = 3, 6, 2
"""Each of 6 speakers ('spk<g>_') says every class twice: 36 clips."""
SPEC = ["--sample-rate", "8000", "--clip-seconds", "0.2", "--segment-samples", "729"]
"""0.2-s clips of two 729-sample segments (so a test clip is two records of a fold's shard)."""
GROUP_PATTERN = r"^(spk\d)_"
TRAIN = ["--num-stages", "2", "--max-epochs", "2", "--patience", "5", *SMALL_MODEL]


def make_raw(root):
    for c in range(CLASSES):
        for g in range(GROUPS):
            for i in range(PER_GROUP):
                audio = rawdata.tone(0.2, 8000, rawdata.class_frequency(4 * c), seed=10 * g + i)
                rawdata.write_wav(root / f"class{c}" / f"spk{g}_{i}.wav", audio, 8000)
    return root


def read_segments(path):
    """(clip_id, label bytes, PCM bytes) of every segment record of a shard."""
    out = []
    for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        feature = tf.train.Example.FromString(raw).features.feature
        out.append(tuple(feature[key].bytes_list.value[0] for key in ("clip_id", "label", "audio")))
    return out


def fold_clips(data, manifest, k):
    """The clip ids stored in fold k's shards, one per segment."""
    return [clip_id.decode() for shard in manifest["splits"][f"fold{k}"]["shards"]
            for clip_id, _, _ in read_segments(data / "birds" / "tfrecord" / shard)]


def shard_stamps(data):
    return {path.name: (path.stat().st_mtime_ns, records.file_crc32c(path))
            for path in sorted((data / "birds" / "tfrecord").glob("*.tfrecord"))}


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
    """(data dir, manifest, build output) of a 3-fold set built from the command line."""
    root = tmp_path_factory.mktemp("folds")
    make_raw(root / "raw")
    result = run_script("build_dataset.py", "folder", "--raw-dir", root / "raw", "--name", "birds", "--data-dir",
                        root / "data", "--folds", "3", "--group-pattern", GROUP_PATTERN, "--workers", "1", *SPEC,
                        cwd=root)
    assert result.returncode == 0, result.stderr
    return root / "data", json.loads((root / "data" / "birds" / "tfrecord" / "manifest.json").read_text()), result


def test_every_clip_in_exactly_one_fold_and_no_group_in_two(folds):
    data, manifest, result = folds
    assert manifest["folds"] == ["0", "1", "2"] and set(manifest["splits"]) == {"fold0", "fold1", "fold2"}
    assert "a fold set of 3 folds" in result.stdout and "fold0: 12 clips, 24 segments" in result.stdout
    clips = {k: fold_clips(data, manifest, k) for k in range(3)}
    for ids in clips.values():  # every segment of a clip in its fold, next to each other
        assert ids[::2] == ids[1::2]
    every = [clip for k in range(3) for clip in set(clips[k])]
    assert sorted(every) == sorted(f"class{c}/spk{g}_{i}.wav" for c in range(CLASSES) for g in range(GROUPS)
                                   for i in range(PER_GROUP))
    group_folds = collections.defaultdict(set)
    for k, ids in clips.items():
        for clip in ids:
            group_folds[re.match(GROUP_PATTERN, clip.split("/")[1]).group(1)].add(k)
    assert all(len(found) == 1 for found in group_folds.values()) and len(group_folds) == GROUPS
    for k, ids in clips.items():  # stratified: two speakers per fold, so each class 4 times
        assert collections.Counter(clip.split("/")[0] for clip in set(ids)) == {f"class{c}": 4 for c in range(3)}
        assert manifest["splits"][f"fold{k}"]["clips"] == 12


def test_dry_run_shows_the_folds(folds, tmp_path):
    data, _, _ = folds
    result = run_script("build_dataset.py", "folder", "--raw-dir", data.parent / "raw", "--name", "x", "--data-dir",
                        tmp_path / "d", "--folds", "3", "--group-pattern", GROUP_PATTERN, "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stdout.splitlines() if line.startswith("fold")] == \
        ["fold0: 12 clips", "fold1: 12 clips", "fold2: 12 clips"]
    assert not (tmp_path / "d").exists()


def test_folds_are_seeded(tmp_path):
    make_raw(tmp_path / "raw")

    def assignment(seed, **options):
        index = build.load_index("folder", tmp_path / "raw", seed=seed, name="birds", folds=3, **options)
        return {clip.clip_id: clip.split for clip in index.clips}

    assert assignment(0) == assignment(0) and assignment(0) != assignment(1)
    assert assignment(4, group_pattern=GROUP_PATTERN) == assignment(4, group_pattern=GROUP_PATTERN)
    no_groups = collections.Counter(assignment(0).values())
    assert no_groups == {"fold0": 12, "fold1": 12, "fold2": 12}


def write_fold_csv(tmp_path, folds, extra=""):
    rows = [f"path,labels,fold{extra and ',split'}"]
    for i, fold in enumerate(folds):
        path = rawdata.write_wav(tmp_path / "audio" / f"{i}.wav", rawdata.tone(1.0, 8000, 300 + 200 * (i % 2)), 8000)
        rows.append(f"audio/{path.name},{'cat' if i % 2 else 'dog'},{fold}{extra}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "labels.csv"


def test_csv_fold_column_names_the_folds(tmp_path):
    csv_path = write_fold_csv(tmp_path, ["10", "2", "1", "2", "10", "1", "1", "2", "10"])
    manifest = build.build_dataset("csv", data_dir=tmp_path / "data", raw_dir=csv_path, name="pets", workers=1,
                                   fold_column="fold", sample_rate=8000, segment_samples=729, clip_seconds=0.1)
    assert manifest["folds"] == ["1", "2", "10"]  # whole numbers in numeric order: fold 0 is the CSV's fold 1
    expected = {0: {"audio/2.wav", "audio/5.wav", "audio/6.wav"}, 1: {"audio/1.wav", "audio/3.wav", "audio/7.wav"},
                2: {"audio/0.wav", "audio/4.wav", "audio/8.wav"}}
    for k, clips in expected.items():
        shard = tmp_path / "data" / "pets" / "tfrecord" / manifest["splits"][f"fold{k}"]["shards"][0]
        assert {clip_id.decode() for clip_id, _, _ in read_segments(shard)} == clips
    assert "--fold-column fold" in build.rebuild_command(pipeline.load_manifest(tmp_path / "data" / "pets" /
                                                                                "tfrecord"))


@pytest.mark.parametrize("folds, extra, column, message", [
    (["1", "2", "3"], ",train", "fold", "both a split column and the fold column 'fold'"),
    (["1", "2", "3"], "", "folds", "has no column 'folds'; its columns are ['path', 'labels', 'fold']"),
    (["1", "", "3"], "", "fold", "line 3 has no 'fold' value"),
    (["1", "2", "1"], "", "fold", "names 2 fold(s) (1, 2); cross-validation needs at least 3"),
])
def test_csv_fold_column_errors(tmp_path, folds, extra, column, message):
    csv_path = write_fold_csv(tmp_path, folds, extra)
    with pytest.raises(LayoutError, match=re.escape(message)):
        build.load_index("csv", csv_path, name="pets", fold_column=column)


@pytest.mark.parametrize("args, message", [
    (["--folds", "2"], "--folds must be a whole number >= 3"),
    (["--group-pattern", GROUP_PATTERN], "--group-pattern keeps each group in one fold: it needs --folds K"),
    (["--folds", "3", "--val-fraction", "0.2"], "--val-fraction and --test-fraction do not apply to a fold set"),
    (["--folds", "3", "--group-pattern", r"^(\d+)_"], "36 of 36 file names do not match --group-pattern"),
    (["--folds", "7", "--group-pattern", GROUP_PATTERN], "6 groups cannot fill 7 folds: lower --folds"),
    (["--fold-column", "fold"], "--fold-column cannot be used with folder"),
])
def test_build_refuses_bad_fold_options_before_any_work(folds, tmp_path, args, message):
    data, _, _ = folds
    raw = data.parent / "raw"
    result = run_script("build_dataset.py", "folder", "--raw-dir", raw, "--name", "x", "--data-dir", tmp_path / "d",
                        *args, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "d").exists()


def cv_command(data, logs, *args):
    return ["birds", "--data-dir", data, "--log-dir", logs, *TRAIN, *args]


@pytest.fixture(scope="module")
def cross_validated(folds, tmp_path_factory):
    """A cross-validation made as a user would: fold 0 alone (--fold 0), then --cv stopped
    with Ctrl-C in fold 1's first stage, then the same --cv command again, which continues it.
    Returns what each step left behind."""
    data, _, _ = folds
    logs = tmp_path_factory.mktemp("cv-logs")
    before = shard_stamps(data)
    first = run_script("train.py", *cv_command(data, logs, "--fold", "0"), cwd=logs)
    assert first.returncode == 0, first.stderr[-3000:]
    (parent,) = logs.iterdir()
    fold0 = {path.name: path.stat().st_mtime_ns for path in (parent / "fold-0").iterdir() if path.is_file()}
    proc = subprocess.Popen(command("train.py", *cv_command(data, logs, "--cv")), cwd=logs, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    state, deadline = parent / "fold-1" / "state.json", time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["epochs"] >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the cross-validation ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    _, interrupted = proc.communicate(timeout=120)
    assert proc.returncode == 130, interrupted[-3000:]
    epochs_at_interrupt = len((parent / "fold-1" / "log.csv").read_text().splitlines()) - 1
    again = run_script("train.py", *cv_command(data, logs, "--cv"), cwd=logs)
    assert again.returncode == 0, again.stderr[-3000:]
    return dict(data=data, logs=logs, parent=parent, first=first, interrupted=interrupted, again=again,
                fold0=fold0, before=before, after=shard_stamps(data), epochs_at_interrupt=epochs_at_interrupt)


def test_fold_runs_test_clips_are_disjoint_and_cover_the_set(cross_validated):
    cv = cross_validated
    data, manifest = cv["data"], pipeline.load_manifest(cv["data"] / "birds" / "tfrecord")
    tested = {}
    for k in range(3):
        labels, scores, clip_ids = crossval.load_predictions(cv["parent"] / f"fold-{k}")
        assert clip_ids == fold_clips(data, manifest, k)[::2]  # fold k is its run's test set, every clip once
        assert [manifest["classes"][i] for i in labels.argmax(axis=1)] == [c.split("/")[0] for c in clip_ids]
        assert np.allclose(scores.sum(axis=1), 1, atol=1e-5)
        tested[k] = set(clip_ids)
        config = json.loads((cv["parent"] / f"fold-{k}" / "config.json").read_text())
        assert config["train"]["fold"] == k
    assert not (tested[0] & tested[1] or tested[0] & tested[2] or tested[1] & tested[2])
    assert len(tested[0] | tested[1] | tested[2]) == CLASSES * GROUPS * PER_GROUP


def test_fold_run_trains_on_the_other_folds_standardized_by_them(cross_validated):
    """Fold 1: test fold 1, val fold 2, train fold 0; mean/std from fold 0's samples alone."""
    cv = cross_validated
    manifest = pipeline.run_manifest(json.loads((cv["parent"] / "fold-1" / "config.json").read_text()))
    assert {split: entry["shards"] for split, entry in manifest["splits"].items()} == {
        "train": ["fold0-0000-of-0001.tfrecord"], "val": ["fold2-0000-of-0001.tfrecord"],
        "test": ["fold1-0000-of-0001.tfrecord"]}
    pcm = np.concatenate([np.frombuffer(audio, "<i2") for _, _, audio in
                          read_segments(cv["data"] / "birds" / "tfrecord" / "fold0-0000-of-0001.tfrecord")])
    samples = pcm / records.INT16_SCALE
    config = json.loads((cv["parent"] / "fold-1" / "config.json").read_text())
    assert config["mean"] == pytest.approx(samples.mean(), abs=1e-9)
    assert config["std"] == pytest.approx(samples.std(), rel=1e-6)


def test_cv_results_mean_equals_the_mean_of_the_fold_runs(cross_validated):
    cv = cross_validated
    summary = json.loads((cv["parent"] / "cv_results.json").read_text())
    folds = [json.loads((cv["parent"] / f"fold-{k}" / "results.json").read_text())["test"] for k in range(3)]
    assert summary["complete"] and summary["finished"] == [0, 1, 2] and summary["folds"] == 3
    for key in crossval.SCORES:
        assert summary["mean"][key] == pytest.approx(np.mean([f[key] for f in folds]), abs=1e-12)
        assert summary["std"][key] == pytest.approx(statistics.stdev([f[key] for f in folds]), abs=1e-12)
    assert [f["test"]["accuracy"] for f in summary["per_fold"]] == [f["accuracy"] for f in folds]
    pooled = summary["pooled"]
    correct = sum(f["accuracy"] * f["clips"] for f in folds)
    assert pooled["clips"] == 36 and pooled["accuracy"] == pytest.approx(correct / 36)
    counts = np.array(summary["confusion_matrix"]["counts"])
    assert counts.shape == (3, 3) and counts.sum() == 36 and counts.sum(axis=1).tolist() == [12, 12, 12]
    assert np.trace(counts) == round(correct)
    assert [row["support"] for row in pooled["per_class"]] == [12, 12, 12]
    line = f"accuracy {summary['mean']['accuracy']:.4f} +/- {summary['std']['accuracy']:.4f} over 3 folds"
    assert line in cv["again"].stdout.splitlines()
    assert f"accuracy {folds[0]['accuracy']:.4f} over 1 fold" in cv["first"].stdout
    assert "folds 1, 2 of 3 are not trained yet" in cv["first"].stdout


def test_no_shard_is_rewritten_between_folds(cross_validated):
    assert cross_validated["after"] == cross_validated["before"] and len(cross_validated["before"]) == 3


def test_cv_continues_its_parent_keeping_finished_folds_and_resuming_the_interrupted_one(cross_validated):
    cv = cross_validated
    parent = cv["parent"]
    assert list(cv["logs"].iterdir()) == [parent] and parent.name.endswith("-birds-se-cv")
    assert cv["interrupted"].strip().splitlines()[-1] == f"interrupted; continue with: python train.py --resume {parent}"
    assert {path.name: path.stat().st_mtime_ns for path in (parent / "fold-0").iterdir() if path.is_file()} == \
        cv["fold0"]
    rows = (parent / "fold-1" / "log.csv").read_text().splitlines()[1:]
    assert 1 <= cv["epochs_at_interrupt"] < 4 and [int(row.split(",")[0]) for row in rows] == [1, 2, 3, 4]
    assert json.loads((parent / "cv.json").read_text())["folds"] == [0, 1, 2]


def test_resume_of_the_parent_reports_without_training(cross_validated):
    cv = cross_validated
    stamps = {path: path.stat().st_mtime_ns for path in cv["parent"].rglob("*") if path.is_file()}
    result = run_script("train.py", "--resume", cv["parent"], cwd=cv["logs"])
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((cv["parent"] / "cv_results.json").read_text())
    assert f"accuracy {summary['mean']['accuracy']:.4f} +/- " in result.stdout
    assert {path: path.stat().st_mtime_ns for path in stamps if path.name != "cv_results.json"} == \
        {path: stamp for path, stamp in stamps.items() if path.name != "cv_results.json"}


def test_cv_and_fold_errors_come_before_anything_is_created(folds, tmp_path):
    data, _, _ = folds
    logs = tmp_path / "logs"
    result = run_script("train.py", *cv_command(data, logs, "--fold", "3"), cwd=tmp_path)
    assert result.returncode == 2 and not logs.exists()
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == \
        ["error: --fold 3 is not a fold of birds: it has 3 folds, 0 to 2"]
    plain = training.TrainConfig(dataset="birds", data_dir=str(data), log_dir=str(logs))
    with pytest.raises(pipeline.DataError, match="birds is a fold set of 3 folds .* train with --cv"):
        training.train(plain)
    build.build_dataset("folder", data_dir=data, raw_dir=data.parent / "raw", name="plain", workers=1,
                        sample_rate=8000, clip_seconds=0.2, segment_samples=729)
    with pytest.raises(pipeline.DataError, match="plain has no folds, so --cv and --fold cannot use it"):
        crossval.cross_validate(training.TrainConfig(dataset="plain", data_dir=str(data), log_dir=str(logs)))
    assert not logs.exists()


def test_evaluate_scores_a_fold_run_on_its_own_test_fold(cross_validated, tmp_path):
    run_dir = cross_validated["parent"] / "fold-2"
    result = run_script("evaluate.py", run_dir, "--output", tmp_path / "scores.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads((tmp_path / "scores.json").read_text())
    expected = json.loads((run_dir / "results.json").read_text())["test"]
    assert scores["clips"] == 12 and scores["accuracy"] == expected["accuracy"]
    assert scores["roc_auc"] == pytest.approx(expected["roc_auc"], abs=1e-9)
