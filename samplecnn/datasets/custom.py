"""Custom data sets: a folder of class sub-folders, or a CSV of ``path,labels[,split]``."""
import collections
import math
import os
import pathlib
import random
import re
import warnings

from samplecnn.audio import is_audio_file
from samplecnn.datasets.base import (MULTICLASS, MULTILABEL, SPLITS, Clip, DatasetIndex, DatasetSpec,
                                     LayoutError, fold_split)

LABEL_SEPARATOR = ";"
DEFAULTS = dict(sample_rate=22050, clip_seconds=1.0, segment_samples=22050, val_fraction=0.1,
                test_fraction=0.1, threshold=0.5, shard_bytes=64 * 2**20)
MIN_FOLDS = 3
"""A fold run tests on one fold, validates on the next and trains on the others: at least one."""
FOLD_OPTIONS = ("folds", "group_pattern", "fold_column")


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


def index_folder(raw_dir, name, seed=0, val_fraction=None, test_fraction=None, folds=None, group_pattern=None,
                 **spec_options):
    """Single-label data set: each sub-folder of ``raw_dir`` is a class of audio files.

    With ``folds`` K it is a fold set: K stratified folds instead of train/val/test, where
    clips whose file names share ``group_pattern``'s group (e.g. a speaker id) share a fold.
    """
    check_fold_options(folds, val_fraction, test_fraction)
    if group_pattern is not None and folds is None:
        raise ValueError("--group-pattern keeps each group in one fold: it needs --folds K")
    raw_dir = pathlib.Path(raw_dir)
    if not raw_dir.is_dir():
        raise LayoutError(f"--raw-dir {raw_dir} is not a folder: expected one sub-folder of audio files per class")
    classes = sorted(p.name for p in raw_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = {str(f): (c,) for c in classes for f in sorted((raw_dir / c).rglob("*")) if is_audio_file(f)}
    classes = sorted({labels[0] for labels in files.values()})
    if len(classes) < 2:
        raise LayoutError(f"{raw_dir} needs at least two sub-folders (one per class) holding audio files; "
                          f"found classes {classes}")
    notes = []
    if folds:
        splits, notes = stratified_group_folds(files, folds, seed, group_pattern)
    else:
        splits = stratified_split(files, *_fractions(val_fraction, test_fraction), seed)
    clips = [Clip(str(pathlib.Path(f).relative_to(raw_dir)), f, labels, splits[f]) for f, labels in files.items()]
    spec = custom_spec(name, classes, MULTICLASS, **_spec_values(spec_options))
    return DatasetIndex(spec, clips, notes=notes, folds=[str(k) for k in range(folds or 0)])


def check_fold_options(folds, val_fraction, test_fraction):
    """Raises ValueError for a fold count no cross-validation can use, or fractions given with folds."""
    if folds is None:
        return
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < MIN_FOLDS:
        raise ValueError(f"--folds must be a whole number >= {MIN_FOLDS} (each fold run tests on one fold, validates "
                         f"on the next and trains on the rest), got {folds!r}")
    refuse_fractions(val_fraction, test_fraction)


def refuse_fractions(val_fraction, test_fraction):
    if val_fraction is not None or test_fraction is not None:
        raise ValueError("--val-fraction and --test-fraction do not apply to a fold set: its folds take turns as "
                         "test and validation data; drop them")


def _fractions(val_fraction, test_fraction):
    return (DEFAULTS["val_fraction"] if val_fraction is None else val_fraction,
            DEFAULTS["test_fraction"] if test_fraction is None else test_fraction)


def group_of(name, pattern):
    """The group of a file name: ``pattern``'s first capturing group (or whole match), None if it does not match."""
    match = pattern.search(name)
    if match is None:
        return None
    return match.group(1) if pattern.groups else match.group(0)


def stratified_group_folds(files, folds, seed, group_pattern=None):
    """({file: fold split}, notes): ``folds`` folds with about the same share of every class,
    seeded; files whose names share ``group_pattern``'s group never span two folds.

    Without a pattern every file is its own group. ``files`` maps a path to its one label.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    keys = sorted(files)
    if group_pattern is None:
        groups = keys
    else:
        try:
            pattern = re.compile(group_pattern)
        except re.error as error:
            raise ValueError(f"--group-pattern {group_pattern!r} is not a regular expression: {error}") from None
        groups = [group_of(pathlib.Path(key).name, pattern) for key in keys]
        unmatched = [pathlib.Path(key).name for key, group in zip(keys, groups) if group is None]
        if unmatched:
            raise LayoutError(f"{len(unmatched)} of {len(keys)} file names do not match --group-pattern "
                              f"{group_pattern!r} (e.g. {', '.join(unmatched[:3])}); every clip needs a group: fix "
                              "the pattern or rename those files")
    if len(set(groups)) < folds:
        raise LayoutError(f"{len(set(groups))} {'groups' if group_pattern else 'clips'} cannot fill {folds} folds: "
                          "lower --folds")
    labels = [files[key][0] for key in keys]
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    splits = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a class in fewer groups than folds: noted below
        for k, (_, test) in enumerate(splitter.split(keys, labels, groups)):
            splits.update((keys[i], fold_split(k)) for i in test)
    groups_per_class = collections.defaultdict(set)
    for label, group in zip(labels, groups):
        groups_per_class[label].add(group)
    notes = [f"class {label} has clips of only {len(members)} {'group' if group_pattern else 'clip'}(s), so "
             f"{folds - len(members)} of the {folds} folds have none of it"
             for label, members in sorted(groups_per_class.items()) if len(members) < folds]
    return splits, notes


def index_csv(csv_path, name, seed=0, val_fraction=None, test_fraction=None, fold_column=None, **spec_options):
    """Data set from a CSV with columns ``path,labels[,split]``; labels separated by ';'.

    Relative paths are relative to the CSV's folder. Rows without a split are split
    stratified per class; the task is multi-label when any row has several labels. With
    ``fold_column`` it is a fold set: that column names every clip's fold.
    """
    import pandas as pd

    csv_path = pathlib.Path(csv_path)
    if not csv_path.is_file():
        raise LayoutError(f"--csv {csv_path} does not exist: expected a CSV with columns path,labels[,split]")
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    if not {"path", "labels"} <= set(table.columns):
        raise LayoutError(f"{csv_path} must have columns path,labels[,split] (labels separated by "
                          f"'{LABEL_SEPARATOR}'); found {list(table.columns)}")
    folds = []
    if fold_column is not None:
        refuse_fractions(val_fraction, test_fraction)
        folds = csv_folds(table, csv_path, fold_column)
    if "split" not in table.columns:
        table["split"] = ""
    bad = sorted(set(table["split"]) - set(SPLITS) - {""} - {fold_split(k) for k in range(len(folds))})
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
    splits = stratified_split({k: v for k, v in items.items() if k not in fixed},
                              *_fractions(val_fraction, test_fraction), seed)
    splits.update(fixed)
    classes = sorted({label for labels in items.values() for label in labels})
    task = MULTILABEL if any(len(labels) > 1 for labels in items.values()) else MULTICLASS
    clips = [Clip(path_key(p, csv_path.parent), p, labels, splits[p]) for p, labels in items.items()]
    spec = custom_spec(name, classes, task, **_spec_values(spec_options))
    notes = [f"{csv_path.name} lists {len(repeated)} file(s) more than once with the same labels; each is used once "
             f"({'; '.join(repeated[:3])}{'; ...' if len(repeated) > 3 else ''})"] if repeated else []
    return DatasetIndex(spec, clips, notes=notes, folds=folds)


def csv_folds(table, csv_path, column):
    """The fold names of a CSV's ``column`` in order (numerically when all are whole numbers);
    puts each row's fold split into its ``split`` column. Raises LayoutError for a missing
    column, a row without a fold, a ``split`` column in use, or fewer than MIN_FOLDS folds."""
    if column not in table.columns:
        raise LayoutError(f"--fold-column {column}: {csv_path} has no column {column!r}; its columns are "
                          f"{list(table.columns)}")
    if "split" in table.columns and any(table["split"]):
        raise LayoutError(f"{csv_path} has both a split column and the fold column {column!r}: a fold set has no "
                          "fixed split (its folds take turns as test and validation data); drop one of them")
    values = table[column].str.strip()
    empty = [line for line, value in enumerate(values, start=2) if not value]
    if empty:
        raise LayoutError(f"{csv_path}: line {empty[0]} has no {column!r} value ({len(empty)} row(s) without one); "
                          "every clip needs its fold")
    names = sorted(set(values), key=lambda v: (0, int(v), v) if v.lstrip("-").isdigit() else (1, 0, v))
    if len(names) < MIN_FOLDS:
        raise LayoutError(f"{csv_path}: column {column!r} names {len(names)} fold(s) ({', '.join(names)}); "
                          f"cross-validation needs at least {MIN_FOLDS}")
    table["split"] = values.map({name: fold_split(k) for k, name in enumerate(names)})
    return names


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
