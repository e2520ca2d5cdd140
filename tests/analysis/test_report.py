"""samplecnn report: a self-contained page whose numbers equal the run's own results."""
import csv
import json

import numpy as np
import pytest
from matplotlib import image

import rawdata
from samplecnn import build, training
from samplecnn.analysis import report
from samplecnn.models import block_filters
from scripts import run_samplecnn


def read_figures(out):
    return json.loads((out / report.FIGURES).read_text())


def assert_self_contained_with_valid_pngs(made, out):
    page = made.html.read_text()
    assert "http://" not in page and "https://" not in page and "<img" in page
    assert made.figures and all(p.parent == out for p in made.figures)
    for png in made.figures:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.imread(png).ndim == 3


@pytest.fixture(scope="module")
def single_label_report(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return report.make_report(trained[0], out, analysis=True), out


def test_single_label_report_agrees_with_results_and_log(trained, single_label_report):
    made, out = single_label_report
    run_dir = trained[0]
    assert_self_contained_with_valid_pngs(made, out)
    figures, results = read_figures(out), json.loads((run_dir / "results.json").read_text())["test"]
    confusion = np.array(figures["confusion"]["counts"])
    assert confusion.sum() == results["clips"]
    assert np.trace(confusion) / confusion.sum() == pytest.approx(results["accuracy"], abs=1e-9)
    assert figures["confusion"]["accuracy"] == pytest.approx(results["accuracy"], abs=1e-9)
    assert sorted(figures["confusion"]["classes"]) == ["class0", "class1", "class2"]
    with open(run_dir / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    curves = figures["curves"]
    assert curves["epoch"] == [int(r["epoch"]) for r in rows] and len(curves["val_loss"]) == len(rows)
    assert curves["loss"] == pytest.approx([float(r["loss"]) for r in rows])
    assert curves["stage_starts"] == [int(r["epoch"]) for r, p in zip(rows[1:], rows) if r["stage"] != p["stage"]]
    assert figures["per_class"]["rows"] == results["per_class"]
    assert figures["model"]["block"] == "rese2" and figures["model"]["epochs"] == len(rows)
    assert "auc_bars" not in figures  # multi-label only


def test_excitations_one_matrix_per_se_block(trained, single_label_report):
    _, out = single_label_report
    gates = read_figures(out)["excitations"]["gates"]
    config = json.loads((trained[0] / "config.json").read_text())["model"]
    widths = block_filters(config["num_blocks"], config["init_features"])
    assert len(gates) == config["num_blocks"] == len(widths)
    for gate, width in zip(gates, widths):
        matrix = np.array(gate["matrix"], dtype=float)
        assert matrix.shape == (3, width) and np.all((matrix >= 0) & (matrix <= 1))
    spectra = read_figures(out)["maximal_spectra"]["blocks"]
    assert [b["block"] for b in spectra] == [f"block{i + 1}" for i in range(config["num_blocks"])]
    assert [len(b["spectra"]) for b in spectra] == widths


@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory):
    """A short run on a multi-label CSV set of tones (some clips hold two tones)."""
    root = tmp_path_factory.mktemp("multilabel")
    rows, rng = ["path,labels,split"], np.random.default_rng(0)
    for i in range(60):
        first, second = rng.choice(3, 2, replace=False)
        both = i % 3 == 0
        signal = rawdata.tone(1.0, 16000, rawdata.class_frequency(4 * first), seed=i)
        if both:
            signal = signal + rawdata.tone(1.0, 16000, rawdata.class_frequency(4 * second), seed=100 + i)
        rawdata.write_wav(root / "raw" / f"{i}.wav", 0.5 * signal, 16000)
        labels = ";".join(sorted({f"c{first}", f"c{second}"} if both else {f"c{first}"}))
        rows.append(f"raw/{i}.wav,{labels},{'test' if i % 5 == 0 else 'val' if i % 5 == 1 else 'train'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    build.build_dataset("csv", data_dir=root / "data", raw_dir=root / "labels.csv", name="mix", workers=1)
    config = training.TrainConfig(dataset="mix", data_dir=str(root / "data"), log_dir=str(root / "log"),
                                  init_features=4, batch_size=8, num_stages=1, max_epochs=2, num_readers=2,
                                  validation_steps=0, mixed_precision=False)
    run_dir, _ = training.train(config, verbose=0)
    return run_dir


def test_multilabel_report_aucs_equal_results(multilabel_run, tmp_path):
    made = report.make_report(multilabel_run, tmp_path)
    assert_self_contained_with_valid_pngs(made, tmp_path)
    figures = read_figures(tmp_path)
    results = json.loads((multilabel_run / "results.json").read_text())["test"]
    expected = {r["class"]: (r["roc_auc"], r["pr_auc"]) for r in results["per_class"] if r["roc_auc"] is not None}
    bars = figures["auc_bars"]
    assert bars["classes"] == list(expected) and len(expected) == 3
    assert bars["roc_auc"] == pytest.approx([v[0] for v in expected.values()], abs=1e-9)
    assert bars["pr_auc"] == pytest.approx([v[1] for v in expected.values()], abs=1e-9)
    assert figures["f1_threshold"]["spec_threshold"] == 0.5
    assert {"best", "worst"} <= set(figures["best_worst"]) and "confusion" not in figures


def test_cli_writes_report_and_rejects_a_non_run(trained, tmp_path):
    result = run_samplecnn("report", trained[0], "--out", tmp_path / "r")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "report:" in result.stdout and (tmp_path / "r" / "report.html").is_file()
    result = run_samplecnn("report", tmp_path)
    assert result.returncode == 2 and "config.json not found" in result.stderr
