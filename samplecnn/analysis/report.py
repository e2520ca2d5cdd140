"""A run directory -> one self-contained report.html, a PNG per figure and figures.json.

The HTML embeds its figures and its few lines of script and style, so it opens
anywhere, offline, and can be mailed as one file; figures.json holds every plotted
number for anyone who wants to redraw or check them.
"""
import base64
import dataclasses
import html
import io
import json
import math
import pathlib
import time

import numpy as np

from samplecnn.analysis import sections
from samplecnn.records import write_text_atomic

REPORT, FIGURES = "report.html", "figures.json"

STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
img{max-width:100%}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 8px;
text-align:right}th{background:#f4f4f4}.sortable th{cursor:pointer}.facts th{text-align:left}"""

SCRIPT = """function sortTable(th){const table=th.closest('table'),body=table.tBodies[0],i=th.cellIndex,
up=th.dataset.up!=='1';th.dataset.up=up?'1':'0';const rows=[...body.rows];rows.sort((a,b)=>{
const x=a.cells[i].dataset.sort,y=b.cells[i].dataset.sort,nx=parseFloat(x),ny=parseFloat(y);
const c=(isNaN(nx)||isNaN(ny))?x.localeCompare(y):nx-ny;return up?c:-c});rows.forEach(r=>body.appendChild(r))}"""


def _plain(value):
    """JSON-ready numbers: arrays to lists, NaN and infinities to null."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def png_bytes(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


@dataclasses.dataclass
class Report:
    html: pathlib.Path
    figures: list
    seconds: float


def make_report(run_dir, out_dir=None, analysis=False):
    """Writes the report of ``run_dir`` to ``out_dir`` (default RUN/report); returns a Report.

    ``analysis`` adds the paper's analyses (excitations, learned filters), which run the
    model on the test set and optimize inputs, so they take longer.
    """
    started = time.monotonic()
    run = sections.RunData(run_dir)
    out_dir = pathlib.Path(out_dir) if out_dir else run.dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    parts, numbers, pictures = [], {}, []
    for section in sections.list_sections():
        if (section.analysis and not analysis) or not section.applies(run):
            continue
        drawn = section.draw(run)
        numbers[section.name] = _plain(drawn.data)
        image = ""
        if drawn.figure is not None:
            png = png_bytes(drawn.figure)
            path = out_dir / f"{section.name}.png"
            path.write_bytes(png)
            pictures.append(path)
            image = f"<img alt='{html.escape(section.title)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        parts.append(f"<section id='{section.name}'><h2>{html.escape(section.title)}</h2>{image}{drawn.html}</section>")
    if not run.results:
        parts.insert(0, "<p>This run has no results.json yet (it has not finished): test scores are missing.</p>")
    title = f"samplecnn report: {run.dir.name}"
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body><h1>{html.escape(title)}</h1>"
            + "".join(parts) + "</body></html>")
    write_text_atomic(out_dir / FIGURES, json.dumps(numbers, indent=1))
    write_text_atomic(out_dir / REPORT, page)
    return Report(out_dir / REPORT, pictures, time.monotonic() - started)
