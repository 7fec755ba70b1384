"""``write_report``: one Markdown page (``report.md``) and its HTML twin (``report.html``) over the JSON
results of ``litesam eval coco|edges|miou`` runs, with a table per protocol and two plots:

- ``ap_vs_latency.png``: COCO AP against encoder latency per model. Latency comes from ``litesam bench``
  JSON files given alongside (any object or list holding ``{"model": NAME, "encoder_ms": MS}`` entries;
  ``latency_ms`` / ``encode_ms`` are read too), else from the evaluation's own median encode time.
- ``edges_pr.png``: the BSDS precision-recall curve of each edge run.

Everything is drawn locally with PIL; the page needs no network.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..utils.io import atomic_write_png, atomic_write_text, writable_folder
from ..utils.plot import Series, chart

PROTOCOLS = {"coco": "COCO box-prompted instance segmentation", "edges": "BSDS500 zero-shot edges",
             "miou": "Teacher-student mIoU (MobileSAM)"}  # fmt: skip
_LATENCY_KEYS = ("encoder_ms", "latency_ms", "encode_ms")


def _bench_entries(data: Any) -> Iterator[tuple[str, float]]:
    """(model, encoder ms) pairs anywhere in a bench JSON."""
    if isinstance(data, dict):
        key = next((k for k in _LATENCY_KEYS if isinstance(data.get(k), (int, float))), None)
        if isinstance(data.get("model"), str) and key:
            yield data["model"], float(data[key])
        for value in data.values():
            yield from _bench_entries(value)
    elif isinstance(data, list):
        for value in data:
            yield from _bench_entries(value)


def read_runs(paths: Sequence[str | os.PathLike]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """JSON files -> (evaluation reports, encoder latency ms by model from bench files)."""
    runs, latency = [], {}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise InputError(f"no such file: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{path} is not readable JSON: {e}") from None
        if isinstance(data, dict) and data.get("protocol") in PROTOCOLS:
            runs.append({**data, "file": Path(path).name})
            continue
        found = dict(_bench_entries(data))
        if not found:
            raise InputError(f"{path} is neither an `litesam eval` report nor `litesam bench` results")
        latency.update(found)
    if not runs:
        raise InputError("no evaluation reports among the files: give the --json of `litesam eval` runs")
    return runs, latency


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{100 * value:.1f}" if value <= 1 else f"{value:.0f}"
    return "-" if value is None else str(value)


def _setting(run: dict[str, Any]) -> str:
    """What the run was given besides the model: COCO prompts, BSDS edge source, mIoU teacher."""
    if run["protocol"] == "coco":
        return f"boxes: {Path(run['boxes']).name}" if run.get("boxes") else "ground-truth boxes"
    if run["protocol"] == "edges":
        return "saved edge maps" if run.get("predictions") else "litesam edges"
    return f"teacher {run.get('teacher')}"


def _tables(runs: list[dict[str, Any]]) -> Iterator[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) per protocol present; metrics in percent."""
    for protocol, title in PROTOCOLS.items():
        chosen = [r for r in runs if r["protocol"] == protocol]
        if not chosen:
            continue
        metrics = list(chosen[0]["metrics"])
        header = ["model", "setting", "images", *metrics, "file"]
        rows = [
            [_cell(r.get("model") or r.get("predictions")), _setting(r), _cell(r["images"]),
             *(_cell(r["metrics"].get(m)) for m in metrics), r["file"]]
            for r in chosen
        ]  # fmt: skip
        yield title, header, rows


def _plots(runs: list[dict[str, Any]], latency: dict[str, float], out: Path) -> list[tuple[str, str]]:
    """Write the plots that have data -> [(caption, file name)]."""
    made = []
    coco = [r for r in runs if r["protocol"] == "coco" and r["metrics"].get("AP") is not None]
    points = [(r["model"], latency.get(r["model"], r.get("encode_ms")), r["metrics"]["AP"]) for r in coco]
    points = [p for p in points if p[1] is not None]
    if points:
        series = [Series(f"{m} ({ms:.0f} ms)", [ms], [100 * ap], dots=True) for m, ms, ap in points]
        hi = max(ms for _, ms, _ in points)
        atomic_write_png(out / "ap_vs_latency.png", chart(
            series, "COCO mask AP vs image encoder latency", "encoder latency (ms per image)", "AP (%)",
            x_range=(0, 1.1 * hi), y_range=(0, 100)))  # fmt: skip
        made.append(("COCO AP vs encoder latency", "ap_vs_latency.png"))
    edges = [r for r in runs if r["protocol"] == "edges"]
    if edges:
        series = [Series(f"{r.get('model') or r.get('predictions')} ODS {r['metrics']['ODS']:.3f}",
                         r["curve"]["recall"], r["curve"]["precision"]) for r in edges]  # fmt: skip
        atomic_write_png(out / "edges_pr.png", chart(
            series, "BSDS500 boundary precision-recall", "recall", "precision",
            x_range=(0, 1), y_range=(0, 1)))  # fmt: skip
        made.append(("BSDS500 precision-recall curves", "edges_pr.png"))
    return made


def write_report(paths: Sequence[str | os.PathLike], folder: str | os.PathLike) -> Path:
    """The page of the module docstring for the JSON files ``paths`` into ``folder``; returns report.md."""
    runs, latency = read_runs(paths)
    out = writable_folder(folder)
    tables = list(_tables(runs))
    plots = _plots(runs, latency, out)
    md = ["# litesam evaluation report", "", "Metrics in percent.", ""]
    body = ["<h1>litesam evaluation report</h1>", "<p>Metrics in percent.</p>"]
    for title, header, rows in tables:
        md += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(row) + " |" for row in rows] + [""]
        cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        lines = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        body.append(f"<h2>{html.escape(title)}</h2><table><tr>{cells}</tr>{lines}</table>")
    for caption, name in plots:
        md += [f"## {caption}", "", f"![{caption}]({name})", ""]
        body.append(f'<h2>{html.escape(caption)}</h2><img src="{name}" alt="{html.escape(caption)}">')
    style = (
        "body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #999;padding:4px}"
    )
    atomic_write_text(out / "report.html", f"<!doctype html><meta charset='utf-8'><title>litesam evaluation"
                      f"</title><style>{style}</style>" + "\n".join(body) + "\n")  # fmt: skip
    return atomic_write_text(out / "report.md", "\n".join(md))
