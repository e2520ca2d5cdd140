"""Raw layout -> clip table -> sharded TFRecords + manifest.json, in parallel and resumable.

Every shard is one unit of work: a worker process decodes its clips, writes the shard
under a temporary name, renames it, then writes a small sidecar with the shard's counts,
failures and sample statistics to ``.build/``. A shard counts as done only when its
sidecar exists, so a re-run after any interruption redoes just the unfinished shards,
and since a shard's bytes depend only on its clips, the result equals an uninterrupted
build. The manifest is assembled from the sidecars at the end.
"""
import concurrent.futures
import dataclasses
import datetime
import hashlib
import json
import math
import multiprocessing
import os
import pathlib
import random
import shutil
import time

import numpy as np

from samplecnn import audio, records
from samplecnn.datasets import base, custom

MANIFEST = "manifest.json"
STATE_DIR = ".build"
VERSION = "0.1.0"


@dataclasses.dataclass
class ShardTask:
    path: str
    sidecar: str
    split: str
    clips: list  # (clip_id, audio path, multi-hot label list)
    sample_rate: int
    clip_samples: int
    segment_samples: int
    segments_per_clip: int
    sample_dtype: str


@dataclasses.dataclass
class Progress:
    """Snapshot of a running build, for progress lines."""

    shards_done: int
    shards_total: int
    clips_done: int
    clips_total: int
    elapsed: float

    @property
    def clips_per_second(self):
        return self.clips_done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta_seconds(self):
        rate = self.clips_per_second
        return (self.clips_total - self.clips_done) / rate if rate > 0 else float("nan")


def shard_name(split, i, n):
    return f"{split}-{i:04d}-of-{n:04d}.tfrecord"


def write_shard(task):
    """Decodes the clips of one shard, writes it atomically and returns its summary."""
    total, total_sq, count, segments, written, failures = 0.0, 0.0, 0, 0, 0, []
    with records.AtomicWriter(task.path) as out:
        for clip_id, path, label in task.clips:
            try:
                segs = audio.load_clip(path, task.sample_rate, task.clip_samples, task.segment_samples,
                                       task.segments_per_clip)
            except Exception as error:  # one bad file must never stop the build
                failures.append({"path": path, "split": task.split, "error": str(error) or repr(error)})
                continue
            pcm = records.to_pcm(segs, task.sample_dtype)
            label = np.asarray(label, dtype=np.uint8)
            if task.split == "test":
                out.write(records.frame(records.clip_sequence_example(pcm, label, clip_id)))
            else:
                for seg in pcm:
                    out.write(records.frame(records.segment_example(seg, label, clip_id)))
            stored = records.from_pcm(pcm.tobytes(), task.sample_dtype).astype(np.float64)
            total, total_sq, count = total + stored.sum(), total_sq + np.square(stored).sum(), count + stored.size
            segments += len(pcm)
            written += 1
    summary = {"clips": written, "segments": segments, "failures": failures,
               "sum": total, "sum_sq": total_sq, "count": count}
    records.write_text_atomic(task.sidecar, json.dumps(summary))
    return summary


def plan_shards(index, out_dir, sample_dtype, seed):
    """ShardTasks for every split: train clips shuffled (seeded) so shards mix classes."""
    spec = index.spec
    class_index = {c: i for i, c in enumerate(spec.classes)}
    tasks = []
    for split in base.SPLITS:
        clips = sorted((c for c in index.clips if c.split == split), key=lambda c: c.clip_id)
        if split == "train":
            random.Random(seed).shuffle(clips)
        n = math.ceil(len(clips) / spec.clips_per_shard)
        for i in range(n):
            chunk = clips[i * spec.clips_per_shard:(i + 1) * spec.clips_per_shard]
            rows = []
            for clip in chunk:
                label = [0] * spec.num_classes
                for name in clip.labels:
                    label[class_index[name]] = 1
                rows.append((clip.clip_id, clip.path, label))
            name = shard_name(split, i, n)
            tasks.append(ShardTask(str(out_dir / name), str(out_dir / STATE_DIR / f"{name}.json"), split, rows,
                                   spec.sample_rate, spec.clip_samples, spec.segment_samples,
                                   spec.segments_per_clip, sample_dtype))
    return tasks


def fingerprint(tasks, spec):
    """Hash of everything that determines the shards' bytes."""
    digest = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode())
    for t in tasks:
        digest.update(json.dumps([t.path, t.clips, t.sample_dtype]).encode())
    return digest.hexdigest()


def prepare_output(out_dir, plan_id, overwrite):
    """Creates ``out_dir``; refuses to mix with a build of other options unless overwriting."""
    state = out_dir / STATE_DIR
    plan_file = state / "plan.json"
    if overwrite and out_dir.exists():
        for path in out_dir.glob("*.tfrecord*"):
            path.unlink()
        (out_dir / MANIFEST).unlink(missing_ok=True)
        shutil.rmtree(state, ignore_errors=True)
    if plan_file.exists() and json.loads(plan_file.read_text())["plan"] != plan_id:
        raise ValueError(f"{out_dir} holds a build made with other options or other raw files; "
                         "re-run with --overwrite to rebuild it from scratch")
    state.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.tmp-*"):
        stale.unlink()
    for stale in state.glob("*.tmp-*"):
        stale.unlink()
    records.write_text_atomic(plan_file, json.dumps({"plan": plan_id}))


def run_tasks(tasks, workers, on_done):
    """Runs write_shard over ``tasks`` in ``workers`` processes, calling ``on_done(task, summary)``."""
    if workers <= 1:
        for task in tasks:
            on_done(task, write_shard(task))
        return
    # spawn: workers never inherit a parent's TensorFlow threads, and stay small.
    context = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
    try:
        futures = {pool.submit(write_shard, task): task for task in tasks}
        for future in concurrent.futures.as_completed(futures):
            on_done(futures[future], future.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def build_from_index(index, out_dir, dataset, workers=None, sample_dtype="int16", overwrite=False, seed=0,
                     progress=None, options=None):
    """Writes the shards and manifest of ``index`` to ``out_dir``; returns the manifest."""
    out_dir = pathlib.Path(out_dir)
    records.to_pcm(np.zeros(1, np.float32), sample_dtype)  # validates sample_dtype early
    tasks = plan_shards(index, out_dir, sample_dtype, seed)
    prepare_output(out_dir, fingerprint(tasks, index.spec), overwrite)
    pending = [t for t in tasks if not pathlib.Path(t.sidecar).exists()]
    clips_total = sum(len(t.clips) for t in pending)
    state = {"shards": len(tasks) - len(pending), "clips": 0, "start": time.monotonic()}

    def on_done(task, summary):
        state["shards"] += 1
        state["clips"] += len(task.clips)
        if progress:
            progress(Progress(state["shards"], len(tasks), state["clips"], clips_total,
                              time.monotonic() - state["start"]))

    run_tasks(pending, workers or os.cpu_count() or 1, on_done)
    manifest = assemble_manifest(index, tasks, dataset, sample_dtype, seed, options or {})
    records.write_text_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def assemble_manifest(index, tasks, dataset, sample_dtype, seed, options):
    splits = {s: {"clips": 0, "segments": 0, "shards": []} for s in base.SPLITS}
    failures, total, total_sq, count = list(index.failures), 0.0, 0.0, 0
    for task in tasks:
        summary = json.loads(pathlib.Path(task.sidecar).read_text())
        entry = splits[task.split]
        entry["clips"] += summary["clips"]
        entry["segments"] += summary["segments"]
        entry["shards"].append(pathlib.Path(task.path).name)
        failures.extend(summary["failures"])
        if task.split == "train":
            total, total_sq, count = total + summary["sum"], total_sq + summary["sum_sq"], count + summary["count"]
    mean = total / count if count else 0.0
    std = math.sqrt(max(total_sq / count - mean ** 2, 0.0)) if count else 1.0
    spec = index.spec.to_dict()
    return {
        "dataset": dataset,
        "spec": spec,
        "classes": spec["classes"],
        "sample_dtype": sample_dtype,
        "splits": splits,
        "mean": mean,
        "std": std,
        "failures": failures,
        "notes": index.notes,
        "options": {**options, "sample_dtype": sample_dtype, "seed": seed},
        "version": VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def load_index(dataset, raw_dir, seed=0, **custom_options):
    """The clip table of a built-in data set (mtt, scd, dcs) or a custom one (folder, csv)."""
    if dataset == "folder":
        return custom.index_folder(raw_dir, seed=seed, **custom_options)
    if dataset == "csv":
        return custom.index_csv(raw_dir, seed=seed, **custom_options)
    indexer = base.get_indexer(dataset)
    return indexer(raw_dir, seed=seed) if dataset == "dcs" else indexer(raw_dir)


def build_dataset(dataset, data_dir="data", raw_dir=None, name=None, workers=None, sample_dtype="int16",
                  overwrite=False, seed=0, progress=None, **custom_options):
    """Builds ``data_dir/<name>/tfrecord`` from the raw files and returns the manifest.

    ``dataset`` is mtt, scd or dcs (raw files in ``data_dir/<dataset>/raw``), ``folder``
    (``raw_dir`` holds one sub-folder per class) or ``csv`` (``raw_dir`` is the CSV file);
    custom sets need ``name`` and accept sample_rate, clip_seconds, segment_samples,
    val_fraction and test_fraction.
    """
    data_dir = pathlib.Path(data_dir)
    if dataset in ("folder", "csv"):
        if not name or not raw_dir:
            raise ValueError(f"a {dataset} data set needs a name and "
                             f"{'--raw-dir' if dataset == 'folder' else '--csv'}")
        custom_options["name"] = name
    else:
        name = dataset
        raw_dir = raw_dir or data_dir / dataset / "raw"
    index = load_index(dataset, raw_dir, seed=seed, **custom_options)
    options = {"raw_dir": str(raw_dir), **{k: v for k, v in custom_options.items() if k != "name"}}
    return build_from_index(index, data_dir / name / "tfrecord", name, workers=workers, sample_dtype=sample_dtype,
                            overwrite=overwrite, seed=seed, progress=progress, options=options)
