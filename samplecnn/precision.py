"""Mixed precision only where it is faster on the device at hand.

bfloat16 is not a speed-up on every CPU: measured with the same model, it trains 1.29x
faster than float32 on an AMD EPYC with AVX-512 BF16 but 0.81x as fast on an Intel Xeon
with the same instruction set and no AMX (bench/README.md). So on a CPU, ``--mixed-precision``
times a few training steps of the run's own model in both precisions and keeps bfloat16
only when it is clearly faster; the outcome is cached per machine, TensorFlow and samplecnn versions, model
and batch size. On a GPU the compute capability decides: bfloat16 from Ampere (8.0) on,
float16 with loss scaling on Volta and Turing (7.x), float32 before.

Whatever a run trained in, a trained model predicts in float32 (:func:`load_float32`): its
weights are float32, its scores then do not depend on the machine that evaluates it, and the
exports can convert it (TFLite has no bfloat16 convolution).
"""
import dataclasses
import json
import math
import os
import pathlib
import platform
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

import samplecnn

FLOAT32, BFLOAT16, FLOAT16 = "float32", "mixed_bfloat16", "mixed_float16"
MIN_SPEEDUP = 1.05
"""bfloat16 must beat float32 by this factor in the probe: smaller differences are noise."""
PROBE_ROUNDS, PROBE_ROUND_SECONDS, PROBE_STEPS = 3, 1.0, (2, 25)
"""Each precision is timed in PROBE_ROUNDS rounds of about PROBE_ROUND_SECONDS, within the
fewest and most steps of PROBE_STEPS: two 0.07-s steps of a small model time too noisily to decide."""


@dataclasses.dataclass(frozen=True)
class Choice:
    """The Keras dtype policy of a run and why it was chosen."""

    policy: str
    reason: str


def set_policy(policy):
    keras.mixed_precision.set_global_policy(policy)


def choose(wanted, make_model, batch_shape, num_classes, cache_key, measure=True):
    """The policy for a run: float32 unless ``wanted``, then the device's faster one.

    ``make_model()`` builds and compiles the run's model under the current global policy;
    ``batch_shape`` is one training batch's input shape; ``cache_key`` names the model
    and batch size in the probe cache. ``measure=False`` (the workers of a multi-worker run,
    which would each measure and could disagree) keeps a CPU in float32.
    """
    if not wanted:
        return Choice(FLOAT32, "mixed precision not requested")
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return gpu_choice(tf.config.experimental.get_device_details(gpus[0]).get("compute_capability"))
    if not measure:
        return Choice(FLOAT32, "stays in float32: the workers of a multi-worker run on CPUs would each time "
                               "bfloat16 and could choose differently")
    key = machine_key(cache_key)
    cache = ProbeCache()
    speedup = cache.get(key)
    source = "measured earlier on this machine"
    if speedup is None:
        speedup = bfloat16_speedup(make_model, batch_shape, num_classes)
        cache.put(key, speedup)
        source = "measured now"
    if speedup >= MIN_SPEEDUP:
        return Choice(BFLOAT16, f"bfloat16 trains {speedup:.2f}x as fast as float32 on this CPU ({source})")
    return Choice(FLOAT32, f"stays in float32: bfloat16 trains only {speedup:.2f}x as fast on this CPU ({source}; "
                           f"it must reach {MIN_SPEEDUP}x)")


def load_float32(path):
    """The Keras model saved at ``path``, computing in float32 in every layer."""
    return in_float32(keras.models.load_model(path, compile=False))


def in_float32(model):
    """``model`` itself when every layer computes in float32, else a copy that does, with its weights."""
    if all(layer.dtype_policy.name == FLOAT32 for layer in model.layers):
        return model

    def float32_layer(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": FLOAT32})

    copy = keras.models.clone_model(model, clone_function=float32_layer)
    copy.set_weights(model.get_weights())
    return copy


def gpu_choice(compute_capability):
    if compute_capability is None:
        return Choice(FLOAT32, "stays in float32: the GPU does not report its compute capability")
    major, minor = compute_capability
    if major >= 8:
        return Choice(BFLOAT16, f"bfloat16 tensor cores (compute capability {major}.{minor})")
    if major == 7:
        return Choice(FLOAT16, f"float16 tensor cores with loss scaling (compute capability {major}.{minor})")
    return Choice(FLOAT32, f"stays in float32: compute capability {major}.{minor} has no tensor cores")


def bfloat16_speedup(make_model, batch_shape, num_classes):
    """float32 step time over bfloat16 step time, the two models stepped in turn."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(batch_shape, dtype=np.float32)
    y = np.eye(num_classes, dtype=np.float32)[rng.integers(0, num_classes, batch_shape[0])]
    models = {}
    for policy in (FLOAT32, BFLOAT16):
        set_policy(policy)
        models[policy] = make_model()
        models[policy].train_on_batch(x, y)  # traces the step
    set_policy(FLOAT32)
    start = time.perf_counter()
    models[FLOAT32].train_on_batch(x, y)
    fewest, most = PROBE_STEPS
    steps = min(most, max(fewest, math.ceil(PROBE_ROUND_SECONDS / (time.perf_counter() - start))))
    times = {policy: [] for policy in models}
    for _ in range(PROBE_ROUNDS):
        for policy, model in models.items():
            start = time.perf_counter()
            for _ in range(steps):
                model.train_on_batch(x, y)
            times[policy].append(time.perf_counter() - start)
    return statistics.median(times[FLOAT32]) / statistics.median(times[BFLOAT16])


def machine_key(model_key):
    """The probe cache's key: this CPU, this TensorFlow, this samplecnn (its training kernels
    change what bfloat16 gains), and the model and batch size."""
    return f"{cpu_name()} | TensorFlow {tf.__version__} | samplecnn {samplecnn.__version__} | {model_key}"


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


class ProbeCache:
    """Speed-ups measured on this machine, in $SAMPLECNN_CACHE (default ~/.cache/samplecnn)."""

    def __init__(self):
        root = os.environ.get("SAMPLECNN_CACHE") or pathlib.Path(
            os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") / "samplecnn"
        self.path = pathlib.Path(root) / "precision.json"

    def _entries(self):
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def get(self, key):
        return self._entries().get(key)

    def put(self, key, speedup):
        entries = {**self._entries(), key: round(speedup, 4)}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"tmp-{os.getpid()}-{self.path.name}")
            tmp.write_text(json.dumps(entries, indent=1))
            os.replace(tmp, self.path)
        except OSError:
            pass  # an unwritable cache only means measuring again next time
