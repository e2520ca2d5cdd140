"""Decoding: every container gives the same samples, broken and too-short files are refused."""
import subprocess

import numpy as np
import pytest
import soundfile

import rawdata
from samplecnn import audio


def int16(signal):
    return (np.clip(signal, -1, 1) * 32767).astype("<i2")


def write_stereo(path, stereo, sample_rate, codec_args=()):
    """Writes a (frames, 2) signal through ffmpeg in the container of ``path``'s suffix."""
    pcm = int16(stereo).tobytes()
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "s16le", "-ar", str(sample_rate), "-ac", "2",
                    "-i", "-", *codec_args, str(path)], input=pcm, check=True)
    return path


def test_stereo_mixes_down_alike_in_every_container(tmp_path):
    left = rawdata.tone(1.0, 44100, 440.0, amplitude=0.9)
    stereo = np.stack([left, 0.8 * left], axis=1)  # mean: 0.9 * 0.9 = 0.81 peak; (L + R) / sqrt(2): 1.15
    soundfile.write(tmp_path / "a.wav", int16(stereo), 44100)
    reference = audio.decode(tmp_path / "a.wav", 22050)
    lossless = audio.decode(write_stereo(tmp_path / "a.mka", stereo, 44100, ["-c:a", "pcm_s16le"]), 22050)
    np.testing.assert_allclose(lossless, reference, atol=1e-6)
    for suffix in (".m4a", ".webm"):
        decoded = audio.decode(write_stereo(tmp_path / f"a{suffix}", stereo, 44100), 22050)
        rms_ratio = np.sqrt(np.mean(decoded ** 2) / np.mean(reference ** 2))
        assert rms_ratio == pytest.approx(1.0, abs=0.03), suffix  # ffmpeg's -ac 1 gave 1.41 (+3 dB)
        assert np.abs(decoded).max() < 1.0, suffix  # -ac 1: above 1.1


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".aiff"])
def test_truncated_files_are_refused_where_the_header_states_the_length(tmp_path, suffix):
    signal = rawdata.tone(1.0, 16000, 440.0)
    whole = rawdata.write_wav(tmp_path / f"whole{suffix}", signal, 16000)
    assert audio.stated_frames(whole) == 16000 and audio.decode(whole, 16000).size == 16000
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    with pytest.raises(audio.AudioDecodeError, match=r"truncated file: its header states 16000 frames but it holds"):
        audio.decode(cut, 16000)


def test_headers_that_leave_the_length_open_are_not_called_truncated(tmp_path):
    streamed = tmp_path / "streamed.wav"  # ffmpeg writing to a pipe cannot go back to fill in the sizes
    pcm = int16(rawdata.tone(0.5, 16000, 440.0)).tobytes()
    with open(streamed, "wb") as out:
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "s16le", "-ar", "16000", "-ac", "1", "-i", "-",
                        "-f", "wav", "-"], input=pcm, stdout=out, check=True)
    assert audio.stated_frames(streamed) is None and audio.decode(streamed, 16000).size == 8000
    assert audio.stated_frames(rawdata.write_encoded(tmp_path / "a.mp3", rawdata.tone(0.5, 16000, 440.0), 16000)) \
        is None
