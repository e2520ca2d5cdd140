"""Throughput, memory and disk use of samplecnn's dataset builder against the 2019 pipeline.

    .venv/bin/python bench/bench_build.py [--quick] [--work-dir /tmp/samplecnn-bench]

Generates two raw sets once (cached in --work-dir): an scd-like set of 1-s 16-kHz WAVs and
an mtt-like set of 29-s 16-kHz 32-kbps MP3s. Then times, interleaved round by round so
that every configuration sees the same machine state:

  samplecnn w2 / w1   build.build_from_index, int16, workers=2 / 1, fresh output dir
  baseline (a)        the 2019 pipeline: librosa.load(res_type="kaiser_best") (needs
                      resampy), loop-pad, cut segments, one tf.train.Example per segment
                      holding raw float32 bytes (as github.com/tae-jun/sample-cnn did),
                      serialized by TensorFlow into tf.io.TFRecordWriter, 1 process
  baseline (b)        the same with librosa's default resampler

Each run is a fresh subprocess, so its imports, memory and CPU time are its own. The
builder's timings include starting its workers and fsyncing every shard; the baselines'
one-time costs (TensorFlow import, numba JIT of resampy) are left out, which favours them.
Other jobs may share the machine, so the CPU used by *other* processes during a run
(machine busy time from /proc/stat minus the run's own CPU time) is recorded, and a run
disturbed by more than --max-foreign-load cores is repeated. Prints Markdown tables and
writes WORK_DIR/results.json.
"""
import argparse
import dataclasses
import importlib.metadata
import json
import os
import pathlib
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

# Spawned build workers re-import this module, so heavy modules (TensorFlow, librosa)
# are imported only inside the functions that need them.
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
import rawdata  # noqa: E402

SOURCE_RATE = 16000
MP3_BITRATE = "32k"  # MagnaTagATune's encoding
BUILDER_WORKERS = {"samplecnn w2": 2, "samplecnn w1": 1}
BASELINE_RESAMPLERS = {"baseline (a)": "kaiser_best", "baseline (b)": None}  # None: librosa's default
CONFIGS = (*BUILDER_WORKERS, *BASELINE_RESAMPLERS)
DECODERS = ("samplecnn (soundfile+soxr)", "librosa default", "librosa kaiser_best", "ffmpeg subprocess")


@dataclasses.dataclass(frozen=True)
class RawSet:
    """A generated raw data set shaped like a built-in one (same spec, format and length)."""

    name: str  # also the name of the built-in spec it follows
    clips: int
    seconds: float
    suffix: str
    splits: tuple  # (train, val, test) clips out of every sum(splits), as in the real set
    tags_per_clip: int
    short_every: int  # every n-th clip lasts 0.7 * seconds and gets looped; 0: none


SETS = {
    # Speech Commands: about 80/10/10, one word per clip, some clips shorter than 1 s.
    "scd": RawSet("scd", clips=3000, seconds=1.0, suffix="wav", splits=(8, 1, 1), tags_per_clip=1, short_every=10),
    # MagnaTagATune: folders 0-b train, c val, d-f test; several tags per clip.
    "mtt": RawSet("mtt", clips=60, seconds=29.1, suffix="mp3", splits=(12, 1, 3), tags_per_clip=3, short_every=0),
}
QUICK_CLIPS = {"scd": 600, "mtt": 12}


# ---------------------------------------------------------------- raw data generation

def write_mp3(path, audio):
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "s16le", "-ar", str(SOURCE_RATE), "-ac", "1",
                    "-i", "-", "-b:a", MP3_BITRATE, str(path)], input=pcm, check=True)


def clip_table_path(work_dir, raw_set, clips):
    return work_dir / "raw" / f"{raw_set.name}-{clips}" / "clips.json"


def generate(work_dir, raw_set, clips):
    """Writes the set's audio and its clip table once; clips.json comes last, so it marks a complete set."""
    table_path = clip_table_path(work_dir, raw_set, clips)
    if table_path.exists():
        return
    from samplecnn.datasets import get_spec

    classes = get_spec(raw_set.name).classes
    split_cycle = [split for split, n in zip(("train", "val", "test"), raw_set.splits) for _ in range(n)]
    table = []
    for i in range(clips):
        short = raw_set.short_every and i % raw_set.short_every == raw_set.short_every - 1
        seconds = raw_set.seconds * (0.7 if short else 1.0)
        # 16 tones from 220 Hz to 2.9 kHz: all well below the 8-kHz Nyquist frequency
        audio = rawdata.tone(seconds, SOURCE_RATE, rawdata.class_frequency(i % 16), seed=i)
        path = table_path.parent / f"{i % 16:x}" / f"clip{i:05d}.{raw_set.suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if raw_set.suffix == "mp3":
            write_mp3(path, audio)
        else:
            rawdata.write_wav(path, audio, SOURCE_RATE)
        labels = [classes[(i + 7 * k) % len(classes)] for k in range(raw_set.tags_per_clip)]
        table.append({"clip_id": f"clip{i:05d}", "path": str(path), "labels": labels,
                      "split": split_cycle[i % len(split_cycle)], "seconds": len(audio) / SOURCE_RATE})
    tmp = table_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(table))
    tmp.replace(table_path)


# ---------------------------------------------------------------- one measured run (child process)

def run_samplecnn(spec, table, out_dir, workers):
    from samplecnn import build
    from samplecnn.datasets.base import Clip, DatasetIndex

    index = DatasetIndex(spec, [Clip(c["clip_id"], c["path"], tuple(c["labels"]), c["split"]) for c in table])
    start = time.perf_counter()
    build.build_from_index(index, out_dir, spec.name, workers=workers, overwrite=True)
    return time.perf_counter() - start


def baseline_segments(librosa, path, spec, res_type):
    """2019 pipeline: decode at the model rate, loop-pad to the clip length, cut segments."""
    kwargs = {"res_type": res_type} if res_type else {}
    audio, _ = librosa.load(path, sr=spec.sample_rate, **kwargs)
    audio = np.resize(audio, spec.clip_samples)
    return audio[: spec.segment_samples * spec.segments_per_clip].reshape(spec.segments_per_clip, -1)


def run_baseline(spec, table, out_dir, res_type):
    import librosa
    import tensorflow as tf

    def example(segment, label):
        return tf.train.Example(features=tf.train.Features(feature={
            "audio": tf.train.Feature(bytes_list=tf.train.BytesList(value=[segment.astype("<f4").tobytes()])),
            "label": tf.train.Feature(bytes_list=tf.train.BytesList(value=[label.tobytes()])),
        })).SerializeToString()

    class_index = {c: i for i, c in enumerate(spec.classes)}
    baseline_segments(librosa, table[0]["path"], spec, res_type)  # warm-up: lazy imports, numba JIT
    start = time.perf_counter()
    writers = {s: tf.io.TFRecordWriter(str(out_dir / f"{s}.tfrecord")) for s in ("train", "val", "test")}
    for clip in table:
        label = np.zeros(spec.num_classes, np.uint8)
        label[[class_index[name] for name in clip["labels"]]] = 1
        for segment in baseline_segments(librosa, clip["path"], spec, res_type):
            writers[clip["split"]].write(example(segment, label))
    for writer in writers.values():
        writer.close()
    return time.perf_counter() - start


def measure_config(config, raw_set, table, out_dir):
    """Builds ``table`` with ``config`` into a fresh ``out_dir``; returns the run's numbers."""
    from samplecnn.datasets import get_spec

    spec = get_spec(raw_set.name)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    if config in BUILDER_WORKERS:
        seconds = run_samplecnn(spec, table, out_dir, BUILDER_WORKERS[config])
    else:
        seconds = run_baseline(spec, table, out_dir, BASELINE_RESAMPLERS[config])
    audio_seconds = sum(c["seconds"] for c in table)
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    concurrent_children = BUILDER_WORKERS.get(config, 1)
    return {
        "seconds": seconds,
        "clips_per_s": len(table) / seconds,
        "audio_s_per_s": audio_seconds / seconds,
        "disk_bytes_per_audio_s": sum(p.stat().st_size for p in out_dir.glob("*.tfrecord")) / audio_seconds,
        # ru_maxrss is in KiB; RUSAGE_CHILDREN gives the largest single child, so the total
        # of the main process and its concurrent children is at most main + n * largest.
        "peak_rss_mb": (own.ru_maxrss + concurrent_children * children.ru_maxrss) / 1024,
    }


def median_ms(fn, budget_seconds, min_calls=5, max_calls=200):
    """Median wall time of ``fn`` over as many calls as fit the budget, after one warm-up."""
    fn()
    times, deadline = [], time.perf_counter() + budget_seconds
    while len(times) < min_calls or (len(times) < max_calls and time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times), len(times)


def measure_decoders(raw_set, table, budget_seconds):
    """Per-file decode time to the model rate of each candidate path, on one file of the set."""
    import librosa
    from samplecnn import audio
    from samplecnn.datasets import get_spec

    rate, clip = get_spec(raw_set.name).sample_rate, table[0]
    decoders = {
        "samplecnn (soundfile+soxr)": lambda: audio.decode(clip["path"], rate),
        "librosa default": lambda: librosa.load(clip["path"], sr=rate),
        "librosa kaiser_best": lambda: librosa.load(clip["path"], sr=rate, res_type="kaiser_best"),
        # samplecnn's own fallback for formats libsndfile cannot read
        "ffmpeg subprocess": lambda: audio.conform(*audio._decode_with_ffmpeg(clip["path"]), rate),
    }
    results = {}
    for name in DECODERS:
        ms, calls = median_ms(decoders[name], budget_seconds)
        results[name] = {"ms": ms, "calls": calls, "realtime": clip["seconds"] * 1000 / ms}
    return {"decoders": results}


def child_main(args):
    raw_set = SETS[args.set]
    table = json.loads(clip_table_path(args.work_dir, raw_set, args.clips or raw_set.clips).read_text())
    if args.child == "decoders":
        result = measure_decoders(raw_set, table, budget_seconds=1.0 if args.quick else 3.0)
    else:
        out_dir = args.work_dir / "out" / re.sub(r"\W+", "-", f"{raw_set.name} {args.child}").strip("-")
        result = measure_config(args.child, raw_set, table, out_dir)
    print(json.dumps(result))


# ---------------------------------------------------------------- orchestration (parent process)

def machine_busy_seconds():
    """CPU seconds spent by all processes on this machine since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds():
    """CPU seconds of this process's finished children, and of the children they waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_child(args, kind, set_name):
    """Runs one measurement in a fresh process; adds the load of other processes during it."""
    command = [sys.executable, __file__, "--child", kind, "--set", set_name, "--clips", str(args.clip_counts[set_name]),
               "--work-dir", str(args.work_dir)] + (["--quick"] if args.quick else [])
    for attempt in range(1, args.attempts + 1):
        load_before = os.getloadavg()[0]
        busy, own, start = machine_busy_seconds(), children_cpu_seconds(), time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True)
        wall, own = time.monotonic() - start, children_cpu_seconds() - own
        if done.returncode != 0:
            sys.exit(f"{kind} on {set_name} failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.splitlines()[-1])
        result["foreign_load"] = max(0.0, machine_busy_seconds() - busy - own) / wall
        result["loadavg_before"] = load_before
        print(f"  {set_name:4} {kind:27} load {load_before:4.2f}  other processes {result['foreign_load']:4.2f} cores"
              + (f"  {result['audio_s_per_s']:8.0f} audio s/s" if "audio_s_per_s" in result else ""), file=sys.stderr)
        if result["foreign_load"] <= args.max_foreign_load:
            break
        if attempt < args.attempts:
            print(f"  other processes used {result['foreign_load']:.2f} cores: again in {args.retry_wait:g} s",
                  file=sys.stderr)
            time.sleep(args.retry_wait)
    result["attempts"] = attempt
    return result


def summarize(runs):
    """Medians of the rates over the runs of one configuration; maxima of memory and disturbance."""
    summary = {k: statistics.median(r[k] for r in runs)
               for k in ("seconds", "clips_per_s", "audio_s_per_s", "disk_bytes_per_audio_s")}
    summary.update(max_peak_rss_mb=max(r["peak_rss_mb"] for r in runs),
                   max_foreign_load=max(r["foreign_load"] for r in runs), runs=len(runs))
    return summary


def machine():
    """One line naming the machine and the versions that the numbers depend on."""
    cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    ram_gb = int(open("/proc/meminfo").readline().split()[1]) / 2**20
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}"
                         for p in ("tensorflow", "librosa", "resampy", "soundfile", "soxr", "numpy"))
    return f"{os.cpu_count()} CPUs ({cpu}), {ram_gb:.0f} GB RAM; Python {platform.python_version()}, {versions}"


def markdown(results, args):
    lines = [machine(), "", f"Medians of {args.repeats} interleaved run(s); clips per set: "
             + ", ".join(f"{n} {c}" for n, c in args.clip_counts.items()) + ".", "",
             "| set | configuration | audio s / s | clips / s | vs (a) | vs (b) | peak RSS MB | disk B / audio s "
             "| vs float32 (b) | max other load |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for set_name, configs in results["build"].items():
        a, b = configs["baseline (a)"], configs["baseline (b)"]
        for config, s in configs.items():
            lines.append(
                f"| {set_name} | {config} | {s['audio_s_per_s']:.0f} | {s['clips_per_s']:.1f} "
                f"| {s['audio_s_per_s'] / a['audio_s_per_s']:.2f}x | {s['audio_s_per_s'] / b['audio_s_per_s']:.2f}x "
                f"| {s['max_peak_rss_mb']:.0f} | {s['disk_bytes_per_audio_s']:.0f} "
                f"| {s['disk_bytes_per_audio_s'] / b['disk_bytes_per_audio_s']:.3f} | {s['max_foreign_load']:.2f} |")
    lines += ["", "| file | decoder | median ms / file | x realtime | calls |", "|---|---|---:|---:|---:|"]
    for set_name, run in results["decoders"].items():
        for name, d in run["decoders"].items():
            lines.append(f"| {set_name} ({SETS[set_name].seconds:g} s {SETS[set_name].suffix}) | {name} "
                         f"| {d['ms']:.2f} | {d['realtime']:.0f} | {d['calls']} |")
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    for target, measured, met in targets(results["build"], results["decoders"]):
        lines.append(f"| {target} | {measured} | {'yes' if met else 'NO'} |")
    return "\n".join(lines)


def targets(build, decoders):
    """(target, measured, met) for the builder's performance targets.

    Against baseline (a), a target counts as met only if it also holds against kaiser_best
    decoding alone in a process without TensorFlow: importing TensorFlow slows resampy
    down several-fold on long files, which must not be what makes samplecnn look fast.
    """
    scd = build["scd"]

    def ratio(configs, baseline):
        return configs["samplecnn w2"]["audio_s_per_s"] / configs[baseline]["audio_s_per_s"]

    def vs_a(name, factor):
        decode_only = build[name]["samplecnn w2"]["audio_s_per_s"] / decoders[name]["decoders"][
            "librosa kaiser_best"]["realtime"]
        measured = ratio(build[name], "baseline (a)")
        return (f"{name}: >= {factor}x baseline (a)", f"{measured:.1f}x (vs kaiser_best decode alone: "
                f"{decode_only:.1f}x)", min(measured, decode_only) >= factor)

    disk = {n: c["samplecnn w2"]["disk_bytes_per_audio_s"] / c["baseline (b)"]["disk_bytes_per_audio_s"]
            for n, c in build.items()}
    peak = max(c["samplecnn w2"]["max_peak_rss_mb"] for c in build.values())
    return [
        vs_a("scd", 10),
        ("scd: >= 1.5x baseline (b)", f"{ratio(scd, 'baseline (b)'):.2f}x", ratio(scd, "baseline (b)") >= 1.5),
        vs_a("mtt", 5),
        ("scd: >= 1000 clips/s, 2 workers", f"{scd['samplecnn w2']['clips_per_s']:.0f} clips/s",
         scd["samplecnn w2"]["clips_per_s"] >= 1000),
        ("peak memory < 1 GB, 2 workers", f"{peak:.0f} MB", peak < 1024),
        # int16 can only approach 0.5 of float32: record framing and labels cost the same in both.
        ("disk <= half of float32 (+1% for record overhead)",
         ", ".join(f"{n} {r:.3f}" for n, r in disk.items()), all(r <= 0.505 for r in disk.values())),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=pathlib.Path, default=pathlib.Path("/tmp/samplecnn-bench"))
    parser.add_argument("--quick", action="store_true", help="small sets, one run each")
    parser.add_argument("--repeats", type=int, help="runs per configuration (default 3, --quick 1)")
    parser.add_argument("--max-foreign-load", type=float, default=0.3,
                        help="repeat a run when other processes used more CPU cores than this during it")
    parser.add_argument("--attempts", type=int, default=5, help="tries per run when the machine is busy")
    parser.add_argument("--retry-wait", type=float, default=60, help="seconds to wait before such a retry")
    parser.add_argument("--child", choices=CONFIGS + ("decoders",),
                        help="measure only this, once, on --clips clips of --set, and print JSON")
    parser.add_argument("--set", choices=sorted(SETS), help="with --child")
    parser.add_argument("--clips", type=int,
                        help="with --child: reads WORK_DIR/raw/SET-CLIPS/clips.json (default: the full set)")
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.clip_counts = {n: (QUICK_CLIPS[n] if args.quick else s.clips) for n, s in SETS.items()}
    for name, raw_set in SETS.items():
        print(f"raw set {name}: {args.clip_counts[name]} clips", file=sys.stderr)
        generate(args.work_dir, raw_set, args.clip_counts[name])
    runs = {n: {c: [] for c in CONFIGS} for n in SETS}
    for round_ in range(args.repeats):
        print(f"round {round_ + 1}/{args.repeats}", file=sys.stderr)
        order = CONFIGS[round_ % len(CONFIGS):] + CONFIGS[:round_ % len(CONFIGS)]  # no config always first
        for set_name in SETS:
            for config in order:
                runs[set_name][config].append(run_child(args, config, set_name))
    results = {
        "build": {n: {c: summarize(r) for c, r in configs.items()} for n, configs in runs.items()},
        "decoders": {n: run_child(args, "decoders", n) for n in SETS},
        "runs": runs,
    }
    (args.work_dir / "results.json").write_text(json.dumps(results, indent=1))
    print(markdown(results, args))


if __name__ == "__main__":
    main()
