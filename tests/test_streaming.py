"""StreamTagger and `samplecnn stream`: a live stream gives the windows of Tagger.timeline."""
import subprocess
import sys

import numpy as np
import pytest

import rawdata
from samplecnn.inference import Tagger
from samplecnn.streaming import StreamTagger
from scripts import ENV, REPO


@pytest.fixture(scope="module")
def tagger(trained):
    return Tagger.from_run(trained[0])


@pytest.mark.parametrize("seconds", [0.6, 3.3])
def test_stream_in_100_ms_chunks_equals_the_timeline(tagger, tmp_path, seconds):
    audio = np.concatenate([rawdata.tone(seconds / 2, 22050, rawdata.class_frequency(0)),
                            rawdata.tone(seconds / 2, 22050, rawdata.class_frequency(8))])
    path = rawdata.write_wav(tmp_path / "stream.wav", audio, 22050, subtype="FLOAT")
    expected = tagger.timeline(path, window=1.0, hop=0.25)
    stream, got = StreamTagger(tagger, window=1.0, hop=0.25), []
    for start in range(0, audio.size, 2205):
        got.extend(stream.push(audio[start:start + 2205]))
    got.extend(stream.flush())
    assert [p.start for p in got] == pytest.approx([p.start for p in expected])
    assert [p.end for p in got] == pytest.approx([p.end for p in expected])
    assert np.abs(np.stack([p.scores for p in got]) - np.stack([p.scores for p in expected])).max() <= 1e-5


def test_cli_reads_s16le_from_stdin_and_prints_a_line_per_window(trained, tagger):
    audio = rawdata.tone(2.0, 22050, rawdata.class_frequency(4), seed=9)
    pcm = (audio * 32767).astype("<i2").tobytes()
    result = subprocess.run([sys.executable, "-m", "samplecnn", "stream", str(trained[0]), "--stdin", "--top-k", "1"],
                            input=pcm, cwd=REPO, env=ENV, capture_output=True)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.decode().splitlines()
    windows = tagger.timeline_array(audio, 22050, window=1.0, hop=0.25)
    assert len(lines) == len(windows) == 6  # 0, 0.25, ..., 1.0 s and the 2-sample tail (a hop is 5512 samples)
    assert [line.split("-")[0].strip() for line in lines] == [f"{w.start:.2f}" for w in windows]
    assert all(line.split()[-2] == "class1" for line in lines)
