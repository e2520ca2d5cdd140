"""predict.py --plot: one picture per file, its heat map one column per timeline window."""
import json

import pandas as pd

import rawdata
from scripts import run_script


def test_plot_one_png_per_file_with_a_column_per_window(trained, tmp_path):
    run_dir, _ = trained
    files = [rawdata.write_wav(tmp_path / "in" / f"{name}.wav", rawdata.tone(seconds, 16000, 300.0), 16000)
             for name, seconds in (("long", 4.5), ("short", 0.7))]
    result = run_script("predict.py", run_dir, *files, "--window", "1", "--hop", "0.5", "--top-k", "2",
                        "--output", tmp_path / "timeline.csv", "--plot", tmp_path / "plots")
    assert result.returncode == 0, result.stderr[-2000:]
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert len(pngs) == 2 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    timeline = pd.read_csv(tmp_path / "timeline.csv")
    for png, source in zip(pngs, sorted(files)):
        numbers = json.loads(png.with_suffix(".json").read_text())
        windows = timeline[timeline["path"] == str(source)]
        assert len(numbers["probabilities"]) == 2  # top-k rows
        assert len(numbers["probabilities"][0]) == len(windows) == len(numbers["starts"])
        assert numbers["starts"] == list(windows["start"])
