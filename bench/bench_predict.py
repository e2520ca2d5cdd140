"""Prediction speed of a trained SampleCNN through samplecnn.inference.Tagger.

    .venv/bin/python bench/bench_predict.py [--quick] [--work-dir /tmp/samplecnn-bench-predict]

Makes (once, cached in --work-dir) a real run directory with training.train: the scd
spec and the default model (SE blocks, 128 features), one stage of one epoch on a tiny
generated set; its quality does not matter, its architecture does. Then, with
Tagger.from_run(run_dir), measures in rounds (median of --runs, after one untimed pass):

  A  files/s of tagger.run_files over 200 one-second 16-kHz WAVs (Speech Commands' format)
  B  files/s of tagger.run_files over 20 thirty-second 44.1-kHz MP3s

and the median of 20 interleaved calls, on a 1-s WAV and a 30-s MP3, of:
tagger.predict_file(path), audio.decode(path) alone (decoding and resampling) and
tagger.predict_array on the decoded samples (segmenting, standardizing, the model).
Prints Markdown tables and writes results.json to --work-dir.
"""
import argparse
import json
import pathlib
import statistics
import sys
import time

from samplecnn import audio, training
from samplecnn.datasets import get_spec
from samplecnn.inference import Tagger

from bench_train import LoadWatch, built, generated_index, log, machine, rawdata, rotated  # beside this script

WAV_RATE, MP3_RATE = 16000, 44100
SPLIT_CYCLE = ("train", "train", "val", "test")  # the splits of each class's clips
FILE_SETS = {  # name: (files, files with --quick, seconds, sample rate, format); MP3s at ffmpeg's 128 kbps
    "A": (200, 40, 1.0, WAV_RATE, "wav"),
    "B": (20, 4, 30.0, MP3_RATE, "mp3"),
}


def trained_run(work_dir):
    """A finished run directory of the default scd model; trained once, then reused."""
    log_dir = work_dir / "log"
    finished = sorted(log_dir.glob("*/final-*.h5"))
    if finished:
        return finished[-1].parent
    spec = get_spec("scd")
    clips = len(SPLIT_CYCLE) * spec.num_classes
    index = generated_index(work_dir / "raw" / "scd", spec, clips, tags_per_clip=1,
                            split_of=lambda i: SPLIT_CYCLE[i // spec.num_classes])
    built(work_dir / "data", "scd", index)
    config = training.TrainConfig(dataset="scd", data_dir=str(work_dir / "data"), log_dir=str(log_dir),
                                  num_stages=1, max_epochs=1)
    run_dir, _ = training.train(config, verbose=0)
    return run_dir


def audio_files(work_dir, name, quick):
    """The files of FILE_SETS[name] (the first few with ``quick``): tones of rotating pitch,
    all written once; a marker file written last tells a complete set."""
    count, quick_count, seconds, rate, suffix = FILE_SETS[name]
    folder = work_dir / "files" / name
    complete = folder / "complete"
    paths = [folder / f"file{i:04d}.{suffix}" for i in range(count)]
    if not complete.exists():
        write = rawdata.write_wav if suffix == "wav" else rawdata.write_encoded
        for i, path in enumerate(paths):
            write(path, rawdata.tone(seconds, rate, rawdata.class_frequency(i % 20), seed=i), rate)
        complete.touch()
    return paths[:quick_count] if quick else paths


def tag_all(tagger, paths):
    """(files/s, decode s per file, model s per file) of one tagger.run_files pass."""
    start = time.perf_counter()
    results = list(tagger.run_files(paths))
    seconds = time.perf_counter() - start
    failed = [r for r in results if r.error]
    if failed:
        sys.exit(f"{failed[0].path}: {failed[0].error}")
    return {"files_per_s": len(paths) / seconds,
            "decode_s_per_file": statistics.fmean(r.decode_seconds for r in results),
            "model_s_per_file": statistics.fmean(r.model_seconds for r in results)}


def single_file_ms(tagger, path, calls):
    """Median ms of predict_file, decode alone and the model alone on ``path``, interleaved."""
    samples = audio.decode(path, tagger.sample_rate)
    steps = {"predict_file": lambda: tagger.predict_file(path),
             "decode": lambda: audio.decode(path, tagger.sample_rate),
             "model": lambda: tagger.predict_array(samples, tagger.sample_rate)}
    times = {name: [] for name in steps}
    for _ in range(calls):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(t) for name, t in times.items()}


def markdown(results):
    lines = [results["machine"], "",
             f"Load average (1, 5, 15 min) at the start: {', '.join(f'{x:.2f}' for x in results['loadavg'])}; "
             f"other processes used {results['foreign_cores']:.2f} cores on average during the run.", "",
             f"Model: {results['model']}; loading it (Tagger.from_run) took {results['load_s']:.2f} s and the first "
             f"predict_file call {results['first_call_s']:.2f} s.", "",
             f"tagger.run_files, medians of {results['args']['runs']} runs (decode and model time per file are "
             "the FileResult fields; decoding runs in 2 threads beside the model):", "",
             "| files | files / s | audio s / s | decode ms / file | model ms / file | decode share |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in results["run_files"].items():
        _, _, seconds, rate, suffix = FILE_SETS[name]
        decode, model = 1000 * r["decode_s_per_file"], 1000 * r["model_s_per_file"]
        lines.append(f"| {name}: {r['files']} x {seconds:g}-s {rate / 1000:g}-kHz {suffix.upper()} "
                     f"| {r['files_per_s']:.1f} | {r['files_per_s'] * seconds:.0f} | {decode:.1f} | {model:.1f} "
                     f"| {decode / (decode + model):.0%} |")
    lines += ["", f"One call after loading, median ms of {results['args']['calls']} interleaved calls:", "",
              "| file | predict_file | decode | model | decode share |", "|---|---:|---:|---:|---:|"]
    for name, r in results["single_file"].items():
        lines.append(f"| {name} | {r['predict_file']:.1f} | {r['decode']:.1f} | {r['model']:.1f} "
                     f"| {r['decode'] / (r['decode'] + r['model']):.0%} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=pathlib.Path, default=pathlib.Path("/tmp/samplecnn-bench-predict"))
    parser.add_argument("--quick", action="store_true", help="fewer files, one run")
    parser.add_argument("--runs", type=int, help="run_files passes per file set (default 5, --quick 1)")
    parser.add_argument("--calls", type=int, default=20, help="predict_file calls per file")
    args = parser.parse_args()
    args.runs = args.runs or (1 if args.quick else 5)

    watch = LoadWatch()
    log(f"load average {watch.loadavg}; preparing the run directory and files in {args.work_dir}")
    run_dir = trained_run(args.work_dir)
    files = {name: audio_files(args.work_dir, name, args.quick) for name in FILE_SETS}

    start = time.perf_counter()
    tagger = Tagger.from_run(run_dir)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    tagger.predict_file(files["A"][0])
    first_call_s = time.perf_counter() - start
    for paths in files.values():  # warm-up, e.g. tracing for every batch shape run_files makes
        tag_all(tagger, paths)

    runs = {name: [] for name in FILE_SETS}
    for round_ in range(args.runs):
        for name, paths in rotated(files.items(), round_):
            runs[name].append(tag_all(tagger, paths))
            log(f"  {name}: {runs[name][-1]['files_per_s']:.1f} files/s")
    single = {"1-s WAV": single_file_ms(tagger, files["A"][0], args.calls),
              "30-s MP3": single_file_ms(tagger, files["B"][0], args.calls)}

    model = training.Run(run_dir).config["model"]
    results = {
        "machine": machine(),
        "loadavg": watch.loadavg,
        "foreign_cores": watch.foreign_cores(),
        "args": {"runs": args.runs, "calls": args.calls, "quick": args.quick},
        "run_dir": str(run_dir),
        "model": f"scd {model['block']}, {model['init_features']} features, {tagger.model.count_params():,} "
                 "parameters",
        "load_s": load_s,
        "first_call_s": first_call_s,
        "run_files": {name: {"files": len(files[name]),
                             **{k: statistics.median(r[k] for r in rs) for k in rs[0]}} for name, rs in runs.items()},
        "single_file": single,
        "runs": runs,
    }
    (args.work_dir / "results.json").write_text(json.dumps(results, indent=1))
    print(markdown(results))


if __name__ == "__main__":
    main()
