"""Audio I/O: decode any format to mono float32 at a target rate, pad short clips, segment.

Decoding stays in-process with libsndfile (wav, flac, ogg, mp3) and soxr resampling, the
fastest path measured (bench/README.md); other formats (m4a, aac, webm, ...) go through
ffmpeg (ffmpeg-python). Either way every channel is decoded and mixed down the same way.
``decode`` returns a whole file; ``decode_blocks`` streams a long one in blocks, so that
memory does not grow with its length.
"""
import pathlib
import struct
import subprocess
import tempfile

import ffmpeg
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
        audio, source_rate = _decode_with_ffmpeg(path)
    if audio.size == 0:
        raise AudioDecodeError(f"no audio samples in {path}")
    check_complete(path, len(audio))
    return conform(audio, source_rate, sample_rate)


def check_complete(path, frames):
    """Raises AudioDecodeError when the file holds fewer frames than its header states
    (a truncated download or copy); decoders silently return what is there."""
    stated = stated_frames(path)
    if stated is not None and frames < stated:
        raise AudioDecodeError(f"truncated file: its header states {stated} frames but it holds {frames} "
                               f"({100 * frames / stated:.0f}%): {path}")


def stated_frames(path):
    """The frame count that a WAV, AIFF or FLAC header states, or None (other formats, or a
    header that leaves the length open, as streamed WAVs do)."""
    with open(path, "rb") as f:
        head = f.read(12)
        if head[:4] == b"fLaC":
            return _flac_frames(f, head[4:])
        if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
            return _wav_frames(f)
        if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
            comm = next((payload for name, _, payload in _chunks(f, ">I") if name == b"COMM"), b"")
            return struct.unpack(">hI", comm[:6])[1] if len(comm) >= 6 else None
    return None


def _chunks(f, size_format):
    """(name, declared size, first 64 bytes) of each chunk of a RIFF/IFF file from here on."""
    while len(header := f.read(8)) == 8:
        size = struct.unpack(size_format, header[4:])[0]
        payload = f.read(min(size, 64))
        yield header[:4], size, payload
        f.seek(size + size % 2 - len(payload), 1)


def _wav_frames(f):
    block_align = 0
    for name, size, payload in _chunks(f, "<I"):
        if name == b"fmt " and len(payload) >= 16:
            block_align = struct.unpack("<H", payload[12:14])[0]
        elif name == b"data":
            return size // block_align if block_align and size not in (0, 0xFFFFFFFF) else None
    return None


def _flac_frames(f, rest):
    block = rest + f.read(38 - len(rest))  # metadata block header (4 bytes) + STREAMINFO (34)
    if len(block) < 38 or block[0] & 0x7F != 0:
        return None
    total = int.from_bytes(block[14:22], "big") & (2 ** 36 - 1)
    return total or None


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
        check_complete(path, samples)
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


def _ffmpeg_stream(path):
    """(ffmpeg command writing every channel of the first audio stream as float32 at its own
    rate to stdout, channels, source rate). Decoding at the source rate and mixing down here
    keeps one downmix (channel mean) and one resampler for all formats: ffmpeg's own
    ``-ac 1`` would mix stereo as (L + R) / sqrt(2), 3 dB louder than (L + R) / 2."""
    try:
        streams = ffmpeg.probe(str(path), select_streams="a:0")["streams"]
    except FileNotFoundError:
        raise _ffmpeg_missing(path) from None
    except ffmpeg.Error as error:
        raise _ffmpeg_failure(path, error.stderr or b"") from None
    if not streams:
        raise AudioDecodeError(f"cannot decode {path}: no audio stream")
    channels, source_rate = int(streams[0]["channels"]), int(streams[0]["sample_rate"])
    command = (ffmpeg.input(str(path)).output("pipe:", map="0:a:0", format="f32le", ac=channels, ar=source_rate)
               .global_args("-nostdin", "-v", "error").compile())
    return command, channels, source_rate


def _ffmpeg_missing(path):
    return AudioDecodeError(f"cannot decode {path}: libsndfile does not read this format and ffmpeg is not "
                            "installed (apt-get install ffmpeg)")


def _ffmpeg_failure(path, stderr):
    reason = stderr.decode(errors="replace").strip().splitlines()
    return AudioDecodeError(f"cannot decode {path}: {reason[-1] if reason else 'no audio stream'}")


def _frames(data, channels):
    audio = np.frombuffer(data[:len(data) - len(data) % (4 * channels)], dtype="<f4")
    return audio.reshape(-1, channels)


def _decode_with_ffmpeg(path):
    """(frames x channels, source rate) of the first audio stream, through ffmpeg."""
    command, channels, source_rate = _ffmpeg_stream(path)
    try:
        result = subprocess.run(command, capture_output=True, check=False)
    except FileNotFoundError:
        raise _ffmpeg_missing(path) from None
    if result.returncode != 0:
        raise _ffmpeg_failure(path, result.stderr)
    return _frames(result.stdout, channels), source_rate


def _ffmpeg_blocks(path, sample_rate, block_seconds):
    """The samples of an ffmpeg pipe in blocks; the process is ended if the caller stops early."""
    command, channels, source_rate = _ffmpeg_stream(path)
    resampler = (soxr.ResampleStream(source_rate, sample_rate, 1, dtype="float32", quality="HQ")
                 if source_rate != sample_rate else None)
    block_bytes = 4 * channels * int(block_seconds * source_rate)
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: ffmpeg never blocks on its messages
        try:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors)
        except FileNotFoundError:
            raise _ffmpeg_missing(path) from None
        samples, finished = 0, False
        try:
            while data := process.stdout.read(block_bytes):
                block = conform(_frames(data, channels), source_rate, source_rate)
                samples += block.size
                yield resampler.resample_chunk(block) if resampler else block
            finished = True
        finally:
            process.stdout.close()
            if not finished:
                process.kill()
            process.wait()
        if process.returncode != 0 or samples == 0:
            errors.seek(0)
            raise _ffmpeg_failure(path, errors.read())
        if resampler:
            yield resampler.resample_chunk(np.zeros(0, np.float32), last=True)


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


def load_clip(path, sample_rate, clip_samples, segment_samples, num_segments, min_samples=1, padding="loop"):
    """Decodes ``path`` and returns a (num_segments, segment_samples) array of one clip.

    The clip is padded (``PADDINGS[padding]``) or cut to ``clip_samples`` first, so every
    clip is segmented the same way whatever its length. Audio shorter than ``min_samples``
    raises AudioDecodeError: padding a few samples into a clip would make a constant, not a sound.
    """
    audio = decode(path, sample_rate)
    if audio.size < min_samples:
        raise AudioDecodeError(f"too short: {audio.size / sample_rate:.3f} s, the minimum is "
                               f"{min_samples / sample_rate:.3f} s (--min-seconds): {path}")
    return segment(PADDINGS[padding](audio, clip_samples), segment_samples, num_segments)
