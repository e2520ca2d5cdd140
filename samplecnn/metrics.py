"""Clip-level evaluation: ROC-AUC, PR-AUC, accuracy, F1, overall and per class."""
import logging
import warnings

import numpy as np
from sklearn import metrics as skm

from samplecnn.datasets import MULTILABEL

log = logging.getLogger("samplecnn")


def decide(scores, task, threshold):
    """Binary decisions: scores above ``threshold`` (multi-label) or the argmax (multi-class)."""
    if task == MULTILABEL:
        return (scores >= threshold).astype(np.int64)
    return np.eye(scores.shape[1], dtype=np.int64)[scores.argmax(axis=1)]


def evaluate_scores(labels, scores, classes, task, threshold=0.5):
    """Scores a (clips, classes) score matrix against multi-hot ``labels``.

    Multi-label: macro ROC-AUC and PR-AUC, subset accuracy, sample-averaged F1 (the
    paper's code) and micro F1 (the DCASE 2017 Task 4 official score) at ``threshold``.
    Multi-class: top-1 accuracy and macro F1 over every class of ``classes`` (a class
    neither in the labels nor predicted scores 0), the mean of the per-class table.
    Classes without both positive and negative test clips have no ROC-AUC/PR-AUC; they
    are left out of the macro averages with a warning instead of failing.
    """
    labels, scores = np.asarray(labels).astype(np.int64), np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape or labels.shape[1] != len(classes):
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must both be (clips, {len(classes)})")
    predicted = decide(scores, task, threshold)
    per_class, aucs, aps, skipped = [], [], [], []
    for i, name in enumerate(classes):
        positives = int(labels[:, i].sum())
        row = {"class": name, "support": positives, "roc_auc": None, "pr_auc": None}
        if 0 < positives < len(labels):
            row["roc_auc"] = float(skm.roc_auc_score(labels[:, i], scores[:, i]))
            row["pr_auc"] = float(skm.average_precision_score(labels[:, i], scores[:, i]))
            aucs.append(row["roc_auc"])
            aps.append(row["pr_auc"])
        else:
            skipped.append(name)
        p, r, f, _ = skm.precision_recall_fscore_support(labels[:, i], predicted[:, i], average="binary",
                                                         zero_division=0)
        row.update(precision=float(p), recall=float(r), f1=float(f))
        per_class.append(row)
    if skipped:
        log.warning("no ROC-AUC/PR-AUC for %d class(es) without both positive and negative test clips: %s",
                    len(skipped), ", ".join(skipped))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if task == MULTILABEL:
            accuracy = skm.accuracy_score(labels, predicted)
            f1 = skm.f1_score(labels, predicted, average="samples", zero_division=0)
        else:
            truth, guess = labels.argmax(axis=1), scores.argmax(axis=1)
            accuracy = skm.accuracy_score(truth, guess)
            f1 = skm.f1_score(truth, guess, average="macro", labels=range(len(classes)), zero_division=0)
        f1_micro = skm.f1_score(labels, predicted, average="micro", zero_division=0)
    return {
        "roc_auc": float(np.mean(aucs)) if aucs else float("nan"),
        "pr_auc": float(np.mean(aps)) if aps else float("nan"),
        "accuracy": float(accuracy),
        "f1": float(f1),
        "f1_micro": float(f1_micro),
        "clips": int(len(labels)),
        "per_class": per_class,
    }


def predict_clips(model, clip_dataset, batch_clips=8):
    """Averages a model's segment predictions per clip: (labels, scores, clip_ids)."""
    labels, scores, ids = [], [], []
    for audio, label, clip_id in clip_dataset.batch(batch_clips):
        clips, segments = audio.shape[0], audio.shape[1]
        flat = np.reshape(audio.numpy(), (clips * segments, *audio.shape[2:]))
        out = np.asarray(model.predict_on_batch(flat), dtype=np.float64)
        scores.append(out.reshape(clips, segments, -1).mean(axis=1))
        labels.append(label.numpy())
        ids.extend(c.decode() for c in clip_id.numpy())
    return np.concatenate(labels), np.concatenate(scores), ids


def format_report(results):
    """The overall scores and the per-class table as text."""
    lines = [f"ROC-AUC {results['roc_auc']:.4f}  PR-AUC {results['pr_auc']:.4f}  accuracy {results['accuracy']:.4f}  "
             f"F1 {results['f1']:.4f}  micro F1 {results['f1_micro']:.4f}  ({results['clips']} clips)", ""]
    width = max(12, *(len(r["class"]) for r in results["per_class"]))
    lines.append(f"{'class':<{width}}  {'ROC-AUC':>7}  {'PR-AUC':>7}  {'prec':>6}  {'recall':>6}  {'F1':>6}  {'support':>7}")

    def fmt(value):
        return f"{value:7.4f}" if value is not None else f"{'-':>7}"

    for r in results["per_class"]:
        lines.append(f"{r['class']:<{width}}  {fmt(r['roc_auc'])}  {fmt(r['pr_auc'])}  {r['precision']:6.3f}  "
                     f"{r['recall']:6.3f}  {r['f1']:6.3f}  {r['support']:7d}")
    return "\n".join(lines)
