"""Writing predictions and embeddings: CSV, JSON, ARFF (Weka) and NPY."""
import csv
import json
import os
import pathlib
import urllib.parse

import numpy as np

PREDICTION_FORMATS = (".csv", ".json")
EMBEDDING_FORMATS = (".csv", ".arff", ".npy")


def check_suffix(path, formats, option):
    suffix = pathlib.Path(path).suffix.lower()
    if suffix not in formats:
        raise ValueError(f"{option} {path}: the file name must end in {' or '.join(formats)}")
    return suffix


def check_writable(path, option):
    """Raises ValueError unless ``path`` can be written: its folder exists and is writable,
    and it is not itself a folder. Called before any work so that none is lost at the end."""
    path = pathlib.Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"{option} {path}: the folder {folder} does not exist; create it or choose another path")
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; give a file name")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"{option} {path}: no permission to write there; choose a writable folder")


def prediction_row(prediction, classes, top_k):
    """One file's or window's result as predict's JSON writes it (the REST API answers the same)."""
    order = np.argsort(prediction.scores)[::-1][:top_k]
    return {"path": prediction.path, "start": round(prediction.start, 6), "end": round(prediction.end, 6),
            "top": [[classes[i], float(prediction.scores[i])] for i in order],
            "scores": {c: float(s) for c, s in zip(classes, prediction.scores)}}


def write_predictions(path, predictions, classes, top_k, failures=()):
    """One row per file or window: path, start, end, the top classes, every class's probability."""
    suffix = check_suffix(path, PREDICTION_FORMATS, "--output")
    rows = [prediction_row(p, classes, top_k) for p in predictions]
    if suffix == ".json":
        pathlib.Path(path).write_text(json.dumps({"predictions": rows, "failures": list(failures)}, indent=1),
                                      encoding="utf-8")
        return
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "start", "end", "top_classes", *classes])
        for r in rows:
            top = ";".join(f"{c}:{s:.6f}" for c, s in r["top"])
            writer.writerow([r["path"], r["start"], r["end"], top, *(f"{r['scores'][c]:.6f}" for c in classes)])


ARFF_SAFE = "/()[]+=@!$&;:"
"""Characters kept as they are in ARFF names and labels besides letters, digits and ``_.-~``."""


def _arff_quote(value):
    """``value`` percent-encoded (UTF-8, as in URLs) and quoted: ARFF readers differ on escapes
    and scipy reads only ASCII, so quotes, backslashes, commas, spaces and non-ASCII characters
    are written as %XX; ``urllib.parse.unquote`` gives the original back."""
    return "'" + urllib.parse.quote(str(value), safe=ARFF_SAFE) + "'"


def write_embeddings(path, rows, labels=None, relation="samplecnn"):
    """Feature vectors with name, window start/end and (unless ``labels`` is None) a label.

    ``rows`` are Predictions with ``features``. Columns follow the
    DeepSpectrum conventions: name, timeStamp (window start), end, neuron_1..D, class.
    """
    suffix = check_suffix(path, EMBEDDING_FORMATS, "--embeddings")
    if not rows:
        raise ValueError("no embeddings to write")
    features = np.stack([r.features for r in rows]).astype(np.float32)
    columns = [f"neuron_{i + 1}" for i in range(features.shape[1])]
    if suffix == ".npy":
        fields = [("name", f"U{max(len(r.path) for r in rows)}"), ("timeStamp", "f8"), ("end", "f8"),
                  ("features", "f4", (features.shape[1],))]
        if labels is not None:
            fields.append(("class", f"U{max(1, *(len(x) for x in labels))}"))
        table = np.zeros(len(rows), dtype=fields)
        table["name"] = [r.path for r in rows]
        table["timeStamp"] = [r.start for r in rows]
        table["end"] = [r.end for r in rows]
        table["features"] = features
        if labels is not None:
            table["class"] = labels
        np.save(path, table)
        return
    if suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["name", "timeStamp", "end", *columns, *(["class"] if labels is not None else [])])
            for i, r in enumerate(rows):
                tail = [labels[i]] if labels is not None else []
                writer.writerow([r.path, f"{r.start:.6f}", f"{r.end:.6f}", *(f"{v:.8g}" for v in features[i]), *tail])
        return
    # name is nominal rather than string so that scipy.io.arff reads the file too (Weka reads both).
    names = "{" + ",".join(_arff_quote(x) for x in sorted({r.path for r in rows})) + "}"
    lines = [f"@relation {relation}", "", f"@attribute name {names}", "@attribute timeStamp numeric",
             "@attribute end numeric", *(f"@attribute {c} numeric" for c in columns)]
    if labels is not None:
        lines.append("@attribute class {" + ",".join(_arff_quote(x) for x in sorted(set(labels))) + "}")
    lines += ["", "@data"]
    for i, r in enumerate(rows):
        values = [_arff_quote(r.path), f"{r.start:.6f}", f"{r.end:.6f}", *(f"{v:.8g}" for v in features[i])]
        if labels is not None:
            values.append(_arff_quote(labels[i]))
        lines.append(",".join(values))
    pathlib.Path(path).write_text("\n".join(lines) + "\n", encoding="ascii")
