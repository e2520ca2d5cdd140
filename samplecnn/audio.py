"""Audio I/O: decode any format to mono float32 at a target rate, pad short clips, segment.

Decoding stays in-process with libsndfile (wav, flac, ogg, mp3) and soxr resampling, the
fastest path measured (bench/README.md); other formats (m4a, aac, webm, ...) go through
one ffmpeg process per file.
"""
import pathlib
import subprocess

import numpy as np
import soundfile
import soxr

AUDIO_EXTENSIONS = frozenset(
    ".wav .wave .flac .ogg .oga .opus .mp3 .m4a .aac .wma .aif .aiff .au .webm .mp4 .mka".split()
)


class AudioDecodeError(Exception):
    """A file could not be turned into audio samples (missing, empty, corrupt, unknown)."""


def is_audio_file(path):
    return pathlib.Path(path).suffix.lower() in AUDIO_EXTENSIONS


def decode(path, sample_rate):
    """Mono float32 samples of ``path`` in [-1, 1] at ``sample_rate`` Hz.

    Raises AudioDecodeError with the reason when the file is missing, empty or unreadable.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise AudioDecodeError(f"audio file not found: {path}")
    if path.stat().st_size == 0:
        raise AudioDecodeError(f"empty file (0 bytes): {path}")
    try:
        audio, source_rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError):
        return _decode_with_ffmpeg(path, sample_rate)
    if audio.size == 0:
        raise AudioDecodeError(f"no audio samples in {path}")
    return conform(audio, source_rate, sample_rate)


def conform(audio, source_rate, sample_rate):
    """Mono float32 at ``sample_rate`` of samples (frames, or frames x channels) at ``source_rate``."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if source_rate != sample_rate and audio.size:
        audio = soxr.resample(audio, source_rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(audio, dtype=np.float32)


def _decode_with_ffmpeg(path, sample_rate):
    command = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vn", "-ac", "1",
               "-ar", str(sample_rate), "-f", "f32le", "-"]
    try:
        result = subprocess.run(command, capture_output=True, check=False)
    except FileNotFoundError:
        raise AudioDecodeError(
            f"cannot decode {path}: libsndfile does not read this format and ffmpeg is not "
            "installed (apt-get install ffmpeg)") from None
    audio = np.frombuffer(result.stdout, dtype="<f4")
    if result.returncode != 0 or audio.size == 0:
        reason = result.stderr.decode(errors="replace").strip().splitlines()
        reason = reason[-1] if reason else "no audio stream"
        raise AudioDecodeError(f"cannot decode {path}: {reason}")
    return audio.astype(np.float32)


def loop_pad(audio, length):
    """Repeats ``audio`` end to end (a loop, not a stretch) and cuts it to ``length`` samples."""
    if audio.size == 0:
        raise ValueError("cannot loop an empty signal")
    return np.resize(audio, length) if audio.size != length else audio


def repeat_pad(audio, length):
    """The 2019 code's padding, kept to reproduce it: each sample repeated ``length // size + 1``
    times (``np.repeat``), which stretches a short clip (plays it slower) instead of looping
    it; cut to ``length`` samples."""
    if audio.size == 0:
        raise ValueError("cannot pad an empty signal")
    return np.repeat(audio, length // audio.size + 1)[:length] if audio.size < length else audio[:length]


PADDINGS = {"loop": loop_pad, "repeat": repeat_pad}
"""How a recipe fills clips shorter than the clip length (samplecnn.recipes.Recipe.padding)."""


def segment(audio, segment_samples, num_segments):
    """The first ``num_segments`` non-overlapping segments of ``audio``, looped when short."""
    audio = loop_pad(audio, max(audio.size, segment_samples * num_segments))
    return audio[: segment_samples * num_segments].reshape(num_segments, segment_samples)


def load_clip(path, sample_rate, clip_samples, segment_samples, num_segments, padding="loop"):
    """Decodes ``path`` and returns a (num_segments, segment_samples) array of one clip.

    The clip is padded (``PADDINGS[padding]``) or cut to ``clip_samples`` first, so every
    clip is segmented the same way whatever its length.
    """
    audio = PADDINGS[padding](decode(path, sample_rate), clip_samples)
    return segment(audio, segment_samples, num_segments)
