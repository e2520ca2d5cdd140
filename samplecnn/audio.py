"""Audio I/O: decode any format to mono float32 at a target rate, loop-pad, segment.

Decoding stays in-process with libsndfile (wav, flac, ogg, mp3) and soxr resampling, the
fastest path measured (bench/README.md); other formats (m4a, aac, webm, ...) go through
one ffmpeg process per file. ``decode`` returns a whole file; ``decode_blocks`` streams a
long one in blocks, so that memory does not grow with its length.
"""
import pathlib
import subprocess
import tempfile

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
    path = _existing_file(path)
    try:
        audio, source_rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError):
        return _decode_with_ffmpeg(path, sample_rate)
    if audio.size == 0:
        raise AudioDecodeError(f"no audio samples in {path}")
    return conform(audio, source_rate, sample_rate)


BLOCK_SECONDS = 10.0
"""Length of the blocks of decode_blocks: large enough that per-block overhead vanishes."""


def decode_blocks(path, sample_rate, block_seconds=BLOCK_SECONDS):
    """Yields the mono float32 samples of ``path`` at ``sample_rate`` in blocks of about
    ``block_seconds``: libsndfile reads block by block through a streaming soxr resampler,
    other formats come through an ffmpeg pipe. Raises AudioDecodeError like ``decode``."""
    path = _existing_file(path)
    try:
        source = soundfile.SoundFile(path)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError):
        yield from _ffmpeg_blocks(path, sample_rate, block_seconds)
        return
    with source:
        resampler = (soxr.ResampleStream(source.samplerate, sample_rate, 1, dtype="float32", quality="HQ")
                     if source.samplerate != sample_rate else None)
        samples = 0
        try:
            for block in source.blocks(int(block_seconds * source.samplerate), dtype="float32", always_2d=True):
                mono = conform(block, source.samplerate, source.samplerate)
                samples += mono.size
                yield resampler.resample_chunk(mono) if resampler else mono
        except (soundfile.LibsndfileError, RuntimeError) as error:
            raise AudioDecodeError(f"cannot decode {path}: {error}") from None
        if samples == 0:
            raise AudioDecodeError(f"no audio samples in {path}")
        if resampler:
            yield resampler.resample_chunk(np.zeros(0, np.float32), last=True)


def _existing_file(path):
    """``path`` as a Path; AudioDecodeError when it is missing or empty."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise AudioDecodeError(f"audio file not found: {path}")
    if path.stat().st_size == 0:
        raise AudioDecodeError(f"empty file (0 bytes): {path}")
    return path


def conform(audio, source_rate, sample_rate):
    """Mono float32 at ``sample_rate`` of samples (frames, or frames x channels) at ``source_rate``."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if source_rate != sample_rate and audio.size:
        audio = soxr.resample(audio, source_rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(audio, dtype=np.float32)


def _ffmpeg_command(path, sample_rate):
    """ffmpeg writing mono float32 samples at ``sample_rate`` of ``path`` to stdout."""
    return ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vn", "-ac", "1",
            "-ar", str(sample_rate), "-f", "f32le", "-"]


def _ffmpeg_missing(path):
    return AudioDecodeError(f"cannot decode {path}: libsndfile does not read this format and ffmpeg is not "
                            "installed (apt-get install ffmpeg)")


def _ffmpeg_failure(path, stderr):
    reason = stderr.decode(errors="replace").strip().splitlines()
    return AudioDecodeError(f"cannot decode {path}: {reason[-1] if reason else 'no audio stream'}")


def _decode_with_ffmpeg(path, sample_rate):
    try:
        result = subprocess.run(_ffmpeg_command(path, sample_rate), capture_output=True, check=False)
    except FileNotFoundError:
        raise _ffmpeg_missing(path) from None
    audio = np.frombuffer(result.stdout, dtype="<f4")
    if result.returncode != 0 or audio.size == 0:
        raise _ffmpeg_failure(path, result.stderr)
    return audio.astype(np.float32)


def _ffmpeg_blocks(path, sample_rate, block_seconds):
    """The samples of an ffmpeg pipe in blocks; the process is ended if the caller stops early."""
    block_bytes = 4 * int(block_seconds * sample_rate)
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: ffmpeg never blocks on its messages
        try:
            process = subprocess.Popen(_ffmpeg_command(path, sample_rate), stdout=subprocess.PIPE, stderr=errors)
        except FileNotFoundError:
            raise _ffmpeg_missing(path) from None
        samples, finished = 0, False
        try:
            while data := process.stdout.read(block_bytes):
                block = np.frombuffer(data[:len(data) - len(data) % 4], dtype="<f4").astype(np.float32)
                samples += block.size
                yield block
            finished = True
        finally:
            process.stdout.close()
            if not finished:
                process.kill()
            process.wait()
        if process.returncode != 0 or samples == 0:
            errors.seek(0)
            raise _ffmpeg_failure(path, errors.read())


def loop_pad(audio, length):
    """Repeats ``audio`` end to end (a loop, not a stretch) and cuts it to ``length`` samples."""
    if audio.size == 0:
        raise ValueError("cannot loop an empty signal")
    return np.resize(audio, length) if audio.size != length else audio


def segment(audio, segment_samples, num_segments):
    """The first ``num_segments`` non-overlapping segments of ``audio``, looped when short."""
    audio = loop_pad(audio, max(audio.size, segment_samples * num_segments))
    return audio[: segment_samples * num_segments].reshape(num_segments, segment_samples)


def load_clip(path, sample_rate, clip_samples, segment_samples, num_segments):
    """Decodes ``path`` and returns a (num_segments, segment_samples) array of one clip.

    The clip is looped or cut to ``clip_samples`` first, so every clip is segmented the
    same way whatever its length.
    """
    audio = loop_pad(decode(path, sample_rate), clip_samples)
    return segment(audio, segment_samples, num_segments)
