"""The espeak-ng Speech Commands generator writes the real layout, deterministically."""
import hashlib

import soundfile

from samplecnn import build, synth


def test_layout_lists_speakers_and_audio(tmp_path):
    out = tmp_path / "raw"
    counts = synth.generate(out, per_word=20, words=("yes", "no", "marvin"), speakers=20, seed=3, workers=2)
    assert counts == {"val": 6, "test": 6, "train": 48}
    assert sorted(p.name for p in out.iterdir()) == [synth.MARKER, "_background_noise_", "marvin", "no",
                                                      "testing_list.txt", "validation_list.txt", "yes"]
    val = (out / "validation_list.txt").read_text().split()
    test = (out / "testing_list.txt").read_text().split()
    assert len(val) == 6 and len(test) == 6 and all((out / p).is_file() for p in val + test)
    speaker = {split: {p.split("/")[1].split("_nohash_")[0] for p in paths} for split, paths in
               (("val", val), ("test", test))}
    train = {p.name.split("_nohash_")[0] for p in out.glob("*/*.wav")} - speaker["val"] - speaker["test"]
    assert not (speaker["val"] & speaker["test"]) and train and not (train & (speaker["val"] | speaker["test"]))
    for path in out.glob("*/*_nohash_*.wav"):
        info = soundfile.info(path)
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 16000, "PCM_16")
    loudest = max(abs(soundfile.read(p)[0]).max() for p in out.glob("yes/*.wav"))
    assert 0.2 <= loudest <= 0.9
    assert sorted(p.name for p in (out / "_background_noise_").iterdir()) == ["pink_noise.wav", "white_noise.wav"]


def test_same_seed_same_bytes_and_builder_reads_it(tmp_path):
    def digest(folder):
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())).hexdigest()

    synth.generate(tmp_path / "a", per_word=5, words=("up", "down"), speakers=10, seed=1, workers=1)
    synth.generate(tmp_path / "b", per_word=5, words=("up", "down"), speakers=10, seed=1, workers=2)
    synth.generate(tmp_path / "c", per_word=5, words=("up", "down"), speakers=10, seed=2, workers=1)
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")
    manifest = build.build_dataset("scd", data_dir=tmp_path / "data", raw_dir=tmp_path / "a", workers=1)
    assert sum(manifest["splits"][s]["clips"] for s in ("train", "val", "test")) == 10
    assert manifest["failures"] == []


def test_unknown_words_are_refused(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="not Speech Commands v0.02 words: \\['hello'\\]"):
        synth.generate(tmp_path, words=("yes", "hello"))


def test_a_folder_it_did_not_write_is_never_deleted(tmp_path):
    import subprocess
    import sys

    from scripts import ENV

    mine = tmp_path / "mine"
    (mine / "notes").mkdir(parents=True)
    (mine / "notes" / "thesis.txt").write_text("years of work")
    command = [sys.executable, "-m", "samplecnn.synth", str(mine), "--per-word", "2", "--words", "yes",
               "--speakers", "2", "--workers", "1"]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True)
    assert result.returncode == 2 and "not written by samplecnn.synth" in result.stderr and "--overwrite" in result.stderr
    assert (mine / "notes" / "thesis.txt").read_text() == "years of work" and len(list(mine.rglob("*"))) == 2
    # An earlier output, even an interrupted one, is replaced without asking.
    synth.generate(tmp_path / "out", per_word=2, words=("yes",), speakers=2, workers=1)
    (tmp_path / "out" / "yes" / "stale.wav").write_bytes(b"")
    synth.generate(tmp_path / "out", per_word=2, words=("no",), speakers=2, workers=1)
    assert not (tmp_path / "out" / "yes").exists() and len(list((tmp_path / "out" / "no").glob("*.wav"))) == 2
    result = subprocess.run(command + ["--overwrite"], env=ENV, capture_output=True, text=True)
    assert result.returncode == 0 and not (mine / "notes").exists() and (mine / "yes").is_dir()
