"""Tags audio files with a trained SampleCNN, and exports embeddings.

  python predict.py MODEL_PATH INPUT... [--top-k 5] [--threshold T] [--output FILE.csv|json]
                    [--window SECONDS --hop SECONDS] [--embeddings FILE.csv|arff|npy --layer NAME] [--plot DIR]

MODEL_PATH is a checkpoint beside its run's config.json, a run directory, or a model written by
`samplecnn export` (SavedModel folder, .tflite, .onnx) beside its export.json. INPUT is
any mix of audio files (any format ffmpeg reads), folders and .zip/.tar* archives.
"""
import pathlib
import re
import tempfile
import time

from absl import flags

from samplecnn.cli import FLAGS, IMPORT_HELP, ProgressLine, UsageError, flag, import_modules, run

flags.DEFINE_integer("top-k", 5, "Classes to show per file or window.", lower_bound=1)
flags.DEFINE_float("threshold", None, "Also list every class at or above this probability (multi-label models "
                   "default to the data set's threshold).")
flags.DEFINE_string("output", None, "Write predictions to FILE.csv or FILE.json.")
flags.DEFINE_float("window", None, "Predict every window of this many seconds (a timeline) instead of per file.")
flags.DEFINE_float("hop", None, "Seconds between window starts (default: the window).")
flags.DEFINE_string("embeddings", None, "Write feature vectors to FILE.csv, FILE.arff or FILE.npy.")
flags.DEFINE_string("layer", None, "Layer to take embeddings from (default: the layer before the classifier).")
flags.DEFINE_string("label", None, "Label written with every embedding (default: the file's parent folder name).")
flags.DEFINE_boolean("no-labels", False, "Write embeddings without a label column.")
flags.DEFINE_integer("batch-size", 32, "Segments per model call.", lower_bound=1)
flags.DEFINE_string("plot", None, "Draw each file (waveform, log-mel spectrogram, top-k classes over the windows) "
                    "to DIR/<file>.png, with the plotted numbers in DIR/<file>.json.")
flags.DEFINE_multi_string("import", [], IMPORT_HELP)


def main(argv):
    from samplecnn import files, inference, writers
    from samplecnn.models import PluginError

    if len(argv) < 3:
        raise UsageError("usage: predict.py MODEL_PATH INPUT... [options]")
    if flag("hop") is not None and flag("window") is None:
        raise UsageError("--hop needs --window")
    if not flag("embeddings"):
        unused = [f"--{name}" for name in ("layer", "label", "no-labels") if FLAGS[name].present]
        if unused:
            raise UsageError(f"{', '.join(unused)} only apply to embeddings: add --embeddings FILE.csv|arff|npy")
    import_modules()
    if flag("output") and flag("embeddings") and \
            pathlib.Path(flag("output")).resolve() == pathlib.Path(flag("embeddings")).resolve():
        raise UsageError(f"--output and --embeddings name the same file ({flag('output')}): one would overwrite "
                         "the other; give them different names")
    try:
        if flag("output"):
            writers.check_suffix(flag("output"), writers.PREDICTION_FORMATS, "--output")
            writers.check_writable(flag("output"), "--output")
        if flag("embeddings"):
            writers.check_suffix(flag("embeddings"), writers.EMBEDDING_FORMATS, "--embeddings")
            writers.check_writable(flag("embeddings"), "--embeddings")
        run_config = inference.model_config(argv[1])
        if flag("window") is not None:
            inference.window_samples(flag("window"), flag("hop"), run_config["spec"]["sample_rate"])
        tagger = inference.Tagger.load(argv[1], batch_size=flag("batch-size"))
        if flag("embeddings"):
            tagger.feature_model(flag("layer"))
        if flag("plot"):
            pathlib.Path(flag("plot")).mkdir(parents=True, exist_ok=True)
    except (FileNotFoundError, ValueError, OSError, PluginError) as error:
        raise UsageError(str(error)) from None

    with tempfile.TemporaryDirectory(prefix="samplecnn-") as scratch:
        found = files.expand_inputs(argv[2:], scratch)
        for failure in found.failures:
            print(f"{failure['path']}: FAILED: {failure['error']}")
        embed_layer = (flag("layer") or inference.EMBEDDING_LAYER) if flag("embeddings") else None
        predictions, failed = tag_files(tagger, found, embed_layer)
    failures = found.failures + failed
    if flag("output"):
        writers.write_predictions(flag("output"), predictions, tagger.classes, flag("top-k"), failures)
    if flag("embeddings") and predictions:
        labels = None if flag("no-labels") else [flag("label") or pathlib.Path(p.path).parent.name
                                                 for p in predictions]
        writers.write_embeddings(flag("embeddings"), predictions, labels)
    print(f"{len(found.files) - len(failed)} file(s) tagged, {len(failures)} failed")
    return 1 if failures else 0


def tag_files(tagger, found, embed_layer):
    """Prints each file's top classes; returns (all predictions, failures)."""
    predictions, failures, line, started = [], [], ProgressLine(), time.monotonic()
    total, plotted = len(found.files), set()
    for done, result in enumerate(tagger.run_files(found.files, flag("window"), flag("hop"), embed_layer), start=1):
        source, result.path = result.path, found.name(result.path)
        if result.error:
            failures.append({"path": result.path, "error": result.error})
            print(f"{result.path}: FAILED: {result.error}")
        else:
            for prediction in result.predictions:
                prediction.path = result.path
            predictions.extend(result.predictions)
            print_result(tagger, result)
            if flag("plot"):
                plot_result(tagger, source, result, plotted)
        if total > 1:
            rate = done / max(time.monotonic() - started, 1e-9)
            line(f"files {done}/{total}  {rate:.1f} files/s", final=done == total)
    return predictions, failures


def plot_result(tagger, source, result, taken):
    """Draws one tagged file to a PNG named after it (made unique within this run)."""
    from samplecnn.analysis import plots
    from samplecnn.audio import decode

    stem = re.sub(r"[^\w.-]+", "_", result.path).strip("_") or "audio"
    name, n = stem, 1
    while name in taken:
        n += 1
        name = f"{stem}_{n}"
    taken.add(name)
    plots.plot_file(pathlib.Path(flag("plot")) / f"{name}.png", decode(source, tagger.sample_rate),
                    tagger.sample_rate, result.predictions, tagger.classes, flag("top-k"), title=result.path)


def print_result(tagger, result):
    duration = result.predictions[-1].end
    print(f"{result.path} ({duration:.2f} s; decode {1000 * result.decode_seconds:.0f} ms, "
          f"model {1000 * result.model_seconds:.0f} ms)")
    for p in result.predictions:
        prefix = f"  [{p.start:7.2f}-{p.end:7.2f} s] " if flag("window") else "  "
        print(prefix + ", ".join(f"{c} {s:.4f}" for c, s in tagger.top(p.scores, flag("top-k"))))
        above = tagger.above_threshold(p.scores, flag("threshold"))
        if above:
            print(prefix + "above threshold: " + ", ".join(f"{c} {s:.4f}" for c, s in above))


def run_cli():
    run(__name__)
