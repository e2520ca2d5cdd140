"""Speech Commands v0.02 keyword spotting: 35 words, alphabetical."""
import pathlib

from samplecnn.datasets.base import (MULTICLASS, Clip, DatasetIndex, DatasetSpec, LayoutError, register_indexer,
                                     register_spec, require)

CLASSES = (
    "backward",
    "bed",
    "bird",
    "cat",
    "dog",
    "down",
    "eight",
    "five",
    "follow",
    "forward",
    "four",
    "go",
    "happy",
    "house",
    "learn",
    "left",
    "marvin",
    "nine",
    "no",
    "off",
    "on",
    "one",
    "right",
    "seven",
    "sheila",
    "six",
    "stop",
    "three",
    "tree",
    "two",
    "up",
    "visual",
    "wow",
    "yes",
    "zero",
)

SPEC = register_spec(DatasetSpec(
    name="scd",
    sample_rate=22050,
    clip_seconds=1.0,
    segment_samples=22050,
    segments_per_clip=1,
    num_blocks=8,
    classes=CLASSES,
    task=MULTICLASS,
    threshold=None,
    clips_per_shard=1000,
))

BACKGROUND_NOISE = "_background_noise_"


def read_list(path):
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


@register_indexer("scd")
def index(raw_dir):
    """Clip table of the unpacked speech_commands_v0.02.tar.gz in ``raw_dir``.

    Word folders hold the clips; validation_list.txt and testing_list.txt name the val
    and test clips (``word/file.wav``); the rest is train; ``_background_noise_`` is skipped.
    """
    raw_dir = pathlib.Path(raw_dir)
    val = read_list(require(raw_dir / "validation_list.txt", "Speech Commands validation list", "scd"))
    test = read_list(require(raw_dir / "testing_list.txt", "Speech Commands testing list", "scd"))
    folders = sorted(p.name for p in raw_dir.iterdir() if p.is_dir() and p.name != BACKGROUND_NOISE)
    unknown = sorted(set(folders) - set(CLASSES))
    if unknown:
        raise LayoutError(f"{raw_dir} has folders that are not Speech Commands v0.02 words: {unknown}. "
                          f"Expected only the {len(CLASSES)} word folders and {BACKGROUND_NOISE}.")
    clips = []
    for word in folders:
        for wav in sorted((raw_dir / word).glob("*.wav")):
            key = f"{word}/{wav.name}"
            split = "test" if key in test else "val" if key in val else "train"
            clips.append(Clip(key, str(wav), (word,), split))
    if not clips:
        raise LayoutError(f"no word folders with .wav files in {raw_dir}: unpack speech_commands_v0.02.tar.gz "
                          "there as the README shows.")
    listed = {c.clip_id for c in clips}
    failures = [{"path": str(raw_dir / key), "split": "test" if key in test else "val",
                 "error": "listed in testing_list.txt/validation_list.txt but the file does not exist"}
                for key in sorted((val | test) - listed)]
    return DatasetIndex(SPEC, clips, failures=failures)
