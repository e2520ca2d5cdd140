"""Peak memory (RSS) of predict.py on long files, for checkouts of samplecnn side by side.

    .venv/bin/python bench/bench_predict_memory.py --repo before=/path/to/old/checkout --repo after=. [--runs 3]

Makes once, cached in --work-dir: the run directory of bench_predict.py (scd spec, the
default SE model with 128 features), a 60-minute 44.1-kHz stereo 16-bit WAV (read by
libsndfile), the same audio as a 96-kbps AAC .m4a (decoded by ffmpeg) and a 5-minute WAV
of the same kind. Then runs, in rounds and each in a fresh process,
``python REPO/predict.py RUN_DIR FILE [options]`` for every repo, file and option set of
CASES (only those of the files named by --file, if any), and reports the median over --runs of the peak RSS of the predict.py process
(ru_maxrss from wait4: ffmpeg, a child of it, is not counted; it holds a few MB) and of
its wall time. Results are stored per label in --work-dir/memory-LABEL.json (a later
invocation adds its cases to them), and the table printed at the end shows every label
stored there.
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

import numpy as np
import soundfile

from bench_predict import trained_run  # beside this script
from bench_train import LoadWatch, log, machine, rotated

RATE = 44100
FILES = {"60-min WAV": ("long.wav", 60), "60-min M4A": ("long.m4a", 60), "5-min WAV": ("short.wav", 5),
         "1-min WAV": ("minute.wav", 1)}
CASES = [  # (file, predict.py options)
    ("1-min WAV", []),  # the floor: Python, TensorFlow, the model and one batch
    ("60-min WAV", []),
    ("60-min WAV", ["--window", "3", "--hop", "1"]),
    ("60-min M4A", []),
    ("5-min WAV", ["--window", "3", "--hop", "0.1"]),
]


def write_wav(path, minutes):
    """A stereo tone with noise whose pitch changes every second, written a minute at a time."""
    rng = np.random.default_rng(0)
    with soundfile.SoundFile(path, "w", RATE, 2, "PCM_16") as f:
        for minute in range(minutes):
            t = np.arange(60 * RATE) / RATE
            pitch = 200.0 + 50.0 * ((minute * 60 + t.astype(int)) % 20)
            left = 0.3 * np.sin(2 * np.pi * pitch * t) + 0.05 * rng.standard_normal(t.size)
            f.write(np.stack([left, 0.8 * left], axis=1))


def audio_files(work_dir):
    paths = {}
    for name, (file_name, minutes) in FILES.items():
        path = work_dir / "memory" / file_name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            log(f"writing {path}")
            partial = path.with_name("partial-" + path.name)
            if path.suffix == ".wav":
                write_wav(partial, minutes)
            else:
                source = path.with_suffix(".wav")
                if not source.exists():
                    write_wav(source, minutes)
                subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(source), "-c:a", "aac",
                                "-b:a", "96k", str(partial)], check=True)
            partial.rename(path)
        paths[name] = path
    return paths


def peak_rss(repo, run_dir, path, options):
    """(peak RSS in MB, wall seconds) of one predict.py process."""
    command = [sys.executable, str(repo / "predict.py"), str(run_dir), str(path), *options]
    env = {**os.environ, "PYTHONPATH": str(repo), "CUDA_VISIBLE_DEVICES": ""}
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(command)} failed:\n{stderr.decode()[-2000:]}")
    return usage.ru_maxrss / 1024, seconds


def markdown(work_dir):
    stored = {p.stem.split("-", 1)[1]: json.loads(p.read_text()) for p in sorted(work_dir.glob("memory-*.json"))}
    lines = ["| file | options | " + " | ".join(f"{label} peak RSS MB | {label} s" for label in stored) + " |",
             "|---|---|" + "---:|---:|" * len(stored)]
    for file, options in CASES:
        key = f"{file} {' '.join(options)}".strip()
        cells = []
        for results in stored.values():
            case = results["cases"].get(key)
            cells += [f"{case['rss_mb']:.0f}", f"{case['seconds']:.0f}"] if case else ["-", "-"]
        lines.append(f"| {file} | {' '.join(options) or '(whole file)'} | " + " | ".join(cells) + " |")
    notes = [f"{label}: {r['repo']} at {r['commit']}, {r['date']}, medians of {r['runs']} runs, other processes "
             f"used {r['foreign_cores']:.2f} cores on average" for label, r in stored.items()]
    return "\n".join([machine(), "", *lines, "", *notes])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", action="append", required=True, help="LABEL=PATH of a samplecnn checkout")
    parser.add_argument("--work-dir", type=pathlib.Path, default=pathlib.Path("/tmp/samplecnn-bench-predict"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--file", action="append", choices=sorted(FILES), help="only the cases of this file")
    args = parser.parse_args()
    cases = [(file, options) for file, options in CASES if not args.file or file in args.file]
    repos = {label: pathlib.Path(path).resolve() for label, path in (r.split("=", 1) for r in args.repo)}

    run_dir = trained_run(args.work_dir)
    files = audio_files(args.work_dir)
    watch = LoadWatch()
    measured = {label: {} for label in repos}
    for round_ in range(args.runs):
        for label, repo in rotated(repos.items(), round_):
            for file, options in cases:
                key = f"{file} {' '.join(options)}".strip()
                rss, seconds = peak_rss(repo, run_dir, files[file], options)
                measured[label].setdefault(key, []).append({"rss_mb": rss, "seconds": seconds})
                log(f"round {round_ + 1} {label}: {key}: {rss:.0f} MB, {seconds:.1f} s")
    for label, repo in repos.items():
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip() or "(not a git checkout)"
        stored = args.work_dir / f"memory-{label}.json"
        earlier = json.loads(stored.read_text())["cases"] if stored.exists() else {}
        results = {"repo": str(repo), "commit": commit, "date": time.strftime("%Y-%m-%d %H:%M"), "runs": args.runs,
                   "foreign_cores": watch.foreign_cores(),
                   "cases": {**earlier, **{key: {"rss_mb": statistics.median(r["rss_mb"] for r in runs),
                                                 "seconds": statistics.median(r["seconds"] for r in runs), "runs": runs}
                                           for key, runs in measured[label].items()}}}
        stored.write_text(json.dumps(results, indent=1))
    print(markdown(args.work_dir))


if __name__ == "__main__":
    main()
