"""``litesam eval report``: tables per protocol, AP vs latency from bench JSON, PR curves, error paths."""

import json

import pytest
from PIL import Image

from litesam.cli import main
from litesam.errors import InputError
from litesam.evaluation.report import read_runs, write_report


def coco_run(model: str, ap: float, encode_ms: float) -> dict:
    metrics = {"AP": ap, "AP50": 0.9, "AP75": 0.5, "APs": 0.2, "APm": 0.5, "APl": None}
    return {"protocol": "coco", "model": model, "boxes": None, "images": 5000, "metrics": metrics,
            "encode_ms": encode_ms}  # fmt: skip


def edge_run(model: str, shift: float) -> dict:
    recall = [1 - t / 100 for t in range(1, 100)]
    precision = [min(1.0, 0.3 + shift + 0.7 * t / 100) for t in range(1, 100)]
    metrics = {"ODS": 0.7 + shift, "OIS": 0.72, "AP": 0.75, "R50": 0.9}
    curve = {"threshold": [t / 100 for t in range(1, 100)], "recall": recall, "precision": precision}
    return {"protocol": "edges", "model": model, "images": 200, "metrics": metrics, "curve": curve}


@pytest.fixture
def runs(tmp_path):
    files = {"sam.json": coco_run("sam_vit_h", 0.46, 9000.0),
             "evit.json": coco_run("efficientvit_sam_l0", 0.45, 600),
             "e1.json": edge_run("sam_vit_h", 0.0), "e2.json": edge_run("repvit_sam", 0.05),
             "bench.json": {"results": [{"model": "efficientvit_sam_l0", "encoder_ms": 120.0}]}}  # fmt: skip
    for name, data in files.items():
        (tmp_path / name).write_text(json.dumps(data))
    return [tmp_path / name for name in files]


def test_the_report_has_a_table_per_protocol_and_its_plots(runs, tmp_path):
    page = write_report(runs, tmp_path / "report")
    text = page.read_text()
    assert "## COCO box-prompted instance segmentation" in text and "## BSDS500 zero-shot edges" in text
    assert (
        "| sam_vit_h | ground-truth boxes | 5000 | 46.0 | 90.0 | 50.0 | 20.0 | 50.0 | - | sam.json |" in text
    )
    assert "![COCO AP vs encoder latency](ap_vs_latency.png)" in text
    assert "<table>" in (tmp_path / "report" / "report.html").read_text()
    for name in ("ap_vs_latency.png", "edges_pr.png"):
        assert Image.open(tmp_path / "report" / name).size == (720, 480)


def test_bench_latency_replaces_the_runs_own_encode_time(runs):
    _, latency = read_runs(runs)
    assert latency == {"efficientvit_sam_l0": 120.0}


def test_files_that_are_no_results_are_refused(runs, tmp_path, capsys):
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(InputError, match="neither"):
        read_runs([tmp_path / "other.json"])
    with pytest.raises(InputError, match="no evaluation reports"):
        read_runs([runs[-1]])
    assert main(["eval", "report", str(tmp_path / "missing.json"), "-o", str(tmp_path / "r")]) == 2
    assert "no such file" in capsys.readouterr().err
