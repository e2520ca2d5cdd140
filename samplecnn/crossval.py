"""k-fold cross-validation on a fold set: one ordinary run per fold under one parent directory.

Fold k's run tests on fold k, validates on fold k+1 (mod K) and trains on the others
(``pipeline.training_manifest``), so every clip is tested exactly once over the K runs.
The parent directory holds ``cv.json`` (the options and the folds asked for) and, after
every finished fold, ``cv_results.json``: each fold's test scores (its results.json), their
mean and sample standard deviation, and the scores, per-class table and (single-label)
confusion matrix of the folds' test predictions pooled, i.e. concatenated. A fold's test
predictions are kept beside its run (``test_predictions.npz``), so a finished fold is never
predicted again. Every fold is resumable as any run is; an unfinished cross-validation of
the same data set and options is continued instead of starting a new one.
"""
import dataclasses
import io
import json
import logging
import os
import pathlib
import shutil
import statistics

import keras
import numpy as np
from sklearn import metrics as skm

from samplecnn import metrics, pipeline, precision, training
from samplecnn.datasets import MULTILABEL
from samplecnn.records import write_text_atomic

log = logging.getLogger("samplecnn")

CV_CONFIG, CV_RESULTS, PREDICTIONS = "cv.json", "cv_results.json", "test_predictions.npz"
SCORES = ("roc_auc", "pr_auc", "accuracy", "f1", "f1_micro", "accuracy_2019", "f1_2019")
"""The scalar test scores of results.json that are averaged over folds."""


def fold_dir(parent, fold):
    return pathlib.Path(parent) / f"fold-{fold}"


def check_folds(config, folds):
    """The fold set's manifest; raises DataError (no fold set, a fold outside 0..K-1) or
    ValueError (options cross-validation cannot take) before anything is created."""
    if config.fold is not None:
        raise ValueError("give the folds to cross-validate as ``folds``, not as TrainConfig.fold")
    if config.strategy == "multi_worker":
        raise ValueError("--cv and --fold train on one machine; drop --strategy multi_worker")
    directory = pipeline.dataset_dir(config.data_dir, config.dataset)
    manifest = pipeline.load_manifest(directory)
    for fold in folds if folds is not None else [0]:
        pipeline.training_manifest(directory, fold)  # raises DataError naming the problem
    return manifest


def cross_validate(config, folds=None, verbose=None):
    """Trains fold runs of the fold set ``config.dataset`` (``folds``: their numbers, default
    all) and returns (parent directory, cv results). Continues the newest unfinished
    cross-validation of the same options in the log directory, if there is one."""
    manifest = check_folds(config, folds)
    folds = list(range(len(manifest["folds"]))) if folds is None else sorted(set(folds))
    options = dataclasses.asdict(config)
    parent = find_unfinished(config.log_dir, options)
    created = parent is None
    if created:
        model_config = training.model_config_for(config, pipeline.spec_of(manifest))
        parent = training.make_run_dir(config.log_dir, f"{training.run_name(config, model_config)}-cv")
        cv = {"train": options, "folds": folds, "fold_names": manifest["folds"]}
    else:
        cv = json.loads((parent / CV_CONFIG).read_text())
        cv["folds"] = sorted(set(cv["folds"]) | set(folds))
        log.info("continuing the cross-validation in %s", parent)
    write_text_atomic(parent / CV_CONFIG, json.dumps(cv, indent=1))
    try:
        return _run_folds(parent, config, folds, verbose)
    except Exception:
        if created and not any(fold_dir(parent, k).exists() for k in range(len(manifest["folds"]))):
            shutil.rmtree(parent, ignore_errors=True)  # nothing was trained: leave no half-made directory
        raise


def resume(parent, verbose=None):
    """Continues the cross-validation in ``parent``: every fold it was asked for."""
    parent = pathlib.Path(parent)
    cv = json.loads((parent / CV_CONFIG).read_text())
    return _run_folds(parent, training.TrainConfig(**cv["train"]), cv["folds"], verbose)


def is_parent(directory):
    """True for a cross-validation's parent directory (``train.py --resume`` takes both kinds)."""
    return (pathlib.Path(directory) / CV_CONFIG).is_file()


def find_unfinished(log_dir, options):
    """The newest parent in ``log_dir`` of a cross-validation with these options that has not
    finished every fold, or None."""
    log_dir = pathlib.Path(log_dir)
    if not log_dir.is_dir():
        return None
    for parent in sorted((p for p in log_dir.iterdir() if is_parent(p)), reverse=True):
        cv = json.loads((parent / CV_CONFIG).read_text())
        if cv["train"] == options and not all(fold_finished(fold_dir(parent, k)) for k in range(len(cv["fold_names"]))):
            return parent
    return None


def fold_finished(directory):
    run = training.Run(directory)
    return run.path(training.CONFIG).is_file() and run.load_state().finished


def _run_folds(parent, config, folds, verbose):
    for fold in folds:
        directory = fold_dir(parent, fold)
        keras.backend.clear_session()  # each fold's model starts from a clean graph
        log.info("fold %d: %s", fold, directory)
        try:
            if (directory / training.CONFIG).is_file():
                training.resume(directory, verbose)
            else:
                if directory.is_dir() and not any(directory.iterdir()):
                    directory.rmdir()  # made just before a kill, before its config.json
                training.train(dataclasses.replace(config, fold=fold), verbose, directory=directory)
            save_predictions(directory)
            results = summarize(parent)
        except KeyboardInterrupt:
            raise training.RunInterrupted(parent) from None  # the parent resumes every fold
    return parent, results


def save_predictions(directory):
    """Writes a finished fold run's clip-level test predictions (labels, scores, clip ids) once."""
    path = pathlib.Path(directory) / PREDICTIONS
    if path.is_file():
        return
    run = training.Run(directory)
    model = precision.load_float32(run.final_checkpoint())
    labels, scores, clip_ids = metrics.predict_clips(model, pipeline.clip_dataset(pipeline.run_manifest(run.config)))
    buffer = io.BytesIO()
    np.savez(buffer, labels=labels.astype(np.uint8), scores=scores, clip_ids=np.array(clip_ids))
    tmp = path.with_name(f"tmp-{os.getpid()}-{path.name}")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)


def load_predictions(directory):
    with np.load(pathlib.Path(directory) / PREDICTIONS) as data:
        return data["labels"], data["scores"], [str(c) for c in data["clip_ids"]]


def summarize(parent):
    """Writes and returns cv_results.json from the finished fold runs in ``parent``."""
    parent = pathlib.Path(parent)
    cv = json.loads((parent / CV_CONFIG).read_text())
    names = cv["fold_names"]
    done = [k for k in range(len(names)) if fold_finished(fold_dir(parent, k))
            and (fold_dir(parent, k) / PREDICTIONS).is_file()]
    per_fold, labels, scores = [], [], []
    for k in done:
        results = json.loads((fold_dir(parent, k) / training.RESULTS).read_text())
        per_fold.append({"fold": k, "name": names[k], "run": fold_dir(parent, k).name,
                         "checkpoint": results["checkpoint"], "epochs": results["epochs"],
                         "learned": results.get("learned"), "warning": results.get("warning"),
                         "test": {key: results["test"][key] for key in (*SCORES, "clips")}})
        fold_labels, fold_scores, _ = load_predictions(fold_dir(parent, k))
        labels.append(fold_labels)
        scores.append(fold_scores)
    run_config = training.Run(fold_dir(parent, done[0])).config
    spec = run_config["spec"]
    summary = {
        "dataset": cv["train"]["dataset"], "task": spec["task"], "folds": len(names), "fold_names": names,
        "finished": done, "complete": len(done) == len(names),
        "mean": {key: statistics.fmean(f["test"][key] for f in per_fold) for key in SCORES},
        "std": {key: statistics.stdev(f["test"][key] for f in per_fold) if len(per_fold) > 1 else None
                for key in SCORES},
        "per_fold": per_fold,
    }
    labels, scores = np.concatenate(labels), np.concatenate(scores)
    summary["pooled"] = metrics.evaluate_scores(labels, scores, run_config["classes"], spec["task"],
                                                spec["threshold"])
    if spec["task"] != MULTILABEL:
        counts = skm.confusion_matrix(labels.argmax(axis=1), scores.argmax(axis=1),
                                      labels=range(len(run_config["classes"])))
        summary["confusion_matrix"] = {"classes": run_config["classes"], "rows": "true class",
                                       "columns": "predicted class", "counts": counts.tolist()}
    write_text_atomic(parent / CV_RESULTS, json.dumps(summary, indent=1))
    return summary


def summary_lines(summary):
    """``accuracy 0.9300 +/- 0.0200 over 5 folds``-style lines of the headline scores."""
    if summary["task"] == MULTILABEL:
        keys = (("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC"), ("f1_micro", "micro F1"))
    else:
        keys = (("accuracy", "accuracy"), ("f1", "macro F1"))
    count = len(summary["per_fold"])
    lines = []
    for key, label in keys:
        std = summary["std"][key]
        spread = f" +/- {std:.4f}" if std is not None else ""
        lines.append(f"{label} {summary['mean'][key]:.4f}{spread} over {count} fold{'s' if count != 1 else ''}")
    return lines
