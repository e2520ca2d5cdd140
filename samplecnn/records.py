"""TFRecord files of audio segments, written without importing TensorFlow.

Build workers only decode audio and write records, so they encode the two protobuf
messages they need (tf.train.Example, tf.train.SequenceExample) and the TFRecord framing
directly; TensorFlow reads the result (see samplecnn.pipeline). This keeps each worker
process at a few dozen MB instead of the ~700 MB a TensorFlow import costs.

Train and val: one Example per segment with features ``audio`` (PCM bytes), ``label``
(multi-hot uint8 bytes) and ``clip_id``. Test: one SequenceExample per clip with context
``label`` and ``clip_id`` and a feature list ``audio`` holding every segment.
"""
import hashlib
import os
import pathlib
import struct

import google_crc32c
import numpy as np

SAMPLE_DTYPES = {"int16": "<i2", "float32": "<f4"}
INT16_SCALE = 32768.0


def to_pcm(audio, sample_dtype):
    """Samples in [-1, 1] as little-endian bytes of ``sample_dtype`` (int16 or float32)."""
    if sample_dtype == "int16":
        return np.clip(np.round(audio * INT16_SCALE), -INT16_SCALE, INT16_SCALE - 1).astype("<i2")
    if sample_dtype == "float32":
        return audio.astype("<f4")
    raise ValueError(f"sample dtype must be one of {sorted(SAMPLE_DTYPES)}, got {sample_dtype!r}")


def from_pcm(data, sample_dtype):
    """Inverse of to_pcm: float32 samples in [-1, 1]."""
    audio = np.frombuffer(data, dtype=SAMPLE_DTYPES[sample_dtype]).astype(np.float32)
    return audio / INT16_SCALE if sample_dtype == "int16" else audio


def pcm_moments(pcm, sample_dtype):
    """(sum, sum of squares) of the float samples that ``pcm`` stores, without converting it:
    int16 moments are exact integer sums, scaled once."""
    if sample_dtype == "int16":
        total = float(pcm.sum(dtype=np.int64)) / INT16_SCALE
        return total, float(np.square(pcm, dtype=np.int64).sum()) / INT16_SCALE ** 2
    values = pcm.astype(np.float64)
    return float(values.sum()), float(np.square(values).sum())


def _varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number, payload):
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _bytes_feature(*values):
    # Feature.bytes_list (1) -> BytesList.value (1, repeated)
    return _field(1, b"".join(_field(1, v) for v in values))


def _features(mapping):
    # Features.feature (1): map entries {key (1), value (2)}
    return b"".join(_field(1, _field(1, key.encode()) + _field(2, value)) for key, value in mapping.items())


def segment_example(audio_pcm, label, clip_id):
    """Serialized tf.train.Example of one segment."""
    return _field(1, _features({
        "audio": _bytes_feature(audio_pcm.tobytes()),
        "label": _bytes_feature(label.tobytes()),
        "clip_id": _bytes_feature(clip_id.encode()),
    }))


def clip_sequence_example(segments_pcm, label, clip_id):
    """Serialized tf.train.SequenceExample of one clip with all its segments."""
    context = _features({"label": _bytes_feature(label.tobytes()),
                         "clip_id": _bytes_feature(clip_id.encode())})
    # FeatureLists.feature_list (1): map entries {key (1), FeatureList (2)}; FeatureList.feature (1)
    audio_list = b"".join(_field(1, _bytes_feature(s.tobytes())) for s in segments_pcm)
    feature_lists = _field(1, _field(1, b"audio") + _field(2, audio_list))
    return _field(1, context) + _field(2, feature_lists)


def _masked_crc(data):
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(record):
    """A record in TFRecord framing: length, its CRC, the data, its CRC."""
    length = struct.pack("<Q", len(record))
    return length + struct.pack("<I", _masked_crc(length)) + record + struct.pack("<I", _masked_crc(record))


def read_records(path):
    """Yields the records of a TFRecord file, checking its framing and both CRCs of every
    record; raises ValueError naming the first damage."""
    with open(path, "rb") as f:
        while header := f.read(12):
            if len(header) < 12:
                raise ValueError(f"{path}: file ends inside a record header")
            length, length_crc = struct.unpack("<QI", header)
            if length_crc != _masked_crc(header[:8]):
                raise ValueError(f"{path}: damaged record length")
            data, footer = f.read(length), f.read(4)
            if len(data) < length or len(footer) < 4:
                raise ValueError(f"{path}: file ends inside a record")
            if struct.unpack("<I", footer)[0] != _masked_crc(data):
                raise ValueError(f"{path}: record checksum mismatch")
            yield data


def file_crc32c(path, block=1 << 20):
    """CRC-32C of a whole file, as 8 hex digits."""
    crc = 0
    with open(path, "rb") as f:
        while data := f.read(block):
            crc = google_crc32c.extend(crc, data)
    return f"{crc:08x}"


class AtomicWriter:
    """Writes a file under a temporary name and renames it only when complete.

    A crash, Ctrl-C or full disk leaves at most a ``*.tmp-<pid>`` file, never a
    half-written file under the final name.
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.tmp_path = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        self._file = None

    def __enter__(self):
        self._file = open(self.tmp_path, "wb")
        return self._file

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self._file.flush()
            os.fsync(self._file.fileno())
        self._file.close()
        if exc_type is None:
            os.replace(self.tmp_path, self.path)
        else:
            self.tmp_path.unlink(missing_ok=True)
        return False


def file_sha256(path):
    """The hex SHA-256 of a file, read in 1 MiB blocks (checkpoints can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text_atomic(path, text):
    with AtomicWriter(path) as f:
        f.write(text.encode())
