"""Where a training step goes, layer by layer: Keras's layers against samplecnn's.

    .venv/bin/python bench/bench_layers.py [--dataset mtt] [--rounds 5] [--batch 23]

Every convolution, batch normalization, ReLU and max pooling of the data set's default SE
model (its block shapes; conv0, squeeze-excitation and the head are left out) is timed
alone at the training batch size: a one-layer model, its output, input gradient and weight
gradients for a random output gradient, traced once in a tf.function. The Conv1D and
BatchNormalization rows are measured twice, with ``keras.layers`` and with
``samplecnn.models`` (the layers the zoo is built from); the versions alternate within
every round and the median of --rounds rounds is reported, per layer and summed over the
model's layers.
"""
import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras  # noqa: E402
from samplecnn import models  # noqa: E402
from samplecnn.datasets import get_spec  # noqa: E402

LAYERS = {  # name -> {implementation: factory(filters)}
    "Conv1D k3": {"keras": lambda f: keras.layers.Conv1D(f, 3, padding="same"),
                  "samplecnn": lambda f: models.Conv1D(f, 3, padding="same")},
    "BatchNorm": {"keras": lambda f: keras.layers.BatchNormalization(),
                  "samplecnn": lambda f: models.BatchNormalization()},
    "ReLU": {"keras": lambda f: keras.layers.ReLU()},
    "MaxPool 3": {"keras": lambda f: keras.layers.MaxPooling1D(3)},
}


def block_shapes(dataset):
    """(time steps, channels in, channels out) of each block's convolution."""
    spec = get_spec(dataset)
    widths = models.block_filters(spec.num_blocks, models.ModelConfig().init_features)
    steps = spec.segment_samples // 3
    shapes = []
    for c_in, c_out in zip([widths[0]] + widths[:-1], widths):
        shapes.append((steps, c_in, c_out))
        steps //= 3
    return shapes


def step_function(layer, x):
    """A traced forward + backward of ``layer`` alone, for a fixed random output gradient."""
    y = layer(x, training=True)
    dy = tf.constant(np.random.default_rng(1).standard_normal(y.shape).astype("float32"))

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
        return tape.gradient(y, [x] + layer.trainable_variables, output_gradients=dy)

    step(x)
    return step


def timed(step, x):
    start = time.perf_counter()
    for t in step(x):
        t.numpy()
    return (time.perf_counter() - start) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mtt")
    parser.add_argument("--batch", type=int, default=23)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cases = []  # (layer, implementation, shape, step, input)
    for shape in block_shapes(args.dataset):
        steps, c_in, c_out = shape
        x_in = tf.constant(rng.standard_normal((args.batch, steps, c_in)).astype("float32"))
        x_out = tf.constant(rng.standard_normal((args.batch, steps, c_out)).astype("float32"))
        for name, implementations in LAYERS.items():
            x = x_in if name.startswith("Conv") else x_out
            for implementation, factory in implementations.items():
                cases.append((name, implementation, shape, step_function(factory(c_out), x), x))
    times = {case[:3]: [] for case in cases}
    for round_number in range(args.rounds):
        order = cases[round_number % len(cases):] + cases[:round_number % len(cases)]
        for name, implementation, shape, step, x in order:
            times[name, implementation, shape].append(timed(step, x))
    medians = {key: statistics.median(values) for key, values in times.items()}

    print(f"{args.dataset} SE model, batch {args.batch}: forward + backward ms, median of {args.rounds} rounds")
    print("\n| block conv shape (steps, in, out) | " + " | ".join(
        f"{name} {impl}" for name, impls in LAYERS.items() for impl in impls) + " |")
    print("|---|" + "---:|" * sum(len(impls) for impls in LAYERS.values()))
    for shape in block_shapes(args.dataset):
        print(f"| {shape} | " + " | ".join(f"{medians[name, impl, shape]:.1f}" for name, impls in LAYERS.items()
                                           for impl in impls) + " |")
    totals = {(name, impl): sum(medians[name, impl, shape] for shape in block_shapes(args.dataset))
              for name, impls in LAYERS.items() for impl in impls}
    print("| sum over the blocks | " + " | ".join(f"{value:.1f}" for value in totals.values()) + " |")
    for name, impls in LAYERS.items():
        if "samplecnn" in impls:
            print(f"{name}: keras / samplecnn = {totals[name, 'keras'] / totals[name, 'samplecnn']:.2f}x")


if __name__ == "__main__":
    main()
