"""DCASE 2017 Task 4 weakly labelled sound events: 17 classes."""
import pathlib

import numpy as np

from samplecnn.audio import is_audio_file
from samplecnn.datasets.base import (MULTILABEL, Clip, DatasetIndex, DatasetSpec, LayoutError, register_indexer,
                                     register_spec, require)

CLASSES = (
    "Train horn",
    "Air horn, truck horn",
    "Car alarm",
    "Reversing beeps",
    "Ambulance (siren)",
    "Police car (siren)",
    "Fire engine, fire truck (siren)",
    "Civil defense siren",
    "Screaming",
    "Bicycle",
    "Skateboard",
    "Car",
    "Car passing by",
    "Bus",
    "Truck",
    "Motorcycle",
    "Train",
)

SPEC = register_spec(DatasetSpec(
    name="dcs",
    sample_rate=22050,
    clip_seconds=10.0,
    segment_samples=22050,
    segments_per_clip=10,
    num_blocks=8,
    classes=CLASSES,
    task=MULTILABEL,
    threshold=0.1,
    clips_per_shard=300,
))

CSV_SPLITS = {"training": "train", "testing": "train", "evaluation": "test"}
VAL_FRACTION = 0.1
VAL_RANDOM_STATE = 123
"""The 2019 code's validation split: per class, pandas ``sample(frac=0.1, random_state=123)``."""


def csv_name(part):
    return f"groundtruth_weak_label_{part}_set.csv"


def read_weak_label_rows(path):
    """(file, label) of every row of a tab-separated ``file start end label`` CSV (LF or CRLF), in order."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        if len(fields) != 4 or fields[3] not in CLASSES:
            raise LayoutError(
                f"{path}, line {number}: expected 4 tab-separated fields 'file start end label' with one "
                f"of the {len(CLASSES)} DCASE 2017 Task 4 labels, got {line!r}. Download the ground-truth "
                "CSVs again as the README shows.")
        rows.append((fields[0], fields[3]))
    return rows


def labels_by_file(rows):
    """{file: set of labels} of (file, label) rows."""
    labels = {}
    for name, label in rows:
        labels.setdefault(name, set()).add(label)
    return labels


def read_weak_labels(path):
    """{file: set of labels} of a ground-truth CSV."""
    return labels_by_file(read_weak_label_rows(path))


def audio_files_by_name(raw_dir):
    """{name without the leading 'Y': path} of every downloaded clip below ``raw_dir``."""
    return {p.name[1:]: p for p in sorted(raw_dir.rglob("Y*")) if p.is_file() and is_audio_file(p)}


def pick_validation(rows):
    """The files of the 2019 code's validation split of the (file, label) rows of the
    training and testing CSVs, in that order.

    For each class, the 2019 code took ``rows[rows.label == c].sample(frac=0.1,
    random_state=123)``: pandas draws ``round(0.1 * n)`` of the class's n rows as the first
    positions of ``numpy.random.RandomState(123).permutation(n)``. Every file of a drawn row
    is a validation file. The draw is over all listed rows, whatever audio is present.
    """
    chosen = set()
    for label in CLASSES:
        files = [name for name, row_label in rows if row_label == label]
        picked = np.random.RandomState(VAL_RANDOM_STATE).permutation(len(files))[:round(VAL_FRACTION * len(files))]
        chosen.update(files[i] for i in picked)
    return chosen


@register_indexer("dcs")
def index(raw_dir):
    """Clip table of the DCASE 2017 Task 4 download in ``raw_dir``.

    The training and testing CSVs form the train split, of which the files the 2019 code
    chose go to val (:func:`pick_validation`: 46042 train and 5618 val clips on a full
    download); the evaluation CSV is the test split (1103 clips). Listed clips without
    audio are failures, and so are audio files that no CSV lists. Audio files are found
    anywhere below ``raw_dir`` by their name with the leading 'Y'.
    """
    raw_dir = pathlib.Path(raw_dir)
    rows = {part: read_weak_label_rows(require(raw_dir / csv_name(part), "DCASE 2017 Task 4 ground truth", "dcs"))
            for part in CSV_SPLITS}
    train_rows = rows["training"] + rows["testing"]
    val = pick_validation(train_rows)
    audio = audio_files_by_name(raw_dir)
    if not audio:
        raise LayoutError(f"no audio files named Y*.wav below {raw_dir}: unzip the three DCASE 2017 Task 4 "
                          "audio archives there as the README shows.")
    clips, failures = [], []
    tables = ((labels_by_file(train_rows), "train"), (labels_by_file(rows["evaluation"]), "test"))
    for labels_of, default_split in tables:
        for name, labels in sorted(labels_of.items()):
            split = "val" if name in val else default_split
            if name not in audio:
                failures.append({"path": str(raw_dir / f"Y{name}"), "split": split,
                                 "error": "listed in the ground-truth CSV but no audio file Y<name> was found"})
                continue
            ordered = tuple(c for c in CLASSES if c in labels)
            clips.append(Clip(name.rsplit(".", 1)[0], str(audio[name]), ordered, split))
    listed = {name for labels_of, _ in tables for name in labels_of}
    failures += [{"path": str(path), "split": None, "error": "audio file not listed in any ground-truth CSV; not used"}
                 for name, path in sorted(audio.items()) if name not in listed]
    return DatasetIndex(SPEC, clips, failures=failures)
