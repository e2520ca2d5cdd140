"""The sections of a run report, each registered with ``register_section``.

A section is a function ``fn(run) -> Drawn`` of a :class:`RunData`; ``applies(run)``
says whether it belongs in a run's report (e.g. a confusion matrix only for
single-label tasks) and ``analysis`` sections are drawn only on request. Every plotted
number goes into ``Drawn.data``, which the report writes to figures.json.
"""
import csv
import dataclasses
import functools
import html
import json
import pathlib

import numpy as np
from matplotlib.figure import Figure
from sklearn import metrics as skm

from samplecnn.datasets import MULTILABEL


@dataclasses.dataclass
class Drawn:
    """What a section produced: an optional figure, its numbers, optional extra HTML."""

    data: dict
    figure: Figure = None
    html: str = ""


@dataclasses.dataclass
class Section:
    name: str
    title: str
    draw: callable
    applies: callable
    analysis: bool


_SECTIONS = []


def register_section(name, title, applies=lambda run: True, analysis=False):
    """Decorator adding ``fn(run) -> Drawn`` to every report it ``applies`` to, in order of registration."""

    def decorator(fn):
        if any(section.name == name for section in _SECTIONS):
            raise ValueError(f"a report section named {name!r} is already registered")
        _SECTIONS.append(Section(name, title, fn, applies, analysis))
        return fn

    return decorator


def list_sections():
    return list(_SECTIONS)


class RunData:
    """A run directory's files, and its model and test predictions when a section needs them."""

    def __init__(self, run_dir, batch_clips=8):
        from samplecnn.training import CONFIG, CSV_LOG, RESULTS

        self.dir = pathlib.Path(run_dir)
        if not (self.dir / CONFIG).is_file():
            raise FileNotFoundError(f"{self.dir / CONFIG} not found: a report needs a run directory made by train.py")
        self.config = json.loads((self.dir / CONFIG).read_text())
        self.spec = self.config["spec"]
        self.classes = list(self.config["classes"])
        self.multilabel = self.spec["task"] == MULTILABEL
        self.rows = []  # a probe's run trains no epochs and has no log.csv
        if (self.dir / CSV_LOG).is_file():
            with open(self.dir / CSV_LOG, newline="") as f:
                self.rows = list(csv.DictReader(f))
        results = self.dir / RESULTS
        self.results = json.loads(results.read_text()) if results.is_file() else None
        self.batch_clips = batch_clips

    @functools.cached_property
    def model(self):
        from samplecnn.inference import load_trained

        return load_trained(self.dir)[0]

    @functools.cached_property
    def manifest(self):
        from samplecnn import pipeline

        return pipeline.run_manifest(self.config)

    @functools.cached_property
    def predictions(self):
        """(multi-hot labels, clip scores) of the test split, as in evaluation."""
        from samplecnn import metrics, pipeline

        labels, scores, _ = metrics.predict_clips(self.model, pipeline.clip_dataset(self.manifest), self.batch_clips)
        return labels.astype(np.int64), scores

    def test_clips(self):
        """(segments, label) of every test clip, one at a time."""
        from samplecnn import pipeline

        for audio, label, _ in pipeline.clip_dataset(self.manifest):
            yield audio.numpy(), label.numpy()


def has_data(run):
    """True when the run's test data is still where it was built (sections with predictions need it)."""
    from samplecnn import pipeline

    try:
        run.manifest
    except (pipeline.DataError, OSError):
        return False
    return True


def _figure(width=7.0, height=4.0, **subplots):
    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.subplots(**subplots)


def _metric_name(rows):
    names = [k for k in rows[0] if k.endswith("accuracy") and not k.startswith("val_")] if rows else []
    return names[0] if names else None


@register_section("model", "Model and run")
def model_summary(run):
    train, model = run.config["train"], run.config["model"]
    seconds = sum(float(r.get("seconds") or 0) for r in run.rows)
    data = {"block": model["block"], "multi": model["multi"], "init_features": model["init_features"],
            "parameters": int(run.model.count_params()), "dataset": train["dataset"],
            "recipe": train.get("recipe", "samplecnn"), "classes": len(run.classes), "task": run.spec["task"],
            "epochs": len(run.rows), "stages": len({r["stage"] for r in run.rows}),
            "training_seconds": round(seconds, 1), "created": run.config.get("created")}
    if run.results:
        data.update({k: run.results["test"][k] for k in ("roc_auc", "pr_auc", "accuracy", "f1") if k in run.results["test"]})
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in data.items())
    return Drawn(data, html=f"<table class='facts'>{cells}</table>")


@register_section("curves", "Training curves", applies=lambda run: bool(run.rows))
def training_curves(run):
    rows, metric = run.rows, _metric_name(run.rows)
    column = lambda key: [float(r[key]) if r.get(key) not in (None, "") else None for r in rows]  # noqa: E731
    epochs = [int(r["epoch"]) for r in rows]
    data = {"epoch": epochs, "loss": column("loss"), "val_loss": column("val_loss"),
            "metric": metric, "train_metric": column(metric) if metric else [],
            "val_metric": column(f"val_{metric}") if metric else [], "lr": column("lr_now"),
            "stage_starts": [e for e, r, prev in zip(epochs[1:], rows[1:], rows) if r["stage"] != prev["stage"]]}
    figure, (loss_axes, metric_axes) = _figure(10, 4, ncols=2)
    loss_axes.plot(epochs, data["loss"], "o-", label="train loss")
    loss_axes.plot(epochs, data["val_loss"], "o-", label="val loss")
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("loss")
    lr_axes = loss_axes.twinx()
    lr_axes.plot(epochs, data["lr"], color="grey", linestyle=":", label="learning rate")
    lr_axes.set_ylabel("learning rate")
    if metric:
        metric_axes.plot(epochs, data["train_metric"], "o-", label=f"train {metric}")
        metric_axes.plot(epochs, data["val_metric"], "o-", label=f"val {metric}")
        metric_axes.set_ylabel(metric)
    metric_axes.set_xlabel("epoch")
    for axes in (loss_axes, metric_axes):
        for start in data["stage_starts"]:
            axes.axvline(start - 0.5, color="black", alpha=0.3, linestyle="--")
        axes.legend(loc="best", fontsize="small")
    lr_axes.legend(loc="lower left", fontsize="small")
    return Drawn(data, figure)


@register_section("per_class", "Per-class test scores (click a column to sort)", applies=lambda run: bool(run.results))
def per_class_table(run):
    rows = run.results["test"]["per_class"]
    columns = [c for c in ("class", "support", "roc_auc", "pr_auc", "precision", "recall", "f1") if c in rows[0]]

    def cell(value):
        text = "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
        sort = "" if value is None else value if isinstance(value, (int, float)) else str(value)
        return f"<td data-sort='{html.escape(str(sort), quote=True)}'>{html.escape(text)}</td>"

    head = "".join(f"<th onclick='sortTable(this)'>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(cell(r.get(c)) for c in columns) + "</tr>" for r in rows)
    return Drawn({"columns": columns, "rows": rows},
                 html=f"<table class='sortable'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def cluster_order(matrix):
    """Class order that puts classes confused with each other next to each other."""
    if len(matrix) < 3:
        return list(range(len(matrix)))
    from scipy.cluster import hierarchy
    from scipy.spatial.distance import squareform

    similarity = (matrix + matrix.T) / 2
    distance = 1 - similarity / max(similarity.max(), 1e-12)
    np.fill_diagonal(distance, 0)
    return hierarchy.leaves_list(hierarchy.linkage(squareform(distance, checks=False), "average")).tolist()


CONFUSED_PAIRS = 10


def draw_confusion(counts, classes):
    """A confusion matrix normalised per true class, classes ordered so confusions cluster.

    Returns (figure, its numbers)."""
    normalised = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    off = normalised.copy()
    np.fill_diagonal(off, 0)
    order = cluster_order(off)
    data = {"classes": [classes[i] for i in order], "counts": counts[np.ix_(order, order)],
            "normalised": normalised[np.ix_(order, order)], "accuracy": float(np.trace(counts) / max(counts.sum(), 1))}
    size = min(4 + 0.25 * len(classes), 14)
    figure, axes = _figure(size, size)
    skm.ConfusionMatrixDisplay(data["normalised"], display_labels=data["classes"]).plot(
        ax=axes, include_values=len(classes) <= 12, values_format=".2f", xticks_rotation="vertical",
        colorbar=False, cmap="Blues")
    return figure, data


@register_section("confusion", "Confusion matrix (rows: true class, normalised)",
                  applies=lambda run: not run.multilabel and has_data(run))
def confusion(run):
    labels, scores = run.predictions
    counts = skm.confusion_matrix(labels.argmax(axis=1), scores.argmax(axis=1), labels=range(len(run.classes)))
    figure, data = draw_confusion(counts, run.classes)
    pairs = sorted(((int(counts[i, j]), run.classes[i], run.classes[j]) for i in range(len(counts))
                    for j in range(len(counts)) if i != j and counts[i, j]), reverse=True)[:CONFUSED_PAIRS]
    data["confused_pairs"] = [{"true": t, "predicted": p, "clips": n} for n, t, p in pairs]
    items = "".join(f"<li>{html.escape(p['true'])} &rarr; {html.escape(p['predicted'])}: {p['clips']} clip(s)</li>"
                    for p in data["confused_pairs"])
    return Drawn(data, figure, f"<p>Most confused pairs (true &rarr; predicted):</p><ol>{items or '<li>none</li>'}</ol>")


def class_aucs(labels, scores, classes):
    """(class, ROC-AUC, PR-AUC, index) of every class with positive and negative clips."""
    rows = []
    for i, name in enumerate(classes):
        if 0 < labels[:, i].sum() < len(labels):
            rows.append((name, skm.roc_auc_score(labels[:, i], scores[:, i]),
                         skm.average_precision_score(labels[:, i], scores[:, i]), i))
    return rows


def draw_auc_bars(rows):
    """Per-class ROC-AUC and PR-AUC bars of ``class_aucs`` rows; returns (figure, its numbers)."""
    data = {"classes": [r[0] for r in rows], "roc_auc": [float(r[1]) for r in rows],
            "pr_auc": [float(r[2]) for r in rows]}
    figure, axes = _figure(max(6, 0.3 * len(rows)), 4)
    positions = np.arange(len(rows))
    axes.bar(positions - 0.2, data["roc_auc"], 0.4, label="ROC-AUC")
    axes.bar(positions + 0.2, data["pr_auc"], 0.4, label="PR-AUC")
    axes.set_xticks(positions, data["classes"], rotation=90)
    axes.set_ylim(0, 1)
    axes.legend()
    return figure, data


def multilabel_with_data(run):
    return run.multilabel and has_data(run)


@register_section("auc_bars", "Per-class ROC-AUC and PR-AUC", applies=multilabel_with_data)
def auc_bars(run):
    figure, data = draw_auc_bars(class_aucs(*run.predictions, run.classes))
    return Drawn(data, figure)


@register_section("best_worst", "ROC and PR curves of the best and worst classes", applies=multilabel_with_data)
def best_worst_curves(run):
    labels, scores = run.predictions
    rows = sorted(class_aucs(labels, scores, run.classes), key=lambda r: r[1])
    picked = {"worst": rows[0], "best": rows[-1]} if rows else {}
    figure, (roc_axes, pr_axes) = _figure(10, 4, ncols=2)
    data = {}
    for kind, (name, _, _, i) in picked.items():
        skm.RocCurveDisplay.from_predictions(labels[:, i], scores[:, i], name=f"{kind}: {name}", ax=roc_axes)
        skm.PrecisionRecallDisplay.from_predictions(labels[:, i], scores[:, i], name=f"{kind}: {name}", ax=pr_axes)
        fpr, tpr, _ = skm.roc_curve(labels[:, i], scores[:, i])
        precision, recall, _ = skm.precision_recall_curve(labels[:, i], scores[:, i])
        data[kind] = {"class": name, "fpr": fpr, "tpr": tpr, "precision": precision, "recall": recall}
    return Drawn(data, figure)


THRESHOLDS = np.round(np.arange(0.02, 1.0, 0.02), 2)


@register_section("f1_threshold", "F1 against the decision threshold", applies=multilabel_with_data)
def f1_threshold(run):
    labels, scores = run.predictions
    samples, micro = [], []
    for threshold in THRESHOLDS:
        predicted = (scores >= threshold).astype(np.int64)
        samples.append(skm.f1_score(labels, predicted, average="samples", zero_division=0))
        micro.append(skm.f1_score(labels, predicted, average="micro", zero_division=0))
    data = {"thresholds": THRESHOLDS, "f1_samples": samples, "f1_micro": micro, "spec_threshold": run.spec["threshold"]}
    figure, axes = _figure()
    axes.plot(THRESHOLDS, samples, label="sample-averaged F1")
    axes.plot(THRESHOLDS, micro, label="micro F1")
    axes.axvline(run.spec["threshold"], color="black", linestyle="--", label=f"threshold {run.spec['threshold']}")
    axes.set_xlabel("threshold")
    axes.set_ylabel("F1")
    axes.legend()
    return Drawn(data, figure)


@register_section("excitations", "Squeeze-excitation: mean excitation per class and channel", analysis=True,
                  applies=lambda run: has_data(run))
def excitation_maps(run):
    from samplecnn.analysis import network

    try:
        gates = network.excitations(run.model, run.test_clips(), run.classes)
    except network.AnalysisError as error:
        return Drawn({"error": str(error)}, html=f"<p>{html.escape(str(error))}</p>")
    columns = min(4, len(gates))
    rows = -(-len(gates) // columns) + 1
    figure = Figure(figsize=(3.2 * columns, 2.6 * rows), layout="constrained")
    grid = figure.add_gridspec(rows, columns)
    for k, gate in enumerate(gates):
        matrix = gate["matrix"]
        order = np.argsort(np.nanmean(matrix, axis=0))
        axes = figure.add_subplot(grid[k // columns, k % columns])
        axes.imshow(matrix[:, order], aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        axes.set_title(gate["layer"], fontsize="small")
        axes.set_xlabel("channel (sorted by mean)", fontsize="x-small")
        if len(run.classes) <= 40:
            axes.set_yticks(range(len(run.classes)), run.classes, fontsize="xx-small")
    trend = figure.add_subplot(grid[rows - 1, :])
    trend.plot(range(1, len(gates) + 1), [g["class_std"] for g in gates], "o-")
    trend.set_xticks(range(1, len(gates) + 1), [g["layer"] for g in gates], rotation=30, fontsize="x-small")
    trend.set_ylabel("std across classes")
    return Drawn({"classes": run.classes, "gates": gates}, figure)


@register_section("filters", "Learned filters: the front end's frequency responses", analysis=True)
def front_end_filters(run):
    from samplecnn.analysis import network

    layer = network.front_end(run.model)
    responses = network.filter_responses(layer.get_weights()[0], run.spec["sample_rate"])
    figure, axes = _figure(7, 4)
    image = axes.imshow(responses["responses"].T, aspect="auto", origin="lower", cmap="magma",
                        extent=[0, len(responses["order"]), 0, responses["frequencies"][-1]])
    axes.set_xlabel("filter (sorted by peak frequency)")
    axes.set_ylabel("frequency (Hz)")
    figure.colorbar(image, ax=axes, label="dB")
    return Drawn({"layer": layer.name, **responses}, figure)


@register_section("maximal_spectra", "Spectra of the inputs that maximally activate each channel, per block",
                  analysis=True)
def maximal_spectra(run):
    from samplecnn.analysis import network

    blocks = network.maximal_spectra(run.model, run.spec["sample_rate"])
    columns = min(4, len(blocks))
    figure, grid = _figure(3.2 * columns, 2.8 * -(-len(blocks) // columns), nrows=-(-len(blocks) // columns),
                           ncols=columns, squeeze=False)
    for axes, block in zip(grid.flat, blocks):
        axes.imshow(block["spectra"].T, aspect="auto", origin="lower", cmap="magma",
                    extent=[0, len(block["spectra"]), 0, block["frequencies"][-1]])
        axes.set_title(block["block"], fontsize="small")
        axes.set_xlabel("channel", fontsize="x-small")
        axes.set_ylabel("Hz", fontsize="x-small")
    for axes in list(grid.flat)[len(blocks):]:
        axes.set_visible(False)
    return Drawn({"blocks": blocks}, figure)
