"""predict.py and Tagger: tags, timelines, embeddings and bad input, on a trained run."""
import json
import os
import shutil
import subprocess
import tarfile
import zipfile

import numpy as np
import pandas as pd
import pytest
from scipy.io import arff

import rawdata
from samplecnn import audio
from samplecnn.inference import Tagger
from scripts import ENV, command, run_script


@pytest.fixture(scope="module")
def held_back(tmp_path_factory):
    """New tone files (unseen seeds and levels) for each of the three classes."""
    root = tmp_path_factory.mktemp("held_back")
    files = {}
    for c in range(3):
        for i in range(4):
            signal = rawdata.tone(1.0, 16000, rawdata.class_frequency(4 * c) * (1 + 0.01 * i), seed=1000 + i,
                                  amplitude=0.25 + 0.05 * i)
            files[rawdata.write_wav(root / f"class{c}" / f"held{i}.wav", signal, 16000)] = f"class{c}"
    return files


def test_held_back_files_get_the_right_top_class(tagger, held_back):
    correct = sum(tagger.top(tagger.predict_file(path).scores, 1)[0][0] == label for path, label in held_back.items())
    assert correct >= 10  # of 12; chance is 4


def test_wav_mp3_and_flac_of_the_same_audio_agree(tagger, tmp_path):
    signal = rawdata.tone(1.0, 22050, rawdata.class_frequency(4), seed=7, amplitude=0.4)
    wav = rawdata.write_wav(tmp_path / "a.wav", signal, 22050)
    flac = rawdata.write_wav(tmp_path / "a.flac", signal, 22050)
    mp3 = rawdata.write_encoded(tmp_path / "a.mp3", signal, 22050)
    scores = [tagger.predict_file(p).scores for p in (wav, flac, mp3)]
    np.testing.assert_allclose(scores[1], scores[0], atol=1e-3)
    np.testing.assert_allclose(scores[2], scores[0], atol=0.05)


def test_array_api_resamples_and_loops_short_audio(tagger):
    short = rawdata.tone(0.1, 8000, rawdata.class_frequency(8), seed=3, amplitude=0.4)
    prediction = tagger.predict_array(short, 8000)
    assert prediction.scores.shape == (3,) and prediction.end == pytest.approx(0.1, abs=1e-3)
    assert prediction.scores.sum() == pytest.approx(1.0, abs=1e-5)


def test_timeline_windows_have_the_right_times(tagger):
    audio = np.concatenate([rawdata.tone(2.0, 22050, rawdata.class_frequency(0)),
                            rawdata.tone(1.5, 22050, rawdata.class_frequency(8))])
    windows = tagger.timeline_array(audio, 22050, window=1.0, hop=0.5)
    assert [(w.start, w.end) for w in windows] == [(s / 2, s / 2 + 1.0) for s in range(6)]
    assert tagger.top(windows[0].scores, 1)[0][0] == "class0" and tagger.top(windows[-1].scores, 1)[0][0] == "class2"


def test_embeddings_have_the_width_of_their_layer(tagger):
    audio = rawdata.tone(2.0, 22050, 300.0)
    (default,) = tagger.embed(audio, sample_rate=22050)
    assert default.features.shape == (tagger.model.get_layer("embedding").output.shape[-1],) == (32,)
    per_window = tagger.embed(audio, layer="block3_pool", window=1.0, sample_rate=22050)
    assert len(per_window) == 2 and per_window[0].features.shape == (16,)
    with pytest.raises(ValueError, match="no layer 'nope'.*block1_pool"):
        tagger.embed(audio, layer="nope", sample_rate=22050)


def test_cli_outputs_parse_and_bad_inputs_are_reported(trained, held_back, tmp_path):
    run_dir, _ = trained
    good = sorted(held_back)[:3]
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(b"ID3 not really an mp3")
    empty_zip = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty_zip, "w") as z:
        z.writestr("readme.txt", "no audio here")
    archive = tmp_path / "clips.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(good[0], "inside/one.wav")
    outputs = {suffix: tmp_path / f"out{suffix}" for suffix in (".csv", ".json")}
    embeddings = {suffix: tmp_path / f"emb{suffix}" for suffix in (".csv", ".arff", ".npy")}
    results = {}
    for suffix in (".csv", ".json"):
        emb = embeddings[".csv"] if suffix == ".csv" else embeddings[".arff"]
        results[suffix] = run_script("predict.py", run_dir, *good, broken, empty_zip, archive, tmp_path / "missing.wav",
                                     "--output", outputs[suffix], "--embeddings", emb, "--top-k", "2")
    npy = run_script("predict.py", run_dir, held_back and sorted(held_back)[0].parent, "--embeddings",
                     embeddings[".npy"], "--no-labels")
    assert npy.returncode == 0, npy.stderr[-2000:]

    result = results[".csv"]
    assert result.returncode == 1, result.stderr[-2000:]
    assert "broken.mp3: FAILED" in result.stdout and "empty.zip: FAILED: archive holds no audio files" in result.stdout
    assert "missing.wav: FAILED: no such file or folder" in result.stdout
    assert "4 file(s) tagged, 3 failed" in result.stdout

    table = pd.read_csv(outputs[".csv"])
    assert list(table.columns) == ["path", "start", "end", "top_classes", "class0", "class1", "class2"]
    assert len(table) == 4 and np.allclose(table[["class0", "class1", "class2"]].sum(axis=1), 1.0, atol=1e-4)
    assert list(table["path"][table["path"].str.endswith("one.wav")]) == [f"{archive}/inside/one.wav"]
    report = json.loads(outputs[".json"].read_text())
    assert len(report["predictions"]) == 4 and len(report["failures"]) == 3
    assert set(report["predictions"][0]["scores"]) == {"class0", "class1", "class2"}

    features = pd.read_csv(embeddings[".csv"])
    assert list(features.columns[:3]) == ["name", "timeStamp", "end"] and features.columns[-1] == "class"
    assert features.shape == (4, 3 + 32 + 1) and features["class"].iloc[0] == good[0].parent.name
    data, meta = arff.loadarff(embeddings[".arff"])
    assert len(data) == 4 and meta.names()[:3] == ["name", "timeStamp", "end"] and meta.names()[-1] == "class"
    table = np.load(embeddings[".npy"])
    assert table.dtype.names == ("name", "timeStamp", "end", "features") and table["features"].shape == (4, 32)


def test_cli_timeline_csv(trained, tmp_path):
    audio = rawdata.tone(3.0, 22050, rawdata.class_frequency(4))
    path = rawdata.write_wav(tmp_path / "long.wav", audio, 22050)
    out = tmp_path / "timeline.csv"
    result = run_script("predict.py", trained[0], path, "--window", "1", "--hop", "0.5", "--output", out)
    assert result.returncode == 0, result.stderr[-2000:]
    table = pd.read_csv(out)
    assert list(table["start"]) == [0.0, 0.5, 1.0, 1.5, 2.0] and list(table["end"]) == [1.0, 1.5, 2.0, 2.5, 3.0]


def test_embedding_options_without_embeddings_are_refused(trained, held_back):
    result = run_script("predict.py", trained[0], sorted(held_back)[0], "--layer", "block3_pool")
    assert result.returncode == 2 and "--layer only apply to embeddings" in result.stderr


def test_checkpoint_without_its_config_is_a_clear_error(trained, tmp_path):
    run_dir, _ = trained
    (final,) = run_dir.glob("final-*.h5")
    lonely = shutil.copy(final, tmp_path / final.name)
    result = run_script("predict.py", lonely, tmp_path)
    assert result.returncode == 2 and "config.json not found" in result.stderr and "Traceback" not in result.stderr


def test_output_and_embeddings_naming_one_file_are_refused(trained, held_back, tmp_path):
    (tmp_path / "sub").mkdir()
    result = run_script("predict.py", trained[0], sorted(held_back)[0], "--output", "out.csv", "--embeddings",
                        "sub/../out.csv", cwd=tmp_path)
    assert result.returncode == 2 and "--output and --embeddings name the same file" in result.stderr
    assert not (tmp_path / "out.csv").exists()


def test_timeline_covers_the_tail_with_a_looped_last_window(tagger):
    audio = np.concatenate([rawdata.tone(3.0, 22050, rawdata.class_frequency(0)),
                            rawdata.tone(0.3, 22050, rawdata.class_frequency(8), seed=5)])
    windows = tagger.timeline_array(audio, 22050, window=1.0)
    assert [(w.start, w.end) for w in windows] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, pytest.approx(3.3))]
    tail = tagger.predict_array(np.resize(audio[3 * 22050:], 22050), 22050)
    np.testing.assert_allclose(windows[-1].scores, tail.scores, rtol=1e-5, atol=1e-6)
    assert tagger.top(windows[-1].scores, 1)[0][0] == "class2"


def test_cli_timeline_prints_the_real_duration(trained, tmp_path):
    path = rawdata.write_wav(tmp_path / "long.wav", rawdata.tone(2.5, 22050, rawdata.class_frequency(4)), 22050)
    result = run_script("predict.py", trained[0], path, "--window", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{path} (2.50 s;" in result.stdout and "[   2.00-   2.50 s]" in result.stdout


def test_windows_farther_apart_than_the_tail_add_no_empty_window():
    config = {"spec": {"sample_rate": 100, "segment_samples": 50, "task": "multiclass", "threshold": None},
              "classes": ["a"], "mean": 0.0, "std": 1.0}
    tagger = Tagger(None, config)

    def spans(samples):
        items = tagger.segment_items([np.ones(samples, np.float32)], 0.5, 2.0)
        return [(window.start, end) for window, segment, end in items if segment is None]

    assert spans(150) == [(0.0, 0.5)]
    assert spans(250) == [(0.0, 0.5), (2.0, 2.5)]


def error_lines(stderr):
    """The lines of our own messages (TensorFlow may log a few lines of its own on import)."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_an_output_location_that_cannot_be_written_is_refused_before_any_work(trained, held_back, tmp_path):
    run_dir, _ = trained
    (tmp_path / "folder.csv").mkdir()
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for option, target, message in (("--output", tmp_path / "missing" / "tags.csv", "does not exist"),
                                    ("--output", tmp_path / "folder.csv", "is a folder"),
                                    ("--embeddings", blocker / "features.arff", "does not exist")):
        result = run_script("predict.py", run_dir, *sorted(held_back)[:2], option, target)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        (line,) = error_lines(result.stderr)
        assert f"{option} {target}" in line and message in line and "tagged" not in result.stdout
    result = run_script("evaluate.py", run_dir, "--output", tmp_path / "missing" / "results.json")
    assert result.returncode == 2 and "does not exist" in result.stderr and "ROC-AUC" not in result.stdout


def test_bad_window_or_hop_is_refused_before_the_model_loads(trained, held_back, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(trained[0] / "config.json", run_dir)
    (run_dir / "final-auc_0.5-acc_0.5-f1_0.5.h5").write_bytes(b"not a model: loading it fails")
    for options, option in ((["--window", "0"], "--window 0"), (["--window", "-2"], "--window -2"),
                            (["--window", "1", "--hop", "0"], "--hop 0"), (["--window", "1", "--hop", "1e-9"], "--hop 1e-09"),
                            (["--window", "inf"], "--window inf")):
        result = run_script("predict.py", run_dir, sorted(held_back)[0], *options)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        (line,) = error_lines(result.stderr)
        assert f"error: {option}: must be a finite number of seconds of at least one sample" in line


def test_a_truncated_tar_and_a_zip_with_a_bad_member_still_tag_their_good_members(trained, held_back, tmp_path):
    good = sorted(held_back)[:3]
    noise = rawdata.write_wav(tmp_path / "noise.wav", np.random.default_rng(0).uniform(-0.5, 0.5, 16000 * 8), 16000)
    whole = tmp_path / "whole.tar.gz"
    with tarfile.open(whole, "w:gz") as t:
        t.add(good[0], "a/one.wav")
        t.add(good[1], "two.wav")
        t.add(noise, "three.wav")  # incompressible: the cut below falls inside it
    truncated = tmp_path / "clips.tar.gz"
    truncated.write_bytes(whole.read_bytes()[:-60000])
    archive = tmp_path / "clips.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i, path in enumerate(good):
            z.write(path, f"m{i}.wav")
    data = bytearray(archive.read_bytes())
    data[data.find(good[1].read_bytes()[2000:2100]) + 50] ^= 0xFF  # one byte of m1.wav's audio
    archive.write_bytes(bytes(data))

    result = run_script("predict.py", trained[0], truncated, archive)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    tagged = [line.split(" (")[0] for line in result.stdout.splitlines() if " s; decode " in line]
    assert tagged == [f"{truncated}/a/one.wav", f"{truncated}/two.wav", f"{archive}/m0.wav", f"{archive}/m2.wav"]
    assert f"{truncated}/three.wav: FAILED: archive is truncated or corrupt here" in result.stdout
    assert f"{archive}/m1.wav: FAILED: cannot extract: Bad CRC-32" in result.stdout
    assert "4 file(s) tagged, 2 failed" in result.stdout


def test_blocks_of_any_size_give_the_windows_of_the_whole_signal(tagger):
    audio = rawdata.tone(7.3, 22050, 500.0, seed=5)
    blocks = [audio[i:i + 3001] for i in range(0, audio.size, 3001)]
    for window, hop in ((None, None), (2.0, 0.7), (0.4, 1.3), (10.0, None), (1.0, None)):
        whole = list(tagger.segment_items([audio], window, hop))
        streamed = list(tagger.segment_items(blocks, window, hop))
        assert len(streamed) == len(whole)
        for (w1, s1, e1), (w2, s2, e2) in zip(whole, streamed):
            assert w1.start == w2.start and e1 == e2 and (s1 is None) == (s2 is None)
            if s1 is not None:
                np.testing.assert_array_equal(s1, s2)
    starts = [w.start for w, s, _ in tagger.segment_items(blocks, 2.0, 0.7) if s is None]
    assert starts == pytest.approx([0.7 * i for i in range(9)])  # while a whole window fits, then the tail's


@pytest.mark.parametrize("suffix", [".wav", ".m4a"])
def test_a_file_streamed_in_blocks_is_scored_like_the_decoded_whole(tagger, tmp_path, suffix):
    signal = np.concatenate([rawdata.tone(12.0, 44100, rawdata.class_frequency(0), seed=1),
                             rawdata.tone(13.0, 44100, rawdata.class_frequency(8), seed=2)])
    write = rawdata.write_wav if suffix == ".wav" else rawdata.write_encoded
    path = write(tmp_path / f"long{suffix}", signal, 44100)
    decoded = audio.decode(path, tagger.sample_rate)
    np.testing.assert_array_equal(np.concatenate(list(audio.decode_blocks(path, tagger.sample_rate))), decoded)
    for window, hop in ((None, None), (3.0, 1.0)):
        streamed = tagger.timeline(path, window, hop)  # 10-s blocks
        whole = tagger.timeline_array(decoded, tagger.sample_rate, window, hop)
        assert [(p.start, p.end) for p in streamed] == [(p.start, p.end) for p in whole]
        np.testing.assert_allclose([p.scores for p in streamed], [p.scores for p in whole], atol=1e-6)
    assert tagger.top(streamed[0].scores, 1)[0][0] == "class0" and tagger.top(streamed[-1].scores, 1)[0][0] == "class2"


def peak_rss_mb(*args):
    """Peak RSS of one predict.py process, in MB."""
    process = subprocess.Popen(command("predict.py", *args), env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, stderr[-2000:]
    return usage.ru_maxrss / 1024


def test_predict_memory_does_not_grow_with_file_length_or_window_overlap(trained, tmp_path):
    short = rawdata.write_wav(tmp_path / "short.wav", rawdata.tone(1.0, 22050, 400.0), 22050)
    long = rawdata.write_wav(tmp_path / "long.wav", rawdata.tone(180.0, 22050, 400.0), 22050)
    options = ["--window", "3", "--hop", "0.1", "--batch-size", "64"]
    baseline = peak_rss_mb(trained[0], short, *options)
    # 1771 windows of 3 segments: 470 MB of segments if they were all held at once
    assert peak_rss_mb(trained[0], long, *options) - baseline < 150


def test_csv_and_arff_round_trip_any_file_name(trained, tmp_path):
    import urllib.parse

    names = ["café.wav", "it's.wav", "back\\slash.wav", 'say "hi", 50%.wav']
    folder = tmp_path / "clâss"
    paths = [rawdata.write_wav(folder / name, rawdata.tone(1.0, 22050, 400.0), 22050) for name in names]
    outputs = {suffix: tmp_path / f"out{suffix}" for suffix in (".csv", ".arff")}
    for embeddings, output in ((outputs[".arff"], tmp_path / "tags.csv"), (outputs[".csv"], tmp_path / "tags.json")):
        result = run_script("predict.py", trained[0], folder, "--embeddings", embeddings, "--output", output)
        assert result.returncode == 0, result.stderr[-2000:]
    expected = sorted(map(str, paths))
    assert sorted(pd.read_csv(outputs[".csv"])["name"]) == expected
    assert set(pd.read_csv(outputs[".csv"])["class"]) == {"clâss"}
    assert sorted(pd.read_csv(tmp_path / "tags.csv")["path"]) == expected
    assert sorted(p["path"] for p in json.loads((tmp_path / "tags.json").read_text())["predictions"]) == expected
    data, _ = arff.loadarff(outputs[".arff"])
    assert sorted(urllib.parse.unquote(name.decode()) for name in data["name"]) == expected
    assert {urllib.parse.unquote(label.decode()) for label in data["class"]} == {"clâss"}
