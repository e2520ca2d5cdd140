"""What the mixed-precision probe costs at the start of a run, and how steady its decision is.

    .venv/bin/python bench/bench_precision.py [--repeats 3] [--workloads "mtt SE b23,..."]

The ``samplecnn`` recipe probes by default (samplecnn.precision): the first run of a model
and batch size on a machine times a few training steps in float32 and in bfloat16 and keeps
the faster (bfloat16 only at >= 1.05x). Each repeat is a fresh process with an empty probe
cache, as a first run pays it: the probe's wall time (building, tracing and stepping both
models), the speed-up it measured, the policy it chose, and the float32 step time of
``model.fit`` beside it, so that the cost reads as a number of training steps.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

WORKLOADS = {  # name: (data set, block, init features, batch)
    "mtt SE b23": ("mtt", "se", 128, 23),
    "scd ReSE-2 b23": ("scd", "rese2", 128, 23),
    "scd SE-32 b23 (make demo)": ("scd", "se", 32, 23),
}


def child(name):
    """One cold probe of workload ``name``; prints a JSON line."""
    import numpy as np
    import tensorflow as tf

    import samplecnn
    from bench_train import training_rate  # beside this script
    from samplecnn import precision, training
    from samplecnn.datasets import get_spec

    dataset, block, features, batch = WORKLOADS[name]
    spec = get_spec(dataset)
    config = training.TrainConfig(dataset=dataset, block=block, init_features=features, batch_size=batch)

    def make_model():
        model = samplecnn.build_model(dataset, block=block, init_features=features)
        training.compile_model(model, config, stage=0, task=spec.task)
        return model

    start = time.perf_counter()
    choice = precision.choose(True, make_model, (batch, spec.segment_samples, 1), spec.num_classes, name)
    seconds = time.perf_counter() - start
    speedup = precision.ProbeCache().get(precision.machine_key(name))
    precision.set_policy(precision.FLOAT32)
    model = make_model()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, spec.segment_samples, 1), dtype=np.float32)
    y = np.eye(spec.num_classes, dtype=np.float32)[rng.integers(0, spec.num_classes, batch)]
    rate = training_rate(model, tf.data.Dataset.from_tensors((x, y)).repeat(), batch, 5)
    print(json.dumps({"probe_s": seconds, "speedup": speedup, "policy": choice.policy,
                      "float32_step_s": batch / rate}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    print("| workload | probe s (median, min-max) | float32 step s | probe in steps | speed-up measured "
          "(each repeat) | policy chosen |\n|---|---:|---:|---:|---|---|")
    for name in args.workloads.split(","):
        runs = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as cache:
                out = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True,
                                     env={**os.environ, "SAMPLECNN_CACHE": cache, "TF_CPP_MIN_LOG_LEVEL": "3"},
                                     check=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
        probe = [r["probe_s"] for r in runs]
        step = statistics.median(r["float32_step_s"] for r in runs)
        speedups = " / ".join(f"{r['speedup']:.2f}" for r in runs)
        print(f"| {name} | {statistics.median(probe):.1f} ({min(probe):.1f}-{max(probe):.1f}) | {step:.2f} | "
              f"{statistics.median(probe) / step:.0f} | {speedups} | "
              f"{' / '.join(sorted({r['policy'] for r in runs}))} |", flush=True)


if __name__ == "__main__":
    main()
