"""samplecnn against the same SampleCNN written in PyTorch, trained and run side by side.

    .venv/bin/pip install -e '.[bench]'        # PyTorch: a benchmark-only dependency
    .venv/bin/python bench/bench_peer.py [--rounds 4] [--steps 6] [--quick]
    .venv/bin/python bench/bench_peer.py --repo before=/tmp/samplecnn-base   # + another checkout

Every configuration lives in a long-lived process of its own (built, traced or compiled and
warmed up once); the processes are then stepped in turn, round by round, in a rotated
order, so that each sees the same machine state, and the median of --rounds rounds is
reported. Configurations:

  samplecnn float32      build_model + training.compile_model (SGD, Nesterov) and model.fit on
                         one batch repeated from memory; inference: a tf.function forward
  samplecnn bfloat16     the same under the mixed_bfloat16 policy
  samplecnn + tcmalloc   float32 with libtcmalloc_minimal preloaded (when installed)
  samplecnn + jemalloc   float32 with libjemalloc preloaded (when installed)
  samplecnn XLA          float32 with jit_compile=True
  PyTorch eager          the same layers (checked: every weight shape and the parameter count
                         equal the Keras model's), SGD Nesterov, tcmalloc when installed
  PyTorch compiled       torch.compile of that model (inductor), tcmalloc when installed

Workloads: the mtt SE model at batch 23 (59049-sample segments, 50 tags) and the scd ReSE-2
model at batch 23 (22050 samples, 35 words), training steps; mtt SE inference at batch 32.
Besides the rates it reports the machine (lscpu model and flags) and the float32 and
bfloat16 4096x4096 matmul peaks of TensorFlow, so that rates can be read as a fraction of
what the CPU can do. Prints Markdown tables and writes results.json to --work-dir.
"""
import argparse
import dataclasses
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

BENCH = pathlib.Path(__file__).resolve().parent
ALLOCATORS = {"tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
              "jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    dataset: str
    block: str
    batch: int
    train: bool


WORKLOADS = {w.name: w for w in (
    Workload("mtt SE train b23", "mtt", "se", 23, True),
    Workload("scd ReSE-2 train b23", "scd", "rese2", 23, True),
    Workload("mtt SE inference b32", "mtt", "se", 32, False),
)}


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    framework: str  # keras or torch
    precision: str = "float32"
    compiled: bool = False  # torch.compile, or XLA for keras
    allocator: str = ""  # a key of ALLOCATORS
    repo: str = ""  # another checkout of samplecnn to import (--repo), e.g. an earlier commit

    def env(self):
        env = dict(os.environ)
        if self.allocator:
            env["LD_PRELOAD"] = ALLOCATORS[self.allocator]
        if self.repo:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [self.repo, env.get("PYTHONPATH")]))
        return env


CONFIGS = [
    Config("samplecnn float32", "keras"),
    Config("samplecnn bfloat16", "keras", precision="bfloat16"),
    Config("samplecnn + tcmalloc", "keras", allocator="tcmalloc"),
    Config("samplecnn + jemalloc", "keras", allocator="jemalloc"),
    Config("samplecnn XLA", "keras", compiled=True),
    Config("PyTorch eager", "torch", allocator="tcmalloc"),
    Config("PyTorch compiled", "torch", compiled=True, allocator="tcmalloc"),
]
BASELINE = "samplecnn float32"


def repo_configs(repos):
    """float32 configurations of other checkouts, from ``--repo NAME=PATH`` values."""
    configs = []
    for value in repos:
        name, _, path = value.partition("=")
        if not path or not (pathlib.Path(path) / "samplecnn" / "__init__.py").is_file():
            sys.exit(f"--repo {value!r}: expected NAME=PATH of a samplecnn checkout, e.g. "
                     "before=/tmp/samplecnn-base (git clone -q . /tmp/samplecnn-base && git -C "
                     "/tmp/samplecnn-base checkout -q COMMIT)")
        configs.append(Config(f"samplecnn {name}", "keras", repo=str(pathlib.Path(path).resolve())))
    return configs


def log(message):
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the PyTorch peer

def architecture(workload):
    """What the PyTorch peer needs of the Keras model, computed where Keras is imported: the
    peer's process must not load TensorFlow (its LLVM clashes with PyTorch's)."""
    from samplecnn.datasets import get_spec
    from samplecnn.models import ModelConfig
    from samplecnn.models.blocks import RESIDUAL_DROPOUT
    from samplecnn.models.samplecnn import block_filters

    spec = get_spec(workload.dataset)
    config = ModelConfig.for_spec(spec, block=workload.block)
    return {**config.to_dict(), "filters": block_filters(config.num_blocks, config.init_features),
            "residual_dropout": RESIDUAL_DROPOUT, "samples": spec.segment_samples}


def torch_model(arch):
    """The SampleCNN described by ``architecture()`` in PyTorch (channels first)."""
    import torch
    from torch import nn

    def bn(channels):  # Keras's defaults: momentum 0.99, epsilon 1e-3
        return nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01)

    class SqueezeExcitation(nn.Module):
        def __init__(self, channels):
            super().__init__()
            hidden = max(1, int(round(channels * arch['amplifying_ratio'])))
            self.reduce, self.expand = nn.Linear(channels, hidden), nn.Linear(hidden, channels)

        def forward(self, x):
            s = torch.sigmoid(self.expand(torch.relu(self.reduce(x.mean(dim=2)))))
            return x * s.unsqueeze(2)

    class Block(nn.Module):
        """basic / se / res1 / res2 / rese1 / rese2, as samplecnn.models.blocks builds them."""

        def __init__(self, block, c_in, c_out):
            super().__init__()
            self.residual = block.startswith("res")
            num_convs = int(block[-1]) if self.residual else 1
            self.convs = nn.ModuleList(nn.Conv1d(c_in if i == 0 else c_out, c_out, 3, padding=1)
                                       for i in range(num_convs))
            self.bns = nn.ModuleList(bn(c_out) for _ in range(num_convs))
            self.dropout = nn.Dropout(arch['residual_dropout'])
            self.se = SqueezeExcitation(c_out) if "se" in block else None
            self.shortcut = (nn.Sequential(nn.Conv1d(c_in, c_out, 1), bn(c_out))
                             if self.residual and c_in != c_out else None)

        def forward(self, x):
            shortcut = x
            for i, (conv, norm) in enumerate(zip(self.convs, self.bns)):
                if i > 0:
                    x = self.dropout(torch.relu(x))
                x = norm(conv(x))
            if not self.residual:
                x = nn.functional.max_pool1d(torch.relu(x), 3)
                return self.se(x) if self.se else x
            if self.se:
                x = self.se(x)
            x = x + (self.shortcut(shortcut) if self.shortcut else shortcut)
            return nn.functional.max_pool1d(torch.relu(x), 3)

    class SampleCNN(nn.Module):
        def __init__(self):
            super().__init__()
            features, widths = arch["init_features"], arch["filters"]
            self.conv0 = nn.Sequential(nn.Conv1d(1, features, 3, stride=3), bn(features), nn.ReLU())
            self.blocks = nn.Sequential(*(Block(arch["block"], c_in, c_out)
                                          for c_in, c_out in zip([features] + widths[:-1], widths)))
            self.head = nn.Sequential(nn.Linear(widths[-1], widths[-1]), bn(widths[-1]), nn.ReLU(),
                                      nn.Dropout(arch["dropout"]), nn.Linear(widths[-1], arch["num_classes"]))

        def forward(self, x):  # logits; the loss applies the sigmoid or softmax
            return self.head(self.blocks(self.conv0(x)).amax(dim=2))

    if arch["multi"]:
        raise ValueError("the PyTorch peer builds single-level models only")
    return SampleCNN()


def weight_sizes_torch(model):
    """Element counts of every parameter and BatchNorm statistic, sorted."""
    return sorted([p.numel() for p in model.parameters()]
                  + [b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked")])


def weight_sizes_keras(model):
    return sorted(int(w.numpy().size) for w in model.weights)


# ---------------------------------------------------------------- children

def keras_child(config, workload, steps):
    """Builds, warms up, then answers every stdin line with the rate of ``steps`` steps."""
    import numpy as np
    import tensorflow as tf

    from bench_train import compiled_model, training_rate  # beside this script
    from samplecnn.datasets import get_spec

    spec = get_spec(workload.dataset)
    model = compiled_model(workload.dataset, workload.block, mixed=config.precision == "bfloat16",
                           jit_compile=config.compiled)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((workload.batch, spec.segment_samples, 1), dtype=np.float32)
    if workload.train:
        y = np.eye(spec.num_classes, dtype=np.float32)[rng.integers(0, spec.num_classes, workload.batch)]
        batches = tf.data.Dataset.from_tensors((x, y)).repeat()

        def rate():
            return training_rate(model, batches, workload.batch, steps)
    else:
        forward = tf.function(lambda batch: model(batch, training=False), jit_compile=config.compiled)

        def rate():
            forward(x).numpy()
            start = time.perf_counter()
            for _ in range(steps):
                forward(x).numpy()
            return workload.batch * steps / (time.perf_counter() - start)
    serve(rate, weight_sizes_keras(model))


def torch_child(config, workload, steps, arch):
    import torch

    torch.manual_seed(0)
    model = torch_model(arch)
    x = torch.randn(workload.batch, 1, arch["samples"])
    if workload.train:
        classes = arch["num_classes"]
        labels = torch.randint(0, classes, (workload.batch,))
        if arch["activation"] == "sigmoid":
            y = torch.nn.functional.one_hot(labels, classes).float()
            loss_fn = torch.nn.BCEWithLogitsLoss()
        else:
            y, loss_fn = labels, torch.nn.CrossEntropyLoss()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        model.train()

        def step(batch, target):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(batch), target)
            loss.backward()
            optimizer.step()
            return loss

        run = torch.compile(step) if config.compiled else step

        def once():
            run(x, y).item()
    else:
        model.eval()
        forward = torch.compile(model) if config.compiled else model

        def once():
            with torch.inference_mode():
                forward(x).sum().item()

    def rate():
        once()
        start = time.perf_counter()
        for _ in range(steps):
            once()
        return workload.batch * steps / (time.perf_counter() - start)
    serve(rate, weight_sizes_torch(model))


def serve(rate, weight_sizes):
    rate()  # trace or compile, first allocations
    print(json.dumps({"ready": True, "weight_sizes": weight_sizes}), flush=True)
    for _ in sys.stdin:
        print(json.dumps({"rate": rate()}), flush=True)


def matmul_peaks():
    """GFLOP/s of TensorFlow's 4096x4096 matmul in float32 and bfloat16 (best of 5)."""
    import tensorflow as tf

    peaks = {}
    for dtype in (tf.float32, tf.bfloat16):
        a = tf.random.normal((4096, 4096), dtype=tf.float32)
        a = tf.cast(a, dtype)
        tf.linalg.matmul(a, a).numpy()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            tf.linalg.matmul(a, a).numpy()
            times.append(time.perf_counter() - start)
        peaks[dtype.name] = 2 * 4096 ** 3 / min(times) / 1e9
    return peaks


# ---------------------------------------------------------------- parent

def start(config, workload, args):
    command = [sys.executable, __file__, "--child", config.name, "--workload", workload.name,
               "--steps", str(args.steps), "--architecture", json.dumps(architecture(workload))]
    command += [f"--repo={value}" for value in args.repo]
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=config.env())
    line = child.stdout.readline()
    if not line:
        sys.exit(f"{config.name} on {workload.name} failed (its error is above)")
    return child, json.loads(line)["weight_sizes"]


def measure(workload, configs, args):
    """{config name: [rates]}, the processes stepped in turn, one round at a time."""
    from bench_train import step_children

    children, sizes = {}, {}
    for config in configs:
        log(f"{workload.name}: starting {config.name}")
        children[config.name], sizes[config.name] = start(config, workload, args)
    reference = sizes[BASELINE]
    for name, weights in sizes.items():
        if weights != reference:
            sys.exit(f"{name} has other weights than {BASELINE}: {sum(weights)} vs {sum(reference)} values")
    return step_children(children, args.rounds), sum(reference)


def cpu_description():
    """lscpu's model name and the vector and matrix extensions that decide float32/bfloat16 speed."""
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    wanted = sorted(f for f in flags if f.startswith(("avx512", "amx", "avx_vnni")) or f in ("avx2", "fma"))
    return {"model": fields.get("Model name", "?").strip(), "cores": os.cpu_count(), "flags": wanted}


def versions():
    import importlib.metadata

    return {p: importlib.metadata.version(p) for p in ("tensorflow", "keras", "torch", "numpy")}


def markdown(results):
    lines = []
    for workload, row in results["workloads"].items():
        base = row["rates"][BASELINE]["median"]
        lines += ["", f"| {workload} ({row['parameters']:,} weights) | segments/s | vs {BASELINE} |",
                  "|---|---:|---:|"]
        lines += [f"| {name} | {r['median']:.2f} | {r['median'] / base:.2f} |" for name, r in row["rates"].items()]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=pathlib.Path, default=pathlib.Path("/tmp/samplecnn-bench-peer"))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per configuration and round")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated, of: " + ", ".join(WORKLOADS))
    parser.add_argument("--configs", default=",".join(c.name for c in CONFIGS), help="comma-separated names")
    parser.add_argument("--quick", action="store_true", help="one round of 2 steps")
    parser.add_argument("--repo", action="append", default=[], metavar="NAME=PATH",
                        help="also measure the samplecnn of another checkout (float32), named 'samplecnn NAME'")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--architecture", type=json.loads, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(BENCH))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    extra = repo_configs(args.repo)
    by_name = {c.name: c for c in CONFIGS + extra}
    if args.child:
        config, workload = by_name[args.child], WORKLOADS[args.workload]
        if config.framework == "torch":
            torch_child(config, workload, args.steps, args.architecture)
        else:
            keras_child(config, workload, args.steps)
        return
    if args.quick:
        args.rounds, args.steps = 1, 2
    configs = [by_name[name] for name in args.configs.split(",")] + extra
    missing = sorted({c.allocator for c in configs if c.allocator and not os.path.exists(ALLOCATORS[c.allocator])})
    if missing:
        sys.exit(f"{', '.join(ALLOCATORS[m] for m in missing)} not found: apt-get install libtcmalloc-minimal4 "
                 "libjemalloc2, or leave those configurations out with --configs")
    results = {"cpu": cpu_description(), "versions": versions(), "loadavg_before": os.getloadavg(),
               "command": " ".join(sys.argv), "workloads": {}}
    results["matmul_gflops"] = matmul_peaks()
    for name in args.workloads.split(","):
        rates, parameters = measure(WORKLOADS[name], configs, args)
        results["workloads"][name] = {"parameters": parameters, "rates": {
            n: {"median": statistics.median(r), "runs": r} for n, r in rates.items()}}
    results["loadavg_after"] = os.getloadavg()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    (args.work_dir / "results.json").write_text(json.dumps(results, indent=1))
    print(f"{results['cpu']['model']}, {results['cpu']['cores']} cores; flags: {' '.join(results['cpu']['flags'])}")
    print("matmul 4096x4096: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in results["matmul_gflops"].items()))
    print(markdown(results))


if __name__ == "__main__":
    main()
