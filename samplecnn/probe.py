"""Linear probes: a scikit-learn classifier on the embeddings of a trained run.

Segments of a built data set go once through the run's model up to ``layer`` (inputs
standardized with the run's training statistics, as the backbone expects); the vectors are
cached on disk per (checkpoint sha256, layer, manifest fingerprint). A StandardScaler and a
classifier are fitted on the train segments for each value of the classifier's
regularisation, the value with the lowest validation loss is kept, and test clips are
scored like evaluate.py scores a run (segment probabilities averaged per clip). The fitted
probe is then written as Keras layers on the embedding layer: the probe is a run directory
(config.json, final-*.h5, results.json, probe.json) that predict.py, evaluate.py, report and
export take like any other.
"""
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import pathlib
import time
import warnings

import keras
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from samplecnn import balance, inference, metrics, pipeline, training, transfer
from samplecnn.datasets import MULTILABEL
from samplecnn.models import EMBEDDING_LAYER
from samplecnn.records import file_sha256, write_text_atomic

log = logging.getLogger("samplecnn")

PROBE = "probe.json"
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class ProbeKind:
    """A classifier a probe can fit: ``make(value, multilabel)`` builds it with regularisation
    ``parameter`` = value (tried over ``grid``); ``dense(fitted)`` gives its layers as
    [(kernel, bias, activation)] from the scaled embedding to the logits."""

    parameter: str
    grid: tuple
    make: object
    dense: object


_PROBES = {}


def register_probe(name, kind):
    """Makes ``samplecnn probe --classifier NAME`` fit ``kind`` (a ProbeKind)."""
    _PROBES[name] = kind


def list_probes():
    return sorted(_PROBES)


def _logistic_regression(value, multilabel):
    model = LogisticRegression(C=value, max_iter=2000)
    return OneVsRestClassifier(model) if multilabel else model


def _logistic_dense(fitted):
    if isinstance(fitted, OneVsRestClassifier):
        kernel = np.concatenate([e.coef_ for e in fitted.estimators_]).T
        return [(kernel, np.concatenate([e.intercept_ for e in fitted.estimators_]), None)]
    return [(fitted.coef_.T, fitted.intercept_, None)]


def _mlp(value, multilabel):
    return MLPClassifier(hidden_layer_sizes=(256,), alpha=value, max_iter=500, early_stopping=True, random_state=0)


def _mlp_dense(fitted):
    last = len(fitted.coefs_) - 1
    return [(kernel, bias, None if i == last else fitted.activation)
            for i, (kernel, bias) in enumerate(zip(fitted.coefs_, fitted.intercepts_))]


register_probe("logreg", ProbeKind("C", (0.001, 0.01, 0.1, 1.0, 10.0), _logistic_regression, _logistic_dense))
register_probe("mlp", ProbeKind("alpha", (1e-4, 1e-3, 1e-2, 1e-1, 1.0), _mlp, _mlp_dense))


class ProbeError(ValueError):
    """A probe cannot be fitted on this run and data set."""


def fingerprint(manifest):
    """Changes whenever the data set is rebuilt: the sha256 of its manifest.json."""
    return hashlib.sha256((pathlib.Path(manifest["dir"]) / "manifest.json").read_bytes()).hexdigest()


def cache_path(cache_dir, checkpoint_sha256, layer, manifest):
    return pathlib.Path(cache_dir) / f"{checkpoint_sha256[:16]}-{layer}-{fingerprint(manifest)[:16]}.npz"


def compute_embeddings(model, layer, manifest, batch_size=64):
    """{split_x, split_y} for train and val segments, and test_x, test_y, test_clip (the clip
    index of each segment) for the test split."""
    features = keras.Model(model.input, inference.embedding_output(model, layer))
    arrays = {}
    for split in ("train", "val"):
        xs, ys = [], []
        for audio, labels in pipeline.segment_dataset(manifest, split, batch_size):
            xs.append(np.asarray(features.predict_on_batch(audio)))
            ys.append(labels.numpy())
        arrays[f"{split}_x"], arrays[f"{split}_y"] = np.concatenate(xs), np.concatenate(ys)
    xs, ys, clips, first = [], [], [], 0
    for audio, labels, _ in pipeline.clip_dataset(manifest).batch(8):
        count, segments = audio.shape[0], audio.shape[1]
        flat = np.reshape(audio.numpy(), (count * segments, *audio.shape[2:]))
        xs.append(np.asarray(features.predict_on_batch(flat)))
        ys.append(labels.numpy())
        clips.append(np.repeat(np.arange(first, first + count), segments))
        first += count
    arrays.update(test_x=np.concatenate(xs), test_y=np.concatenate(ys), test_clip=np.concatenate(clips))
    return arrays


def cached_embeddings(path, compute):
    """The arrays stored at ``path``, or ``compute()``'s, stored there atomically; (arrays, cached)."""
    path = pathlib.Path(path)
    if path.is_file():
        with np.load(path) as stored:
            return dict(stored), True
    arrays = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"tmp-{os.getpid()}-{path.name}")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return arrays, False


def probabilities(fitted, x, num_classes):
    """(segments, classes) probabilities of a fitted pipeline."""
    return np.asarray(fitted.predict_proba(x), np.float64).reshape(len(x), num_classes)


def log_loss(labels, probs, task):
    """Mean cross-entropy, as the training loss of the task."""
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    if task == MULTILABEL:
        return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
    return float(-np.mean(np.sum(labels * np.log(p), axis=1)))


def targets(labels, task):
    return labels.astype(np.int64) if task == MULTILABEL else labels.argmax(axis=1)


def fit_probe(kind, arrays, task):
    """(fitted pipeline, chosen value, {value: validation loss}) over ``kind``'s grid."""
    num_classes = arrays["train_y"].shape[1]
    losses, fitted = {}, {}
    for value in kind.grid:
        model = make_pipeline(StandardScaler(), kind.make(value, task == MULTILABEL))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(arrays["train_x"], targets(arrays["train_y"], task))
        fitted[value] = model
        losses[value] = log_loss(arrays["val_y"], probabilities(model, arrays["val_x"], num_classes), task)
    best = min(kind.grid, key=lambda value: losses[value])
    return fitted[best], best, losses


def keras_head(model, layer, kind, fitted, num_classes, activation):
    """``model`` up to ``layer`` followed by the fitted probe as Dense layers (the scaler
    folded into the first): the probe as a Keras model that tags audio."""
    scaler, classifier = fitted[0], fitted[-1]
    dense = kind.dense(classifier)
    kernel, bias, act = dense[0]
    dense[0] = (kernel / scaler.scale_[:, None], bias - (scaler.mean_ / scaler.scale_) @ kernel, act)
    kernel, bias, act = dense[-1]
    if kernel.shape[1] == 1 and num_classes == 2:  # a binary classifier's one logit z: softmax([0, z])
        dense[-1] = (np.concatenate([np.zeros_like(kernel), kernel], axis=1), np.concatenate([[0.0], bias]), act)
    x = inference.embedding_output(model, layer)
    for i, (kernel, bias, act) in enumerate(dense):
        name = "probe_logits" if i == len(dense) - 1 else f"probe_dense{i + 1}"
        layer_ = keras.layers.Dense(kernel.shape[1], activation=act, name=name)
        x = layer_(x)
        layer_.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    outputs = keras.layers.Activation(activation, dtype="float32", name="predictions")(x)
    return keras.Model(model.input, outputs, name=f"{model.name}_probe")


def did_not_learn(fitted, arrays, spec):
    """A warning when a single-label probe's validation accuracy is within noise of chance
    (as training.did_not_learn judges a run), else None."""
    val_guesses = probabilities(fitted, arrays["val_x"], spec.num_classes).argmax(axis=1)
    val_accuracy = float(np.mean(val_guesses == arrays["val_y"].argmax(axis=1)))
    if not training.did_not_learn([{"val_accuracy": val_accuracy}], spec, len(arrays["val_y"])):
        return None
    return (f"the probe did not learn: its validation accuracy {val_accuracy:.3f} is within noise of chance for "
            f"{spec.num_classes} classes and {len(arrays['val_y'])} validation segments; try another --layer or "
            "--classifier, or more clips per class")


def check_classes(manifest):
    """Every class needs train segments with it (and, multi-label, without it) to be fitted."""
    counts, segments = balance.count_labels(manifest), manifest["splits"]["train"]["segments"]
    multilabel = pipeline.spec_of(manifest).task == MULTILABEL
    unusable = [name for name, count in zip(manifest["classes"], counts)
                if count == 0 or (multilabel and count == segments)]
    if unusable:
        raise ProbeError(f"class(es) {', '.join(unusable)} of {manifest['dir']} have "
                         f"{'no train clips' if not multilabel else 'no train clips with and without them'}; a probe "
                         "learns each class from the train split: add clips or leave the class out")


def probe(run_path, dataset, data_dir="./data", log_dir="./log", layer=EMBEDDING_LAYER, classifier="logreg",
          cache_dir=None):
    """Fits a probe on the embeddings of ``run_path`` (a run directory or checkpoint) for
    data set ``dataset``; returns (probe run directory, probe.json's contents).

    Embeddings are cached in ``cache_dir`` (default: ``DATA_DIR/DATASET/embeddings``)."""
    if classifier not in _PROBES:
        raise ProbeError(f"--classifier {classifier} is not registered; choose from {', '.join(list_probes())}")
    kind = _PROBES[classifier]
    checkpoint, run_config = inference.load_config(run_path)
    manifest = pipeline.load_manifest(pipeline.dataset_dir(data_dir, dataset))
    spec = pipeline.spec_of(manifest)
    transfer.check_format(run_config, spec, f"the run {run_path}")
    model, _ = inference.load_trained(checkpoint)
    inference.embedding_output(model, layer)  # a missing layer is an error before any work
    check_classes(manifest)
    checkpoint_sha256 = file_sha256(checkpoint)
    cache_dir = pipeline.dataset_dir(data_dir, dataset).parent / "embeddings" if cache_dir is None else cache_dir
    standardized = training.with_run_statistics(manifest, run_config)
    arrays, cached = cached_embeddings(cache_path(cache_dir, checkpoint_sha256, layer, manifest),
                                       lambda: compute_embeddings(model, layer, standardized))
    started = time.monotonic()
    fitted, value, losses = fit_probe(kind, arrays, spec.task)
    seconds = time.monotonic() - started
    clip_scores = np.zeros(arrays["test_y"].shape)
    np.add.at(clip_scores, arrays["test_clip"], probabilities(fitted, arrays["test_x"], spec.num_classes))
    clip_scores /= np.bincount(arrays["test_clip"], minlength=len(clip_scores))[:, None]
    results = metrics.evaluate_scores(arrays["test_y"], clip_scores, spec.classes, spec.task, spec.threshold)
    head = keras_head(model, layer, kind, fitted, spec.num_classes, spec.activation)
    warning = did_not_learn(fitted, arrays, spec)
    if warning:
        log.warning(warning)
    run = training.Run(training.make_run_dir(log_dir, f"{datetime.datetime.now():%Y%m%d_%H%M%S}-{dataset}-"
                                                      f"probe-{classifier}"))
    final = run.path(training.final_name(results, run_config["train"].get("recipe", training.DEFAULT_RECIPE)))
    record = {"test": results, "checkpoint": final.name, "best_val_loss": losses[value], "epochs": 0, "steps": 0,
              "learned": warning is None, "warning": warning}
    config = {
        **run_config,
        "train": {**run_config["train"], "dataset": dataset, "data_dir": str(data_dir)},
        "model": {**run_config["model"], "num_classes": spec.num_classes, "activation": spec.activation},
        "spec": manifest["spec"], "classes": manifest["classes"], "sample_dtype": manifest["sample_dtype"],
        "data": str(pathlib.Path(manifest["dir"]).resolve()),
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "init_from": None, "class_weights": None,
        "probe": {"source": str(checkpoint.parent.resolve()), "checkpoint": str(checkpoint.resolve()),
                  "sha256": checkpoint_sha256, "layer": layer, "classifier": classifier,
                  "parameter": kind.parameter, "chosen": value,
                  "validation_loss": {str(v): loss for v, loss in losses.items()},
                  "fit_seconds": round(seconds, 3), "cached_embeddings": cached},
    }
    with run.removed_if_failed_unstarted():
        write_text_atomic(run.path(training.CONFIG), json.dumps(config, indent=1))
        training.save_atomic(head, final)
        for name in (PROBE, training.RESULTS):
            write_text_atomic(run.path(name), json.dumps(record, indent=1))
        run.save_state(training.RunState(finished=True))
    log.info("probe %s (%s %g of %s): %s", classifier, kind.parameter, value, ", ".join(map(str, kind.grid)),
             metrics.format_report(results).splitlines()[0])
    return run.dir, record
