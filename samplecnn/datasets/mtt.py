"""MagnaTagATune music auto-tagging: 50 most frequent tags, least frequent first."""
import dataclasses
import pathlib

from samplecnn.datasets.base import (MULTILABEL, Clip, DatasetIndex, DatasetSpec, LayoutError, register_indexer,
                                     register_spec, require)

CLASSES = (
    "choral",
    "female voice",
    "metal",
    "country",
    "weird",
    "no voice",
    "cello",
    "harp",
    "beats",
    "female vocal",
    "male voice",
    "dance",
    "new age",
    "voice",
    "choir",
    "classic",
    "man",
    "solo",
    "sitar",
    "soft",
    "pop",
    "no vocal",
    "male vocal",
    "woman",
    "flute",
    "quiet",
    "loud",
    "harpsichord",
    "no vocals",
    "vocals",
    "singing",
    "male",
    "opera",
    "indian",
    "female",
    "synth",
    "vocal",
    "violin",
    "beat",
    "ambient",
    "piano",
    "fast",
    "rock",
    "electronic",
    "drums",
    "strings",
    "techno",
    "slow",
    "classical",
    "guitar",
)

SPEC = register_spec(DatasetSpec(
    name="mtt",
    sample_rate=22050,
    clip_seconds=29.0,
    segment_samples=59049,
    segments_per_clip=10,
    num_blocks=9,
    classes=CLASSES,
    task=MULTILABEL,
    threshold=0.5,
    clips_per_shard=100,
))

TRAIN_FOLDERS = frozenset("0123456789ab")
VAL_FOLDERS = frozenset("c")
TEST_FOLDERS = frozenset("def")


def top_tags(annotations, tag_columns, count):
    """The ``count`` most frequent tags, least frequent first (ties keep column order)."""
    counts = annotations[tag_columns].astype(int).sum()
    return list(counts.sort_values(kind="stable").index[-count:])


def split_of(mp3_path):
    folder = mp3_path.split("/", 1)[0]
    for split, folders in (("train", TRAIN_FOLDERS), ("val", VAL_FOLDERS), ("test", TEST_FOLDERS)):
        if folder in folders:
            return split
    return None


@register_indexer("mtt")
def index(raw_dir):
    """Clip table of ``raw_dir/annotations_final.csv`` + ``raw_dir/mp3/{0..f}/*.mp3``.

    Splits by the mp3 folder (0-b train, c val, d-f test); keeps the 50 most frequent
    tags and drops clips that have none of them.
    """
    import pandas as pd

    raw_dir = pathlib.Path(raw_dir)
    csv_path = require(raw_dir / "annotations_final.csv", "MagnaTagATune annotations", "mtt")
    require(raw_dir / "mp3", "MagnaTagATune mp3 folder", "mtt")
    annotations = pd.read_csv(csv_path, sep="\t", dtype=str, keep_default_na=False)
    missing = {"clip_id", "mp3_path"} - set(annotations.columns)
    tag_columns = [c for c in annotations.columns if c not in ("clip_id", "mp3_path")]
    if missing or len(tag_columns) < len(CLASSES):
        raise LayoutError(
            f"{csv_path} is not the MagnaTagATune annotations file: expected tab-separated columns "
            f"clip_id, at least {len(CLASSES)} tags and mp3_path; found {list(annotations.columns)[:5]}... "
            "Download annotations_final.csv again as the README shows.")

    found = top_tags(annotations, tag_columns, len(CLASSES))
    notes, classes = [], list(CLASSES)
    if set(found) != set(CLASSES):
        classes = found
        notes.append(f"top-{len(CLASSES)} tags differ from the paper's list: using the file's "
                     f"(added {sorted(set(found) - set(CLASSES))}, dropped {sorted(set(CLASSES) - set(found))})")

    tags = annotations[classes].to_numpy() == "1"
    clips = []
    for row, has in zip(annotations.itertuples(index=False), tags):
        split = split_of(row.mp3_path)
        if split is None or not has.any():
            continue
        labels = tuple(c for c, on in zip(classes, has) if on)
        clips.append(Clip(row.clip_id, str(raw_dir / "mp3" / row.mp3_path), labels, split))
    spec = SPEC if classes == list(CLASSES) else dataclasses.replace(SPEC, classes=tuple(classes))
    return DatasetIndex(spec, clips, notes=notes)
