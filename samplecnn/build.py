"""Raw layout -> clip table -> sharded TFRecords + manifest.json, in parallel and resumable.

The unit of parallel work is a chunk of a shard (a tenth of it), so that even a build of
fewer shards than cores keeps every core busy (a custom set of a few hundred clips is a
single shard). Worker processes decode a chunk's clips and return its serialized records
with its counts, failures and sample statistics; the parent appends the chunks of a shard
in order to a temporary file, renames it when complete, and then writes a small sidecar
with the shard's summary (counts, size, CRC-32C) to ``.build/``. A shard counts as done
only when its sidecar exists and its file still has the recorded size (and checksum, with
``verify``), so a re-run after any interruption or damage redoes just the unfinished or
damaged shards; since a shard's bytes depend only on its clips, the result equals an
uninterrupted build. The plan's fingerprint covers every source file's size and
modification time, so changed raw files are noticed.
"""
import collections
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
import shlex
import shutil
import signal
import socket
import threading
import time

import google_crc32c
import numpy as np

from samplecnn import audio, records
from samplecnn.datasets import base, custom
from samplecnn.recipes import DEFAULT_RECIPE, get_recipe

MANIFEST = "manifest.json"
STATE_DIR = ".build"
LOCK = ".build.lock"
VERSION = "0.1.0"


CHUNKS_PER_SHARD = 10
MIN_CLIP_FRACTION = 10
"""By default a clip shorter than a tenth of the clip length is skipped, not looped."""


@dataclasses.dataclass(frozen=True)
class AudioFormat:
    """How every clip of a build is decoded, cut and stored."""

    sample_rate: int
    clip_samples: int
    segment_samples: int
    segments_per_clip: int
    sample_dtype: str
    padding: str
    min_samples: int = 1


@dataclasses.dataclass
class ChunkTask:
    """Clips encoded by one worker call: the ``index``-th chunk of the shard at ``shard``."""

    shard: str
    index: int
    split: str
    clips: list  # (clip_id, audio path, multi-hot label list)
    format: AudioFormat


@dataclasses.dataclass
class Shard:
    path: str
    sidecar: str
    split: str
    chunks: list

    @property
    def clips(self):
        return [clip for chunk in self.chunks for clip in chunk.clips]


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


def encode_chunk(task):
    """Decodes the clips of one chunk; returns (its TFRecord bytes, its summary)."""
    fmt = task.format
    total, total_sq, count, segments, written, failures = 0.0, 0.0, 0, 0, 0, []
    out = bytearray()
    for clip_id, path, label in task.clips:
        try:
            segs = audio.load_clip(path, fmt.sample_rate, fmt.clip_samples, fmt.segment_samples,
                                   fmt.segments_per_clip, fmt.min_samples, fmt.padding)
        except Exception as error:  # one bad file must never stop the build
            failures.append({"path": path, "split": task.split, "error": str(error) or repr(error)})
            continue
        pcm = records.to_pcm(segs, fmt.sample_dtype)
        label = np.asarray(label, dtype=np.uint8)
        if task.split == "test":
            out += records.frame(records.clip_sequence_example(pcm, label, clip_id))
        else:
            for seg in pcm:
                out += records.frame(records.segment_example(seg, label, clip_id))
        clip_sum, clip_sum_sq = records.pcm_moments(pcm, fmt.sample_dtype)
        total, total_sq, count = total + clip_sum, total_sq + clip_sum_sq, count + pcm.size
        segments += len(pcm)
        written += 1
    summary = {"clips": written, "segments": segments, "failures": failures,
               "sum": total, "sum_sq": total_sq, "count": count}
    return bytes(out), summary


class ShardAssembler:
    """Appends a shard's chunks in order to its temporary file as they arrive (in any
    order), then renames it and writes the shard's sidecar."""

    def __init__(self, shard):
        self.shard, self.next, self.waiting, self.summaries = shard, 0, {}, []
        self.crc, self.bytes = 0, 0
        self.writer = records.AtomicWriter(shard.path)
        self.file = self.writer.__enter__()

    def add(self, index, data, summary):
        """Takes chunk ``index``; returns True when the shard is complete."""
        self.waiting[index] = (data, summary)
        while self.next in self.waiting:
            data, summary = self.waiting.pop(self.next)
            self.file.write(data)
            self.crc, self.bytes = google_crc32c.extend(self.crc, data), self.bytes + len(data)
            self.summaries.append(summary)
            self.next += 1
        if self.next < len(self.shard.chunks):
            return False
        self.writer.__exit__(None, None, None)
        merged = {key: sum(s[key] for s in self.summaries) for key in ("clips", "segments", "sum", "sum_sq", "count")}
        merged["failures"] = [f for s in self.summaries for f in s["failures"]]
        merged.update(bytes=self.bytes, crc32c=f"{self.crc:08x}",
                      records=merged["clips"] if self.shard.split == "test" else merged["segments"])
        records.write_text_atomic(self.shard.sidecar, json.dumps(merged))
        return True

    def abandon(self):
        """Drops the temporary file of an interrupted shard."""
        self.writer.__exit__(KeyboardInterrupt, None, None)


class BuildLocked(Exception):
    """Another build is writing the same output folder."""


def _process_start(pid):
    """Start time of process ``pid`` (clock ticks since boot, Linux), or None where unknown:
    tells a live holder from an unrelated process that reuses its pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _running(pid, start):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        pass
    return start is None or _process_start(pid) in (start, None)


class BuildLock:
    """A lock file in the output folder naming the build that holds it (pid, host, start).

    A second build into the same folder is refused with BuildLocked while the holder runs;
    a lock left by a build that was killed (its process is gone) is stale and taken over.
    On another host the holder cannot be checked, so its lock is only ever reported.
    """

    def __init__(self, out_dir):
        self.path = pathlib.Path(out_dir) / LOCK
        pid = os.getpid()
        self.holder = {"pid": pid, "host": socket.gethostname(), "start": _process_start(pid),
                       "since": datetime.datetime.now().isoformat(timespec="seconds")}

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{LOCK}-{os.getpid()}")  # not *.tmp-*: the holder deletes those
        tmp.write_text(json.dumps(self.holder))
        try:
            for _ in range(2):
                try:
                    os.link(tmp, self.path)  # atomic: fails if a lock exists, never shows a half-written one
                    return self
                except FileExistsError:
                    self._remove_if_stale()
            raise BuildLocked(f"{self.path.parent} is being written by another build; wait for it to finish")
        finally:
            tmp.unlink()

    def _remove_if_stale(self):
        try:
            holder = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            holder = {}
        if holder.get("host") == self.holder["host"] and not _running(holder["pid"], holder.get("start")):
            self.path.unlink(missing_ok=True)
            return
        who = f"pid {holder['pid']} on {holder['host']}" if holder else "an unknown process"
        raise BuildLocked(f"{self.path.parent} is being written by another build ({who}, since "
                          f"{holder.get('since', '?')}); wait for it to finish, or delete {self.path} if no such "
                          "build is running")

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)
        return False


def min_clip_samples(spec, min_seconds=None):
    """Samples below which a clip is skipped: ``min_seconds``, by default a tenth of the clip."""
    if min_seconds is None:
        return max(1, spec.clip_samples // MIN_CLIP_FRACTION)
    if not 0 <= min_seconds <= spec.clip_seconds:
        raise ValueError(f"--min-seconds must be between 0 and the clip length ({spec.clip_seconds} s), "
                         f"got {min_seconds}")
    return max(1, int(round(min_seconds * spec.sample_rate)))


def plan_shards(index, out_dir, sample_dtype, seed, padding, min_samples=1):
    """The Shards of every split: train clips and each fold's clips shuffled (seeded) so shards mix classes."""
    spec = index.spec
    fmt = AudioFormat(spec.sample_rate, spec.clip_samples, spec.segment_samples, spec.segments_per_clip,
                      sample_dtype, padding, min_samples)
    class_index = {c: i for i, c in enumerate(spec.classes)}
    chunk_size = math.ceil(spec.clips_per_shard / CHUNKS_PER_SHARD)
    state = out_dir / STATE_DIR
    shards = []
    for split in index.splits:
        clips = sorted((c for c in index.clips if c.split == split), key=lambda c: c.clip_id)
        if split not in ("val", "test"):
            random.Random(seed).shuffle(clips)
        rows = []
        for clip in clips:
            label = [0] * spec.num_classes
            for name in clip.labels:
                label[class_index[name]] = 1
            rows.append((clip.clip_id, clip.path, label))
        n = math.ceil(len(rows) / spec.clips_per_shard)
        for i in range(n):
            name = shard_name(split, i, n)
            shard_rows = rows[i * spec.clips_per_shard:(i + 1) * spec.clips_per_shard]
            chunks = [ChunkTask(str(out_dir / name), k, split, shard_rows[start:start + chunk_size], fmt)
                      for k, start in enumerate(range(0, len(shard_rows), chunk_size))]
            shards.append(Shard(str(out_dir / name), str(state / f"{name}.json"), split, chunks))
    return shards


def file_stamp(path):
    """(size, modification time in ns) of a source file, None when it is missing: a cheap
    stand-in for its content."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def fingerprint(shards, spec):
    """Hash of everything that determines the shards' bytes, source files' stamps included."""
    digest = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode())
    for shard in shards:
        stamps = [file_stamp(path) for _, path, _ in shard.clips]
        digest.update(json.dumps([shard.path, shard.clips, dataclasses.asdict(shard.chunks[0].format),
                                  stamps]).encode())
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
        raise ValueError(f"{out_dir} holds a build made with other options or other raw files (added, removed, "
                         "or changed in size or modification time); re-run with --overwrite to rebuild it from "
                         "scratch")
    state.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.tmp-*"):
        stale.unlink()
    for stale in state.glob("*.tmp-*"):
        stale.unlink()
    records.write_text_atomic(plan_file, json.dumps({"plan": plan_id}))


def run_tasks(tasks, workers, on_done):
    """Runs encode_chunk over ``tasks`` on ``workers`` cores, calling ``on_done(task, data, summary)``.

    The parent process is one of the workers: it encodes chunks itself whenever the
    ``workers - 1`` spawned processes are all busy, so no core idles while they start up
    (about 0.15 s each, a large share of a small build) or while the parent waits.
    """
    queue = collections.deque(tasks)
    if workers <= 1 or len(queue) <= 1:
        while queue:
            task = queue.popleft()
            on_done(task, *encode_chunk(task))
        return
    # spawn: workers never inherit a parent's TensorFlow threads, and stay small.
    pool = concurrent.futures.ProcessPoolExecutor(workers - 1, mp_context=multiprocessing.get_context("spawn"),
                                                  initializer=_worker_setup, initargs=(os.getpid(),))
    in_flight = {}
    try:
        while queue or in_flight:
            while queue and len(in_flight) < 2 * (workers - 1):
                task = queue.popleft()
                in_flight[_submit(pool, task)] = task
            finished = [future for future in in_flight if future.done()]
            for future in finished:
                on_done(in_flight.pop(future), *future.result())
            if finished:
                continue
            if queue:
                task = queue.popleft()
                on_done(task, *encode_chunk(task))
            else:
                concurrent.futures.wait(in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def shard_problem(shard, verify=False):
    """Why a finished shard (one with a sidecar) cannot be trusted, or None: its file is
    missing or has another size than recorded; with ``verify`` also another CRC-32C or
    record count (which reads the whole file)."""
    summary, path = json.loads(pathlib.Path(shard.sidecar).read_text()), pathlib.Path(shard.path)
    if not path.is_file():
        return "missing"
    if path.stat().st_size != summary.get("bytes"):
        return f"{path.stat().st_size} bytes instead of {summary.get('bytes')}"
    if not verify:
        return None
    if records.file_crc32c(path) != summary["crc32c"]:
        return "checksum mismatch"
    try:
        count = sum(1 for _ in records.read_records(path))
    except ValueError as error:
        return str(error)
    return None if count == summary["records"] else f"{count} records instead of {summary['records']}"


def _submit(pool, task):
    """``pool.submit(encode_chunk, task)`` with Ctrl-C held back meanwhile. Workers start in
    submit and inherit the blocked signal, so Ctrl-C is the parent's alone to handle (it
    stops the pool; no worker prints a traceback, not even while starting up); the parent
    gets a Ctrl-C of that moment right after."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return pool.submit(encode_chunk, task)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _worker_setup(parent):
    """Runs first in every worker: a worker whose parent is killed exits instead of waiting
    for work forever, which also lets the resource tracker end."""
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()


def _exit_when_orphaned(parent, interval=0.5):
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)


def build_from_index(index, out_dir, dataset, workers=None, sample_dtype="int16", overwrite=False, seed=0,
                     progress=None, options=None, min_seconds=None, recipe=DEFAULT_RECIPE, verify=False):
    """Writes the shards and manifest of ``index`` to ``out_dir``; returns the manifest.

    Clips shorter than ``min_seconds`` (default: a tenth of the clip length) are skipped
    and listed as failures; ``recipe`` chooses how short clips are padded (samplecnn.recipes).
    Finished shards whose file is missing or damaged (size; with ``verify`` also checksum
    and record count) are rebuilt and listed in the manifest's ``repaired``. Raises
    BuildLocked while another build writes ``out_dir``."""
    out_dir = pathlib.Path(out_dir)
    records.to_pcm(np.zeros(1, np.float32), sample_dtype)  # validates sample_dtype early
    min_samples = min_clip_samples(index.spec, min_seconds)
    padding = get_recipe(recipe).padding
    shards = plan_shards(index, out_dir, sample_dtype, seed, padding, min_samples)
    options = {**(options or {}), "min_seconds": min_samples / index.spec.sample_rate}
    with BuildLock(out_dir):
        return _write_shards(index, shards, out_dir, dataset, workers, sample_dtype, overwrite, seed, progress,
                             options, recipe, verify)


def _write_shards(index, shards, out_dir, dataset, workers, sample_dtype, overwrite, seed, progress, options, recipe,
                  verify):
    prepare_output(out_dir, fingerprint(shards, index.spec), overwrite)
    repaired = []
    for shard in shards:
        problem = pathlib.Path(shard.sidecar).exists() and shard_problem(shard, verify)
        if problem:
            repaired.append({"shard": pathlib.Path(shard.path).name, "problem": problem})
            pathlib.Path(shard.sidecar).unlink()
            pathlib.Path(shard.path).unlink(missing_ok=True)
    todo = [shard for shard in shards if not pathlib.Path(shard.sidecar).exists()]
    by_path = {shard.path: shard for shard in todo}
    open_shards = {}
    state = {"shards": len(shards) - len(todo), "clips": 0, "start": time.monotonic()}
    pending = [chunk for shard in todo for chunk in shard.chunks]
    clips_total = sum(len(chunk.clips) for chunk in pending)

    def on_done(chunk, data, summary):
        if chunk.shard not in open_shards:
            open_shards[chunk.shard] = ShardAssembler(by_path[chunk.shard])
        state["clips"] += len(chunk.clips)
        if open_shards[chunk.shard].add(chunk.index, data, summary):
            del open_shards[chunk.shard]
            state["shards"] += 1
        if progress:
            progress(Progress(state["shards"], len(shards), state["clips"], clips_total,
                              time.monotonic() - state["start"]))

    try:
        run_tasks(pending, workers or os.cpu_count() or 1, on_done)
    finally:
        for assembler in open_shards.values():
            assembler.abandon()
    manifest = assemble_manifest(index, shards, dataset, sample_dtype, seed, options)
    manifest.update(recipe=recipe, padding=get_recipe(recipe).padding, repaired=repaired)
    records.write_text_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def mean_std(moments):
    """(mean, std) of samples from their summed (sum, sum_sq, count) dicts; (0, 1) for none."""
    total, total_sq, count = (sum(m[key] for m in moments) for key in ("sum", "sum_sq", "count"))
    if not count:
        return 0.0, 1.0
    mean = total / count
    return mean, math.sqrt(max(total_sq / count - mean ** 2, 0.0))


def assemble_manifest(index, shards, dataset, sample_dtype, seed, options):
    """The manifest: a fold set's folds (``folds``: their names; ``splits``: one per fold)
    also record their sample moments, from which a fold run's training mean/std is pooled;
    its own mean/std are those of all its clips."""
    splits = {s: {"clips": 0, "segments": 0, "shards": []} for s in index.splits}
    failures, files = list(index.failures), {}
    moments = {s: {"sum": 0.0, "sum_sq": 0.0, "count": 0} for s in index.splits}
    for shard in shards:
        summary = json.loads(pathlib.Path(shard.sidecar).read_text())
        entry = splits[shard.split]
        entry["clips"] += summary["clips"]
        entry["segments"] += summary["segments"]
        entry["shards"].append(pathlib.Path(shard.path).name)
        files[pathlib.Path(shard.path).name] = {key: summary[key] for key in ("bytes", "crc32c", "records")}
        failures.extend(summary["failures"])
        for key in ("sum", "sum_sq", "count"):
            moments[shard.split][key] += summary[key]
    if index.folds:
        for split in index.splits:
            splits[split]["moments"] = moments[split]
    mean, std = mean_std([moments[s] for s in index.splits if s not in ("val", "test")])
    spec = index.spec.to_dict()
    folds = {"folds": list(index.folds)} if index.folds else {}
    return {
        "dataset": dataset,
        "spec": spec,
        "classes": spec["classes"],
        "sample_dtype": sample_dtype,
        "splits": splits,
        **folds,
        "shard_files": files,
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
    return base.get_indexer(dataset)(raw_dir)


def index_dataset(dataset, data_dir="data", raw_dir=None, name=None, seed=0, **custom_options):
    """(name, raw_dir, DatasetIndex) of a raw layout, found without decoding any audio.

    The arguments are those of :func:`build_dataset`; ``build_dataset.py --dry-run`` prints
    this index.
    """
    if dataset in ("folder", "csv"):
        if not name or not raw_dir:
            raise ValueError(f"a {dataset} data set needs a name and "
                             f"{'--raw-dir' if dataset == 'folder' else '--csv'}")
        custom_options["name"] = name
    else:
        name = dataset
        raw_dir = raw_dir or pathlib.Path(data_dir) / dataset / "raw"
    return name, raw_dir, load_index(dataset, raw_dir, seed=seed, **custom_options)


def build_dataset(dataset, data_dir="data", raw_dir=None, name=None, workers=None, sample_dtype="int16",
                  overwrite=False, seed=0, progress=None, min_seconds=None, recipe=DEFAULT_RECIPE, verify=False,
                  **custom_options):
    """Builds ``data_dir/<name>/tfrecord`` from the raw files and returns the manifest.

    ``dataset`` is mtt, scd or dcs (raw files in ``data_dir/<dataset>/raw``), ``folder``
    (``raw_dir`` holds one sub-folder per class) or ``csv`` (``raw_dir`` is the CSV file);
    custom sets need ``name`` and accept sample_rate, clip_seconds, segment_samples,
    val_fraction and test_fraction, or instead of these two fractions ``folds`` and
    ``group_pattern`` (folder) or ``fold_column`` (csv) for a fold set. Clips shorter
    than ``min_seconds`` (default: a tenth of the clip length) are skipped; ``recipe``
    chooses how short clips are padded. ``verify`` re-reads every finished shard (checksum
    and record count) and rebuilds damaged ones.
    """
    get_recipe(recipe)  # an unknown recipe stops before any work
    name, raw_dir, index = index_dataset(dataset, data_dir, raw_dir, name, seed, **custom_options)
    options = {"source": dataset, "raw_dir": str(pathlib.Path(raw_dir).resolve()),
               **{k: v for k, v in custom_options.items() if k != "name"}}
    return build_from_index(index, pathlib.Path(data_dir) / name / "tfrecord", name, workers=workers,
                            sample_dtype=sample_dtype, overwrite=overwrite, seed=seed, progress=progress,
                            options=options, min_seconds=min_seconds, recipe=recipe, verify=verify)


def rebuild_command(manifest):
    """The build_dataset.py command line that resumes (and so repairs) the build of a manifest."""
    options, name = manifest.get("options", {}), manifest["dataset"]
    data_dir = pathlib.Path(manifest["dir"]).parent.parent
    source = options.get("source", name)
    words = ["python", "build_dataset.py", source]
    if source in ("folder", "csv"):
        words += ["--csv" if source == "csv" else "--raw-dir", options["raw_dir"], "--name", name]
        for key in (key for key in (*custom.DEFAULTS, *custom.FOLD_OPTIONS) if options.get(key) is not None):
            words += [f"--{key.replace('_', '-')}", options[key]]
    elif "raw_dir" in options and pathlib.Path(options["raw_dir"]) != (data_dir / name / "raw").resolve():
        words += ["--raw-dir", options["raw_dir"]]
    words += ["--data-dir", str(data_dir)]
    if manifest.get("sample_dtype", "int16") != "int16":
        words += ["--sample-dtype", manifest["sample_dtype"]]
    if manifest.get("recipe", DEFAULT_RECIPE) != DEFAULT_RECIPE:
        words += ["--recipe", manifest["recipe"]]
    if options.get("seed", 0):
        words += ["--seed", str(options["seed"])]
    spec = base.DatasetSpec.from_dict(manifest["spec"])
    if "min_seconds" in options and options["min_seconds"] != min_clip_samples(spec) / spec.sample_rate:
        words += ["--min-seconds", str(options["min_seconds"])]
    return shlex.join(map(str, words))
