"""Exported models against Keras: file size, load time, ms per 1-s segment, streaming speed.

    .venv/bin/python bench/bench_export.py RUN_DIR [RUN_DIR ...] [--rounds 5] [--work-dir /tmp/samplecnn-bench-export]

Exports each run to every format (samplecnn.deploy.export, parity checked) once, then in
--rounds rounds, visiting the backends in a rotated order each round, measures: load time,
the median ms per segment of 20 calls at batch 1 and of 5 calls at batch 32, and the
streaming real-time factor (StreamTagger, window 1 s, hop 0.25 s, over 20 s of noise and
tones: processing seconds per audio second). Reports medians over rounds and ratios to
Keras measured in the same rounds. Prints Markdown and writes results.json.
"""
import argparse
import json
import pathlib
import statistics
import time

import numpy as np

from samplecnn.deploy import export
from samplecnn.inference import Tagger
from samplecnn.streaming import StreamTagger

from bench_train import log, machine, rotated  # beside this script

FILES = {"keras": None, "saved_model": "saved_model", "tflite": "model.tflite", "tflite-int8": "model-int8.tflite",
         "onnx": "model.onnx"}


def keras_predict(tagger):
    return lambda pcm: tagger.model.predict_on_batch(((pcm - tagger.mean) / tagger.std)[..., np.newaxis])


def load(run, out, name):
    started = time.perf_counter()
    if name == "keras":
        tagger = Tagger.from_run(run)
        predict = keras_predict(tagger)
    else:
        tagger = Tagger.from_export(out / FILES[name])
        predict = tagger.model.runner.predict
    return tagger, predict, time.perf_counter() - started


def ms_per_segment(predict, pcm, calls):
    predict(pcm)  # warm-up (graph tracing, tensor allocation)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        predict(pcm)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times) / len(pcm)


def stream_rtf(tagger, audio):
    stream = StreamTagger(tagger, window=1.0, hop=0.25)
    started = time.perf_counter()
    for start in range(0, audio.size, 2205):
        stream.push(audio[start:start + 2205])
    stream.flush()
    return (time.perf_counter() - started) / (audio.size / tagger.sample_rate)


def bench_run(run, work_dir, rounds):
    out = work_dir / pathlib.Path(run).name
    if not (out / export.EXPORT_JSON).is_file():
        log(f"exporting {run}")
        export.export_run(run, out_dir=out, progress=log)
    info = json.loads((out / export.EXPORT_JSON).read_text())
    rng = np.random.default_rng(0)
    samples, rate = info["segment_samples"], info["sample_rate"]
    batch1 = (0.1 * rng.normal(size=(1, samples))).astype(np.float32)
    batch32 = (0.1 * rng.normal(size=(32, samples))).astype(np.float32)
    t = np.arange(20 * rate) / rate
    audio = (0.3 * np.sin(2 * np.pi * 440 * t * (1 + t / 20)) + 0.05 * rng.normal(size=t.size)).astype(np.float32)
    measured = {name: {"load_s": [], "batch1_ms": [], "batch32_ms": [], "stream_rtf": []} for name in FILES}
    for round_ in range(rounds):
        for name in rotated(list(FILES), round_):
            tagger, predict, seconds = load(run, out, name)
            entry = measured[name]
            entry["load_s"].append(seconds)
            entry["batch1_ms"].append(ms_per_segment(predict, batch1, 20))
            entry["batch32_ms"].append(ms_per_segment(predict, batch32, 5))
            entry["stream_rtf"].append(stream_rtf(tagger, audio))
        log(f"{pathlib.Path(run).name}: round {round_ + 1}/{rounds} done")
    sizes = {name: info["formats"][name]["bytes"] for name in FILES if name != "keras"}
    sizes["keras"] = (pathlib.Path(info["source_run"]) / info["checkpoint"]).stat().st_size
    return {name: {"bytes": sizes[name], **{k: statistics.median(v) for k, v in values.items()},
                   "rounds": values} for name, values in measured.items()}


def markdown(name, results):
    keras = results["keras"]
    lines = [f"**{name}**", "", "| format | size | load s | ms/segment, batch 1 | vs Keras | ms/segment, batch 32 | "
             "vs Keras | stream RTF (hop 0.25 s) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for fmt, r in results.items():
        lines.append(f"| {fmt} | {r['bytes'] / 1e6:.2f} MB | {r['load_s']:.2f} | {r['batch1_ms']:.2f} | "
                     f"{keras['batch1_ms'] / r['batch1_ms']:.2f}x | {r['batch32_ms']:.2f} | "
                     f"{keras['batch32_ms'] / r['batch32_ms']:.2f}x | {r['stream_rtf']:.4f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work-dir", type=pathlib.Path, default=pathlib.Path("/tmp/samplecnn-bench-export"))
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    results = {run: bench_run(run, args.work_dir, args.rounds) for run in args.runs}
    print(machine())
    for run, result in results.items():
        print(markdown(pathlib.Path(run).name, result) + "\n")
    (args.work_dir / "results.json").write_text(json.dumps({"machine": machine(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
