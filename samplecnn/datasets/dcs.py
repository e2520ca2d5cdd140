"""DCASE 2017 Task 4 weakly labelled sound events: 17 classes."""
import pathlib
import random

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


def csv_name(part):
    return f"groundtruth_weak_label_{part}_set.csv"


def read_weak_labels(path):
    """{file: set of labels} of a tab-separated ``file start end label`` CSV (LF or CRLF)."""
    labels = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        if len(fields) != 4 or fields[3] not in CLASSES:
            raise LayoutError(
                f"{path}, line {number}: expected 4 tab-separated fields 'file start end label' with one "
                f"of the {len(CLASSES)} DCASE 2017 Task 4 labels, got {line!r}. Download the ground-truth "
                "CSVs again as the README shows.")
        labels.setdefault(fields[0], set()).add(fields[3])
    return labels


def audio_files_by_name(raw_dir):
    """{name without the leading 'Y': path} of every downloaded clip below ``raw_dir``."""
    return {p.name[1:]: p for p in sorted(raw_dir.rglob("Y*")) if p.is_file() and is_audio_file(p)}


def pick_validation(train_labels, seed):
    """Seeded choice of about VAL_FRACTION of the files of each class for validation.

    Rarest classes choose first, and single-label files are preferred, so that
    multi-label files chosen for one class overshoot the others as little as possible.
    """
    rng, chosen = random.Random(seed), set()
    by_class = {c: sorted(f for f, labels in train_labels.items() if c in labels) for c in CLASSES}
    for label in sorted(CLASSES, key=lambda c: (len(by_class[c]), c)):
        files = by_class[label]
        wanted = round(VAL_FRACTION * len(files)) - sum(f in chosen for f in files)
        candidates = [f for f in files if f not in chosen]
        rng.shuffle(candidates)
        candidates.sort(key=lambda f: len(train_labels[f]))
        chosen.update(candidates[:max(0, wanted)])
    return chosen


@register_indexer("dcs")
def index(raw_dir, seed=0):
    """Clip table of the DCASE 2017 Task 4 download in ``raw_dir``.

    The training and testing CSVs form the train split, of which about 10% of each
    class goes to val (seeded); the evaluation CSV is the test split. Audio files are
    found anywhere below ``raw_dir`` by their name with the leading 'Y'.
    """
    raw_dir = pathlib.Path(raw_dir)
    tables = {part: read_weak_labels(require(raw_dir / csv_name(part), "DCASE 2017 Task 4 ground truth", "dcs"))
              for part in CSV_SPLITS}
    train_labels = {name: set(labels) for name, labels in tables["training"].items()}
    for name, labels in tables["testing"].items():
        train_labels.setdefault(name, set()).update(labels)
    val = pick_validation(train_labels, seed)
    audio = audio_files_by_name(raw_dir)
    if not audio:
        raise LayoutError(f"no audio files named Y*.wav below {raw_dir}: unzip the three DCASE 2017 Task 4 "
                          "audio archives there as the README shows.")
    clips, failures = [], []
    for labels_by_file, default_split in ((train_labels, "train"), (tables["evaluation"], "test")):
        for name, labels in sorted(labels_by_file.items()):
            split = "val" if name in val else default_split
            if name not in audio:
                failures.append({"path": str(raw_dir / f"Y{name}"), "split": split,
                                 "error": "listed in the ground-truth CSV but no audio file Y<name> was found"})
                continue
            ordered = tuple(c for c in CLASSES if c in labels)
            clips.append(Clip(name.rsplit(".", 1)[0], str(audio[name]), ordered, split))
    return DatasetIndex(SPEC, clips, failures=failures)
