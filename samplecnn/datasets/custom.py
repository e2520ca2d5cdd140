"""Custom data sets: a folder of class sub-folders, or a CSV of ``path,labels[,split]``."""
import collections
import math
import os
import pathlib
import random

from samplecnn.audio import is_audio_file
from samplecnn.datasets.base import (MULTICLASS, MULTILABEL, SPLITS, Clip, DatasetIndex, DatasetSpec,
                                     LayoutError)

LABEL_SEPARATOR = ";"
DEFAULTS = dict(sample_rate=22050, clip_seconds=1.0, segment_samples=22050, val_fraction=0.1,
                test_fraction=0.1, threshold=0.5, shard_bytes=64 * 2**20)


def blocks_for(segment_samples):
    """Largest block count whose receptive field 3 ** (blocks + 1) fits in a segment."""
    blocks = int(math.floor(math.log(segment_samples, 3) + 1e-9)) - 1
    if blocks < 3:
        raise ValueError(f"segments of {segment_samples} samples are too short: need at least 81 (3 ** 4)")
    return blocks


def custom_spec(name, classes, task, sample_rate, clip_seconds, segment_samples, threshold=None):
    """A DatasetSpec for user data; shards hold about 64 MB of int16 audio."""
    clip_samples = int(round(clip_seconds * sample_rate))
    segments = clip_samples // segment_samples
    if segments < 1:
        raise ValueError(f"--clip-seconds {clip_seconds} at {sample_rate} Hz ({clip_samples} samples) is shorter "
                         f"than one segment of {segment_samples} samples; raise --clip-seconds or lower "
                         "--segment-samples")
    clip_bytes = 2 * segments * segment_samples
    return DatasetSpec(
        name=name, sample_rate=sample_rate, clip_seconds=clip_seconds, segment_samples=segment_samples,
        segments_per_clip=segments, num_blocks=blocks_for(segment_samples), classes=tuple(classes), task=task,
        threshold=(DEFAULTS["threshold"] if threshold is None else threshold) if task == MULTILABEL else None,
        clips_per_shard=max(1, min(1000, DEFAULTS["shard_bytes"] // clip_bytes)))


def stratified_split(items, val_fraction, test_fraction, seed):
    """{key: split} with about the given fractions of each class in val and test (seeded).

    ``items`` maps a key to its labels; a multi-label item is stratified by its rarest label.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError("--val-fraction and --test-fraction must be in [0, 1) and sum to less than 1")
    counts = collections.Counter(label for labels in items.values() for label in labels)
    groups = collections.defaultdict(list)
    for key, labels in sorted(items.items()):
        groups[min(labels, key=lambda label: (counts[label], label))].append(key)
    rng, splits = random.Random(seed), {}
    for _, keys in sorted(groups.items()):
        rng.shuffle(keys)
        n_test, n_val = round(test_fraction * len(keys)), round(val_fraction * len(keys))
        for i, key in enumerate(keys):
            splits[key] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return splits


def index_folder(raw_dir, name, seed=0, val_fraction=DEFAULTS["val_fraction"],
                 test_fraction=DEFAULTS["test_fraction"], **spec_options):
    """Single-label data set: each sub-folder of ``raw_dir`` is a class of audio files."""
    raw_dir = pathlib.Path(raw_dir)
    if not raw_dir.is_dir():
        raise LayoutError(f"--raw-dir {raw_dir} is not a folder: expected one sub-folder of audio files per class")
    classes = sorted(p.name for p in raw_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = {str(f): (c,) for c in classes for f in sorted((raw_dir / c).rglob("*")) if is_audio_file(f)}
    classes = sorted({labels[0] for labels in files.values()})
    if len(classes) < 2:
        raise LayoutError(f"{raw_dir} needs at least two sub-folders (one per class) holding audio files; "
                          f"found classes {classes}")
    splits = stratified_split(files, val_fraction, test_fraction, seed)
    clips = [Clip(str(pathlib.Path(f).relative_to(raw_dir)), f, labels, splits[f]) for f, labels in files.items()]
    spec = custom_spec(name, classes, MULTICLASS, **_spec_values(spec_options))
    return DatasetIndex(spec, clips)


def index_csv(csv_path, name, seed=0, val_fraction=DEFAULTS["val_fraction"],
              test_fraction=DEFAULTS["test_fraction"], **spec_options):
    """Data set from a CSV with columns ``path,labels[,split]``; labels separated by ';'.

    Relative paths are relative to the CSV's folder. Rows without a split are split
    stratified per class; the task is multi-label when any row has several labels.
    """
    import pandas as pd

    csv_path = pathlib.Path(csv_path)
    if not csv_path.is_file():
        raise LayoutError(f"--csv {csv_path} does not exist: expected a CSV with columns path,labels[,split]")
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    if not {"path", "labels"} <= set(table.columns):
        raise LayoutError(f"{csv_path} must have columns path,labels[,split] (labels separated by "
                          f"'{LABEL_SEPARATOR}'); found {list(table.columns)}")
    if "split" not in table.columns:
        table["split"] = ""
    bad = sorted(set(table["split"]) - set(SPLITS) - {""})
    if bad:
        raise LayoutError(f"{csv_path}: split must be one of {', '.join(SPLITS)} or empty, found {bad}")
    items, fixed, line_of, repeated = {}, {}, {}, []
    for line, row in enumerate(table.itertuples(index=False), start=2):
        labels = tuple(sorted({x.strip() for x in row.labels.split(LABEL_SEPARATOR) if x.strip()}))
        if not labels:
            raise LayoutError(f"{csv_path}: row for {row.path!r} has no labels")
        path = os.path.normpath(csv_path.parent / row.path)
        if path in items:
            check_repeated_row(csv_path, row, line, line_of[path], (items[path], fixed.get(path, "")), labels)
            repeated.append(f"lines {line_of[path]} and {line}: {row.path}")
            continue
        items[path], line_of[path] = labels, line
        if row.split:
            fixed[path] = row.split
    splits = stratified_split({k: v for k, v in items.items() if k not in fixed}, val_fraction, test_fraction, seed)
    splits.update(fixed)
    classes = sorted({label for labels in items.values() for label in labels})
    task = MULTILABEL if any(len(labels) > 1 for labels in items.values()) else MULTICLASS
    clips = [Clip(path_key(p, csv_path.parent), p, labels, splits[p]) for p, labels in items.items()]
    spec = custom_spec(name, classes, task, **_spec_values(spec_options))
    notes = [f"{csv_path.name} lists {len(repeated)} file(s) more than once with the same labels; each is used once "
             f"({'; '.join(repeated[:3])}{'; ...' if len(repeated) > 3 else ''})"] if repeated else []
    return DatasetIndex(spec, clips, notes=notes)


def check_repeated_row(csv_path, row, line, first_line, first, labels):
    """Raises LayoutError when a file listed again (``./x.wav`` is ``x.wav``) gets other labels
    or another split than on its first line: which one is right cannot be guessed."""
    first_labels, first_split = first
    if labels != first_labels:
        raise LayoutError(f"{csv_path}: lines {first_line} and {line} list {row.path!r} with different labels "
                          f"({LABEL_SEPARATOR.join(first_labels)!r} and {LABEL_SEPARATOR.join(labels)!r}); keep one "
                          "row per file with all its labels")
    if row.split != first_split:
        raise LayoutError(f"{csv_path}: lines {first_line} and {line} put {row.path!r} in different splits "
                          f"({first_split or 'none'!r} and {row.split or 'none'!r}); keep one row per file")


def path_key(path, root):
    path = pathlib.Path(path)
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _spec_values(options):
    values = {k: DEFAULTS[k] for k in ("sample_rate", "clip_seconds", "segment_samples")}
    values.update({k: v for k, v in options.items() if v is not None})
    return values
