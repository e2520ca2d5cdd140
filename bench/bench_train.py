"""Training and input-pipeline throughput of samplecnn, against its own ceiling and the 2019 design.

    .venv/bin/python bench/bench_train.py [--quick] [--work-dir /tmp/samplecnn-bench-train]

Generates (once, cached in --work-dir) an mtt-like set (29-s clips, 10 segments of 59049
samples each) and an scd-like set (1-s clips, one segment of 22050 samples), all train,
in 8 shards as training reads 8 in parallel, and builds each with build.build_from_index
as int16 records and once more as float32 records. Then measures, in rounds so that
every configuration sees the same machine state, the median of --runs runs of:

  a  training throughput (segments/s) of the mtt SE and scd ReSE-2 models (128 features)
     at batch 23 and 64, compiled by training.compile_model and run by model.fit, fed
     (i) one real batch repeated from memory: the forward+backward ceiling, and
     (ii) pipeline.segment_dataset(training=True) on the build: real training;
  b  the input pipeline alone: samplecnn's (int16, batch then one vectorized parse) vs
     the 2019 design (float32 records, tf.io.parse_single_example per segment in 8
     parallel calls, then batch), both reading and shuffling the same way;
  c  bfloat16 mixed precision (precision.BFLOAT16) vs float32 for both models
     at batch 23, in process; and on mtt SE at batch 23, each in its own process (XLA
     and the BFC allocator cannot be switched inside one): float32, XLA, the BFC
     allocator, bfloat16, bfloat16 + XLA, stepped in turn so that they interleave too.

With --device gpu (a GPU must be present) it measures instead, for both models, real training
on the GPU at batch 23, 64, 128 and 256 in float32 and in the precision that --mixed-precision
picks for that GPU, and whether the input pipeline (on the CPU) keeps the GPU fed: the
pipeline's rate per core against the best training rate, i.e. the cores feeding takes.
Either way it prints, from the models' FLOPs and the pipeline's measured rate per core,
how many cores would feed a GPU training at a given fraction of its published peak.

Every timed fit() leaves out its first step, which pays for starting the iterator
(filling the shuffle buffer) and, on the first call, for tracing. Prints Markdown tables
and writes results.json to --work-dir.
"""
import argparse
import dataclasses
import importlib.metadata
import json
import math
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads: no C++ info lines

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import samplecnn  # noqa: E402
from samplecnn import build, pipeline, precision, recipes, training  # noqa: E402
from samplecnn.datasets import get_spec  # noqa: E402
from samplecnn.datasets.base import Clip, DatasetIndex  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
import rawdata  # noqa: E402

SHARDS = 8  # training's default --num-readers: every reader has a shard of its own
READERS = training.TrainConfig.num_readers
BASELINE_PARALLEL_CALLS = 8
PIPELINE_BATCH = training.TrainConfig.batch_size


@dataclasses.dataclass(frozen=True)
class BenchSet:
    """A generated train set that follows a built-in spec (clip length, segments, classes)."""

    spec_name: str
    clips: int
    quick_clips: int
    tags_per_clip: int


SETS = {
    "mtt": BenchSet("mtt", clips=40, quick_clips=12, tags_per_clip=3),  # 400 segments
    "scd": BenchSet("scd", clips=2000, quick_clips=400, tags_per_clip=1),
}
MODELS = {"mtt SE": ("mtt", "se"), "scd ReSE-2": ("scd", "rese2")}
FEEDS = ("memory", "pipeline")


@dataclasses.dataclass(frozen=True)
class Workload:
    model: str  # a key of MODELS
    batch: int
    precision: str  # float32 or bfloat16

    @property
    def name(self):
        return f"{self.model} b{self.batch} {self.precision}"


WORKLOADS = ([Workload(m, b, "float32") for m in MODELS for b in (23, 64)]
             + [Workload(m, 23, "bfloat16") for m in MODELS])


@dataclasses.dataclass(frozen=True)
class Variant:
    """A process-wide training set-up of mtt SE at batch 23, measured in a process of its own."""

    mixed: bool = False
    jit_compile: bool = False
    env: tuple = ()  # (name, value) pairs added to the environment


VARIANTS = {
    "float32": Variant(),
    "XLA": Variant(jit_compile=True),
    "BFC allocator": Variant(env=(("TF_CPU_ALLOCATOR_USE_BFC", "true"),)),
    "bfloat16": Variant(mixed=True),
    "bfloat16 + XLA": Variant(mixed=True, jit_compile=True),
}
VARIANT_MODEL, VARIANT_BATCH = "mtt SE", 23


# ---------------------------------------------------------------- data

def generated_index(raw_dir, spec, clips, tags_per_clip, split_of=lambda i: "train"):
    """DatasetIndex of ``clips`` tone WAVs at the spec's rate and clip length, written once.

    A clip's first class sets its tone's pitch; ``split_of(i)`` gives clip i's split. A marker file
    written last tells a complete set from one interrupted while it was being written.
    """
    raw_dir = pathlib.Path(raw_dir)
    complete = raw_dir / "complete"
    index = []
    for i in range(clips):
        first_class = i % spec.num_classes
        labels = tuple(spec.classes[(first_class + 7 * k) % spec.num_classes] for k in range(tags_per_clip))
        path = raw_dir / f"{i % 16:x}" / f"clip{i:05d}.wav"
        if not complete.exists():
            audio = rawdata.tone(spec.clip_seconds, spec.sample_rate, rawdata.class_frequency(first_class % 20), seed=i)
            rawdata.write_wav(path, audio, spec.sample_rate)
        index.append(Clip(f"clip{i:05d}", str(path), labels, split_of(i)))
    complete.touch()
    shard_clips = math.ceil(sum(c.split == "train" for c in index) / SHARDS)
    return DatasetIndex(dataclasses.replace(spec, clips_per_shard=shard_clips), index)


def built(data_dir, name, index, sample_dtype="int16"):
    """The manifest of ``index`` built as ``data_dir/name``; a finished build is reused as is."""
    out_dir = pipeline.dataset_dir(data_dir, name)
    if not (out_dir / build.MANIFEST).exists():
        # One worker, in this process: spawned workers would re-import this script, and TensorFlow with it.
        build.build_from_index(index, out_dir, name, workers=1, sample_dtype=sample_dtype)
    return pipeline.load_manifest(out_dir)


def clip_count(args, set_name):
    return SETS[set_name].quick_clips if args.quick else SETS[set_name].clips


def dataset_name(args, set_name, sample_dtype):
    return f"{set_name}-{clip_count(args, set_name)}-{sample_dtype}"


def prepare_sets(args):
    """{set name: {sample dtype: manifest}} of the generated sets, built as int16 and float32."""
    manifests = {}
    for name, bench_set in SETS.items():
        clips = clip_count(args, name)
        index = generated_index(args.work_dir / "raw" / f"{name}-{clips}", get_spec(bench_set.spec_name), clips,
                                bench_set.tags_per_clip)
        manifests[name] = {dtype: built(args.work_dir / "data", dataset_name(args, name, dtype), index, dtype)
                           for dtype in ("int16", "float32")}
    return manifests


def training_batches(manifest, batch_size, seed=0):
    """Batches exactly as training._train reads them."""
    return pipeline.segment_dataset(manifest, "train", batch_size, training=True, num_readers=READERS, seed=seed,
                                    drop_remainder=True)


def repeated_batch(manifest, batch_size):
    """One real training batch, repeated from memory: feeding costs nothing."""
    return tf.data.Dataset.from_tensors(next(iter(training_batches(manifest, batch_size)))).repeat()


def baseline_2019_batches(manifest, batch_size, seed=0):
    """The 2019 input pipeline on a float32 build: one tf.io.parse_single_example per
    segment in 8 parallel calls, then batch. Shards are read and shuffled as samplecnn
    does, and decoding reuses samplecnn's, so only the record format and where the
    parsing happens differ."""
    length, classes = manifest["spec"]["segment_samples"], len(manifest["classes"])

    def parse(serialized):
        features = tf.io.parse_single_example(serialized, pipeline.SEGMENT_FEATURES)
        return (pipeline.decode_audio(features["audio"], manifest, length),
                pipeline.decode_label(features["label"], classes))

    paths = pipeline.shard_paths(manifest, "train")
    files = tf.data.Dataset.from_tensor_slices(paths).shuffle(len(paths), seed=seed).repeat()
    records = files.interleave(tf.data.TFRecordDataset, cycle_length=min(READERS, len(paths)),
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    records = records.shuffle(recipes.get_recipe(recipes.DEFAULT_RECIPE).shuffle_segments, seed=seed)
    return (records.map(parse, num_parallel_calls=BASELINE_PARALLEL_CALLS)
            .batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))


# ---------------------------------------------------------------- measuring

def compiled_model(set_name, block, mixed=False, jit_compile=False):
    """build_model, compiled by training.compile_model for stage 0 of a default TrainConfig."""
    precision.set_policy(precision.BFLOAT16 if mixed else precision.FLOAT32)
    model = samplecnn.build_model(set_name, block=block)
    config = training.TrainConfig(dataset=set_name, block=block)
    training.compile_model(model, config, stage=0, task=get_spec(set_name).task)
    model.jit_compile = jit_compile  # what model.compile(..., jit_compile=...) sets
    return model


class StepClock(keras.callbacks.Callback):
    """Wall-clock time at the end of every training step."""

    def on_train_begin(self, logs=None):
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def training_rate(model, batches, batch_size, timed_steps):
    """Segments/s of model.fit over ``timed_steps`` steps after an untimed first step."""
    clock = StepClock()
    model.fit(batches, steps_per_epoch=timed_steps + 1, epochs=1, verbose=0, callbacks=[clock],
              shuffle=False)  # the data set shuffles; Keras would warn that it ignores shuffle=True
    return batch_size * timed_steps / (clock.ends[-1] - clock.ends[0])


def pipeline_rate(batches, batch_size, segments):
    """Segments/s of iterating ``batches`` without a model, after the first batch."""
    iterator = iter(batches)
    next(iterator)
    steps = math.ceil(segments / batch_size)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return steps * batch_size / (time.perf_counter() - start)


def timed_steps(args, batch_size):
    return max(2, math.ceil(args.segments / batch_size))


class TrainingBench:
    """One compiled model per workload and its two feeds, ready for timed fit() calls."""

    def __init__(self, workload, manifests, args):
        set_name, block = MODELS[workload.model]
        manifest = manifests[set_name]["int16"]
        self.workload, self.steps = workload, timed_steps(args, workload.batch)
        self.model = compiled_model(set_name, block, mixed=workload.precision == "bfloat16")
        self.feeds = {"memory": repeated_batch(manifest, workload.batch),
                      "pipeline": training_batches(manifest, workload.batch)}
        training_rate(self.model, self.feeds["memory"], workload.batch, 1)  # trace, first allocations

    def rate(self, feed):
        return training_rate(self.model, self.feeds[feed], self.workload.batch, self.steps)


def variant_child(args):
    """Child process of one Variant: builds and warms up, then prints one rate per input line."""
    variant = VARIANTS[args.variant]
    set_name, block = MODELS[VARIANT_MODEL]
    manifest = pipeline.load_manifest(pipeline.dataset_dir(args.work_dir / "data",
                                                           dataset_name(args, set_name, "int16")))
    model = compiled_model(set_name, block, mixed=variant.mixed, jit_compile=variant.jit_compile)
    batches = repeated_batch(manifest, VARIANT_BATCH)
    steps = timed_steps(args, VARIANT_BATCH)
    training_rate(model, batches, VARIANT_BATCH, 1)
    print(json.dumps({"ready": True}), flush=True)
    for _ in sys.stdin:
        print(json.dumps({"rate": training_rate(model, batches, VARIANT_BATCH, steps)}), flush=True)


def measure_variants(args):
    """{variant: [rates]}: every variant's process steps once per round, in turn."""
    children = {}
    for name, variant in VARIANTS.items():
        command = [sys.executable, __file__, "--variant", name, "--work-dir", str(args.work_dir),
                   "--segments", str(args.segments)] + (["--quick"] if args.quick else [])
        child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, **dict(variant.env)})
        if not child.stdout.readline():  # ready: built and warmed up
            sys.exit(f"variant {name} failed (its error is above)")
        children[name] = child
    return step_children(children, args.runs)


def step_children(children, rounds):
    """{name: [rates]}: asks every child process for one rate per round, in a rotated order,
    then closes them. A child answers each line on its stdin with ``{"rate": ...}``."""
    rates = {name: [] for name in children}
    for round_ in range(rounds):
        for name, child in rotated(children.items(), round_):
            child.stdin.write("run\n")
            child.stdin.flush()
            rates[name].append(json.loads(child.stdout.readline())["rate"])
            log(f"  round {round_ + 1} {name:22} {rates[name][-1]:7.2f} segments/s")
    for child in children.values():
        child.stdin.close()
        child.wait()
    return rates


def rotated(items, round_):
    """``items`` starting at a different one each round, so that none always runs first."""
    items = list(items)
    shift = round_ % len(items)
    return items[shift:] + items[:shift]


def log(message):
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- machine and load

def machine():
    """One line naming the machine and the versions that the numbers depend on."""
    cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    ram_gb = int(open("/proc/meminfo").readline().split()[1]) / 2**20
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in ("tensorflow", "keras", "numpy"))
    return f"{os.cpu_count()} CPUs ({cpu}), {ram_gb:.0f} GB RAM; Python {platform.python_version()}, {versions}"


def machine_busy_seconds():
    """CPU seconds spent by all processes on this machine since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds():
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class LoadWatch:
    """Cores used on average by *other* processes while the benchmark ran: numbers are only
    trustworthy when this stays near 0."""

    def __init__(self):
        self.loadavg = os.getloadavg()
        self.busy, self.own, self.start = machine_busy_seconds(), own_cpu_seconds(), time.monotonic()

    def foreign_cores(self):
        own = own_cpu_seconds() - self.own
        return max(0.0, machine_busy_seconds() - self.busy - own) / (time.monotonic() - self.start)


# ---------------------------------------------------------------- report

def summary(rates):
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "runs": len(rates)}


def markdown(results):
    train, pipe, variants = results["training"], results["pipeline"], results["variants"]
    lines = [results["machine"], "",
             f"Load average (1, 5, 15 min) at the start: {', '.join(f'{x:.2f}' for x in results['loadavg'])}; "
             f"other processes used {results['foreign_cores']:.2f} cores on average during the run.", "",
             "Training, segments/s (median, min-max):", "",
             "| model | batch | precision | in memory (i) | pipeline (ii) | (ii) / (i) | runs |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for w in WORKLOADS:
        m, p = train[w.name]["memory"], train[w.name]["pipeline"]
        lines.append(f"| {w.model} | {w.batch} | {w.precision} | {m['median']:.2f} ({m['min']:.2f}-{m['max']:.2f}) "
                     f"| {p['median']:.2f} ({p['min']:.2f}-{p['max']:.2f}) | {p['median'] / m['median']:.3f} "
                     f"| {m['runs']} |")
    lines += ["", "bfloat16 mixed precision vs float32, batch 23 (same runs as above):", "",
              "| model | feed | float32 | bfloat16 | speed-up |", "|---|---|---:|---:|---:|"]
    for model in MODELS:
        for feed in FEEDS:
            f32, bf16 = (train[Workload(model, 23, p).name][feed]["median"] for p in ("float32", "bfloat16"))
            lines.append(f"| {model} | {feed} | {f32:.2f} | {bf16:.2f} | {bf16 / f32:.2f}x |")
    lines += ["", f"{VARIANT_MODEL} at batch {VARIANT_BATCH}, in memory, one process per set-up:",
              "", "| set-up | segments/s (median, min-max) | vs float32 | runs |", "|---|---:|---:|---:|"]
    for name, s in variants.items():
        lines.append(f"| {name} | {s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f}) "
                     f"| {s['median'] / variants['float32']['median']:.2f}x | {s['runs']} |")
    lines += ["", *pipeline_markdown(pipe, results["args"]["pipeline_segments"])]
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {'yes' if ok else 'NO'} |" for t, m, ok in targets(results)]
    return "\n".join(lines)


def pipeline_markdown(pipe, segments):
    lines = [f"Input pipeline alone, segments/s (median of {next(iter(pipe.values()))['samplecnn']['runs']} "
             f"runs of {segments} segments):", "",
             "| set | batch | samplecnn (int16, batched parse) | 2019 (float32, per-example parse) | ratio |",
             "|---|---:|---:|---:|---:|"]
    for name, s in pipe.items():
        ours, baseline = s["samplecnn"]["median"], s["2019"]["median"]
        lines.append(f"| {name} | {PIPELINE_BATCH} | {ours:.0f} | {baseline:.0f} | {ours / baseline:.2f}x |")
    return lines


def targets(results):
    """(target, measured, met) for the training performance targets."""
    train, pipe = results["training"], results["pipeline"]
    ratios = {w.name: train[w.name]["pipeline"]["median"] / train[w.name]["memory"]["median"] for w in WORKLOADS}
    pipe_ratios = {k: s["samplecnn"]["median"] / s["2019"]["median"] for k, s in pipe.items()}
    speedups = {m: train[Workload(m, 23, "bfloat16").name]["pipeline"]["median"]
                / train[Workload(m, 23, "float32").name]["pipeline"]["median"] for m in MODELS}

    def listed(values, fmt):
        return ", ".join(f"{k} {fmt.format(v)}" for k, v in values.items())

    return [
        ("training from the pipeline within 5% of the in-memory ceiling", listed(ratios, "{:.3f}"),
         min(ratios.values()) >= 0.95),
        ("input pipeline >= 1.5x the 2019 design", listed(pipe_ratios, "{:.2f}x"), min(pipe_ratios.values()) >= 1.5),
        ("bfloat16 >= 1.5x float32 training, batch 23", listed(speedups, "{:.2f}x"), min(speedups.values()) >= 1.5),
    ]


# ---------------------------------------------------------------- feeding a GPU

GPU_BATCHES = (23, 64, 128, 256)
GPU_PEAKS_TFLOPS = {  # published dense peaks of the SXM parts: (float32 or TF32, bfloat16/float16)
    "A100": (156, 312),
    "H100": (495, 989),
}
PEAK_FRACTION = 0.4  # what large convolutions typically reach of the tensor-core peak


def training_gflops_per_segment(model, segment_samples):
    """Forward convolution and dense FLOPs of one segment, times 3 for the backward pass."""
    length, flops = segment_samples, 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv1D):
            stride = layer.strides[0]
            out = length // stride if layer.padding == "same" else (length - layer.kernel_size[0]) // stride + 1
            flops += 2 * layer.kernel_size[0] * layer.input.shape[-1] * layer.filters * out
            length = out
        elif isinstance(layer, keras.layers.MaxPooling1D):
            length //= layer.pool_size[0]
        elif isinstance(layer, keras.layers.Dense):
            flops += 2 * layer.input.shape[-1] * layer.units
    return 3 * flops / 1e9


def feed_estimate(pipe_rates):
    """Markdown: cores of samplecnn's input pipeline a GPU at PEAK_FRACTION of its peak needs."""
    lines = [f"Cores to feed a GPU training at {PEAK_FRACTION:.0%} of its published peak "
             "(pipeline rate measured here, per core):", "",
             "| model | GFLOP / segment (train) | pipeline / core | GPU | precision | segments/s | cores |",
             "|---|---:|---:|---|---|---:|---:|"]
    for name, (set_name, block) in MODELS.items():
        model = samplecnn.build_model(set_name, block=block)
        gflops = training_gflops_per_segment(model, get_spec(set_name).segment_samples)
        per_core = pipe_rates[set_name] / os.cpu_count()
        for gpu, peaks in GPU_PEAKS_TFLOPS.items():
            for precision_name, peak in zip(("TF32", "bfloat16"), peaks):
                rate = PEAK_FRACTION * peak * 1e3 / gflops
                lines.append(f"| {name} | {gflops:.2f} | {per_core:.0f} | {gpu} | {precision_name} | {rate:.0f} "
                             f"| {rate / per_core:.1f} |")
    return lines


def measure_gpu(args, manifests, pipe_rates):
    """Markdown: training on the GPU by batch size and precision, and the cores feeding takes."""
    gpu = tf.config.list_physical_devices("GPU")[0]
    mixed = precision.gpu_choice(tf.config.experimental.get_device_details(gpu).get("compute_capability"))
    lines = [f"GPU: {tf.config.experimental.get_device_details(gpu).get('device_name', gpu.name)}; "
             f"--mixed-precision picks {mixed.policy} ({mixed.reason})", "",
             "| model | batch | precision | pipeline (ii) segments/s | cores to feed it |", "|---|---:|---|---:|---:|"]
    for name, (set_name, block) in MODELS.items():
        per_core = pipe_rates[set_name] / os.cpu_count()
        for policy in dict.fromkeys((precision.FLOAT32, mixed.policy)):
            for batch in GPU_BATCHES:
                precision.set_policy(policy)
                model = samplecnn.build_model(set_name, block=block)
                training.compile_model(model, training.TrainConfig(dataset=set_name, block=block), stage=0,
                                       task=get_spec(set_name).task)
                batches = training_batches(manifests[set_name]["int16"], batch)
                training_rate(model, batches, batch, 1)
                rates = [training_rate(model, batches, batch, timed_steps(args, batch)) for _ in range(args.runs)]
                rate = statistics.median(rates)
                lines.append(f"| {name} | {batch} | {policy} | {rate:.1f} | {rate / per_core:.2f} |")
                log(lines[-1])
    precision.set_policy(precision.FLOAT32)
    return lines


# ---------------------------------------------------------------- main

def measure_pipeline(args, manifests):
    """b: segments/s of samplecnn's pipeline and of the 2019 design, interleaved per round."""
    log("b: input pipeline alone")
    pipeline_runs = {}
    for round_ in range(args.runs):
        for name, manifests_of_set in rotated(manifests.items(), round_):
            feeds = {"samplecnn": training_batches(manifests_of_set["int16"], PIPELINE_BATCH),
                     "2019": baseline_2019_batches(manifests_of_set["float32"], PIPELINE_BATCH)}
            runs = pipeline_runs.setdefault(name, {k: [] for k in feeds})
            for design, batches in rotated(feeds.items(), round_):
                runs[design].append(pipeline_rate(batches, PIPELINE_BATCH, args.pipeline_segments))
                log(f"  {name} {design:9} {runs[design][-1]:8.0f} segments/s")
    return pipeline_runs


def results_header(watch):
    return (f"{machine()}\n\nLoad average (1, 5, 15 min) at the start: {', '.join(f'{x:.2f}' for x in watch.loadavg)}; "
            f"other processes used {watch.foreign_cores():.2f} cores on average during the run.\n")

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=pathlib.Path, default=pathlib.Path("/tmp/samplecnn-bench-train"))
    parser.add_argument("--quick", action="store_true", help="small sets, one short run each")
    parser.add_argument("--runs", type=int, help="runs per configuration (default 5, --quick 1)")
    parser.add_argument("--segments", type=int, help="segments per timed training run (default 200, --quick 46)")
    parser.add_argument("--pipeline-segments", type=int, help="segments per input-pipeline run (default 20000, "
                                                              "--quick 2000)")
    parser.add_argument("--pipeline-only", action="store_true", help="measure only the input pipelines (part b)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="gpu: training on the GPU by batch size and precision, and the cores feeding it takes")
    parser.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cpu":
        tf.config.set_visible_devices([], "GPU")
    elif not tf.config.list_physical_devices("GPU"):
        sys.exit("--device gpu: TensorFlow sees no GPU here (tf.config.list_physical_devices('GPU') is empty)")
    args.runs = args.runs or (1 if args.quick else 5)
    args.segments = args.segments or (46 if args.quick else 200)
    args.pipeline_segments = args.pipeline_segments or (2000 if args.quick else 20000)
    if args.variant:
        variant_child(args)
        return

    watch = LoadWatch()
    log(f"load average {watch.loadavg}; generating and building the data sets in {args.work_dir}")
    manifests = prepare_sets(args)

    pipeline_runs = measure_pipeline(args, manifests)
    pipe = {name: {design: summary(r) for design, r in runs.items()} for name, runs in pipeline_runs.items()}
    pipe_rates = {name: s["samplecnn"]["median"] for name, s in pipe.items()}
    if args.pipeline_only or args.device == "gpu":
        gpu_lines = ["", *measure_gpu(args, manifests, pipe_rates)] if args.device == "gpu" else []
        print("\n".join([results_header(watch), *pipeline_markdown(pipe, args.pipeline_segments), *gpu_lines, "",
                         *feed_estimate(pipe_rates)]))
        return

    log("c: process-wide set-ups (XLA, BFC allocator, bfloat16) on mtt SE, batch 23")
    variant_runs = measure_variants(args)

    log("a, c: training throughput, in memory and from the pipeline")
    benches = [TrainingBench(w, manifests, args) for w in WORKLOADS]
    training_runs = {w.name: {feed: [] for feed in FEEDS} for w in WORKLOADS}
    for round_ in range(args.runs):
        for bench in rotated(benches, round_):
            for feed in rotated(FEEDS, round_):
                rate = bench.rate(feed)
                training_runs[bench.workload.name][feed].append(rate)
                log(f"  {bench.workload.name:26} {feed:8} {rate:7.2f} segments/s")

    results = {
        "machine": machine(),
        "loadavg": watch.loadavg,
        "foreign_cores": watch.foreign_cores(),
        "args": {"runs": args.runs, "segments": args.segments, "pipeline_segments": args.pipeline_segments,
                 "quick": args.quick},
        "training": {name: {feed: summary(r) for feed, r in feeds.items()} for name, feeds in training_runs.items()},
        "pipeline": pipe,
        "variants": {name: summary(r) for name, r in variant_runs.items()},
        "runs": {"training": training_runs, "pipeline": pipeline_runs, "variants": variant_runs},
    }
    (args.work_dir / "results.json").write_text(json.dumps(results, indent=1))
    print(markdown(results))
    print("\n".join(["", *feed_estimate(pipe_rates)]))


if __name__ == "__main__":
    main()
