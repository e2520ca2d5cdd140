"""Multi-worker training: two real worker processes on loopback ports, named by TF_CONFIG."""
import csv
import json
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from samplecnn import pipeline

from scripts import ENV, TINY_NET, command

WORKERS = 2


def manifest_of(data):
    return pipeline.load_manifest(pipeline.dataset_dir(data, "chirps"))


def rows(dataset, batches=-1):
    """The audio rows of a segment data set, as bytes."""
    return [row.tobytes() for audio, _ in dataset.take(batches) for row in audio.numpy()]


def file_rows(manifest, name):
    records = tf.data.TFRecordDataset(str(pathlib.Path(manifest["dir"]) / name)).batch(64)
    return {row.tobytes() for batch in records for row in pipeline.parse_segments(batch, manifest)[0].numpy()}


def test_workers_read_their_own_files_and_score_each_val_segment_once(chirps):
    manifest = manifest_of(chirps)
    files = manifest["splits"]["train"]["shards"]
    assert len(files) == 3
    for index, own in ((0, [files[0], files[2]]), (1, [files[1]])):
        seen = set(rows(pipeline.segment_dataset(manifest, "train", 4, training=True, shard=(WORKERS, index)), 20))
        assert seen <= set().union(*(file_rows(manifest, name) for name in own))
        assert all(seen & file_rows(manifest, name) for name in own)
    everything = rows(pipeline.segment_dataset(manifest, "val", 5))
    shares = [rows(pipeline.segment_dataset(manifest, "val", 5, shard=(WORKERS, i))) for i in range(WORKERS)]
    assert len(everything) == 12 and [len(s) for s in shares] == [6, 6]
    assert sorted(shares[0] + shares[1]) == sorted(everything)


def test_fewer_train_files_than_workers_are_shared_by_segment(chirps):
    manifest = manifest_of(chirps)
    train = manifest["splits"]["train"]
    one_file = {**manifest, "splits": {**manifest["splits"], "train": {**train, "shards": train["shards"][:1]}}}
    shares = [set(rows(pipeline.segment_dataset(one_file, "train", 4, training=True, shard=(WORKERS, i)), 20))
              for i in range(WORKERS)]
    assert shares[0] and shares[1] and not shares[0] & shares[1]
    assert shares[0] | shares[1] <= file_rows(manifest, train["shards"][0])


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(args, tmp_path, script=None):
    """Starts one process per worker with its TF_CONFIG; ``script`` runs ``python -c`` instead of train.py."""
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(WORKERS)]}
    scratch = tmp_path / "tmp"
    scratch.mkdir(exist_ok=True)
    processes = []
    for index in range(WORKERS):
        env = {**ENV, "TMPDIR": str(scratch),
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        argv = [sys.executable, "-c", script, *map(str, args)] if script else command("train.py", *args)
        processes.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return processes


def finish(processes, timeout=600):
    results = [p.communicate(timeout=timeout) for p in processes]
    for p, (_, err) in zip(processes, results):
        assert p.returncode == 0, err[-3000:]
    return [out for out, _ in results]


STEPS = """
import hashlib, json, sys
import keras, numpy as np
from samplecnn import distributed, pipeline, training

manifest = pipeline.load_manifest(sys.argv[1])
strategy = training.make_strategy("multi_worker")
data = distributed.input_data(strategy, 4 * strategy.num_replicas_in_sync, lambda **kw: pipeline.segment_dataset(
    manifest, "train", training=True, drop_remainder=True, **kw))
val = distributed.input_data(strategy, 8, lambda **kw: pipeline.segment_dataset(manifest, "val", **kw))
with strategy.scope():
    model = keras.Sequential([keras.Input((729, 1)), keras.layers.Flatten(), keras.layers.Dense(2, "softmax")])
    model.compile(keras.optimizers.SGD(0.001), "categorical_crossentropy")


class Record(keras.callbacks.Callback):
    steps, epochs = [], []

    def on_train_batch_end(self, batch, logs=None):
        weights = hashlib.sha256(b"".join(w.tobytes() for w in self.model.get_weights())).hexdigest()
        seen = float(self.model.metrics[0].count.numpy())  # the loss tracker's samples, summed over the workers
        self.steps.append([weights, seen, float(logs["loss"])])

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(logs)


distributed.fit_function(model)(data, steps_per_epoch=3, epochs=2, validation_data=val, callbacks=[Record()],
                                verbose=0)
audio, labels = next(iter(pipeline.segment_dataset(manifest, "val", 12)))
val_loss = float(np.mean(keras.losses.categorical_crossentropy(labels, model(audio)).numpy()))
print(json.dumps({"steps": Record.steps, "epochs": Record.epochs, "val_loss": val_loss}))
"""


def test_every_worker_holds_the_same_weights_after_every_step(chirps, tmp_path):
    outputs = finish(start_workers([pipeline.dataset_dir(chirps, "chirps")], tmp_path, script=STEPS))
    chief, other = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    assert chief["steps"] == other["steps"] and chief["epochs"] == other["epochs"]
    weights, seen, _ = zip(*chief["steps"])
    assert len(set(weights)) == 6  # they change at every step, on both workers alike
    assert seen == (8, 16, 24) * 2  # a global batch of 8: 4 segments on each worker
    # Validation scores each of the 12 segments once, split between the workers: the loss of the whole split.
    assert chief["epochs"][-1]["val_loss"] > 0.01
    assert chief["epochs"][-1]["val_loss"] == pytest.approx(chief["val_loss"], rel=1e-5)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_train_on_two_workers_killed_and_resumed(chirps, tmp_path):
    logs = tmp_path / "log"
    args = ["chirps", "--data-dir", chirps, "--log-dir", logs, "--strategy", "multi_worker", "--block", "basic",
            "--num-stages", "1", "--max-epochs", "3", "--patience", "5", "--validation-steps", "5",
            *TINY_NET]  # the recipe's precision: float32 without a probe on multi-worker CPUs
    workers = start_workers(args, tmp_path)
    deadline = time.monotonic() + 600
    state_files = []
    while time.monotonic() < deadline and all(w.poll() is None for w in workers):
        state_files = list(logs.glob("*/state.json"))
        if state_files and json.loads(state_files[0].read_text())["epochs"] >= 1:
            break
        time.sleep(0.05)
    assert all(w.poll() is None for w in workers), "training ended before it could be interrupted"
    for w in workers:
        w.send_signal(signal.SIGKILL)
        w.communicate()
    (run_dir,) = logs.iterdir()  # only the chief writes under --log-dir
    assert not list(run_dir.glob("final-*.h5"))
    left_by_kill = set((tmp_path / "tmp").iterdir())

    chief, other = finish(start_workers(["--resume", run_dir], tmp_path))
    assert f"run directory: {run_dir}" in chief and "the chief worker wrote the run directory" in other
    assert list(logs.iterdir()) == [run_dir] and set((tmp_path / "tmp").iterdir()) == left_by_kill
    rows = read_csv(run_dir / "log.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and {r["stage"] for r in rows} == {"0"}
    assert [int(r["step"]) for r in rows] == [5, 10, 15]  # 3 global batches an epoch, a validation every 5 steps
    results = json.loads((run_dir / "results.json").read_text())
    assert (run_dir / results["checkpoint"]).is_file() and results["epochs"] == 3
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["strategy"] == "multi_worker" and config["train"]["log_dir"] == str(logs)
    assert config["train"]["mixed_precision"] and config["precision"]["policy"] == "float32"
    assert "workers of a multi-worker run" in config["precision"]["reason"]
