"""BSDS edge benchmark: bipartite matching, known ODS/OIS/AP/R50 on generated edges, GT readers, CLI."""

import json

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from litesam.cli import main
from litesam.errors import InputError
from litesam.evaluation.bsds import (
    image_counts,
    match_boundaries,
    read_boundaries,
    summarize,
)
from litesam.evaluation.edges import evaluate_edges, saved_edge_maps
from litesam.evaluation.report import write_report

H, W = 60, 80  # diagonal 100 px: the tolerance is 0.75 px


def square_edges(shift: int = 0) -> np.ndarray:
    """HxW bool outline of a 30x30 square, moved ``shift`` pixels right."""
    edges = np.zeros((H, W), bool)
    edges[15, 20 + shift : 50 + shift] = edges[44, 20 + shift : 50 + shift] = True
    edges[15:45, 20 + shift] = edges[15:45, 49 + shift] = True
    return edges


def test_a_double_edge_matches_one_human_edge_once():
    gt = np.zeros((H, W), bool)
    gt[30, 10:20] = True
    pred = np.zeros_like(gt)
    pred[30, 10:20] = pred[31, 10:20] = True  # within 1 px of the human edge, twice
    matched_p, matched_g = match_boundaries(pred, gt, max_dist=1.5 / 100)
    assert matched_g.sum() == 10 and matched_p.sum() == 10  # a dilation shortcut would count 20 correct


def test_perfect_edges_score_one_and_a_blank_map_zero():
    perfect = summarize([image_counts(square_edges().astype(float), [square_edges()])])
    assert perfect["ODS"] == pytest.approx(1.0) and perfect["OIS"] == pytest.approx(1.0)
    assert perfect["AP"] == pytest.approx(1.0) and perfect["R50"] == pytest.approx(1.0)
    blank = summarize([image_counts(np.zeros((H, W)), [square_edges()])])
    assert blank["ODS"] == 0.0 and blank["OIS"] == 0.0 and blank["AP"] == 0.0


def test_a_one_pixel_shift_is_within_tolerance_on_a_large_image_only():
    big = np.zeros((481, 321), bool)  # BSDS size: tolerance 4.3 px
    big[100:300, 100] = True
    assert summarize([image_counts(np.roll(big, 1, axis=1).astype(float), [big])])["ODS"] == pytest.approx(
        1.0
    )
    small = big[100:160, 60:140]  # diagonal 100 px: tolerance 0.75 px, a 1 px shift matches nothing
    assert small.any() and summarize([image_counts(np.roll(small, 1, axis=1) * 1.0, [small])])["ODS"] == 0.0


def test_soft_edges_give_the_hand_computed_curve():
    # the human square; the prediction is its left half at 0.8 and a false edge at 0.4 of 60 pixels
    gt = square_edges()
    pred = np.zeros((H, W))
    pred[gt & (np.arange(W) < 35)] = 0.8
    pred[5, 10:70] = 0.4
    counts = image_counts(pred, [gt, gt])  # two identical annotators
    left = int((gt & (np.arange(W) < 35)).sum())
    k_hi, k_lo = 60, 20  # thresholds 0.61 and 0.21
    assert counts.cnt_r[k_hi] == 2 * left and counts.sum_r[k_hi] == 2 * gt.sum()
    assert counts.cnt_p[k_lo] == left and counts.sum_p[k_lo] == left + 60
    scores = summarize([counts])
    r, p = left / gt.sum(), 1.0
    assert scores["OIS"] == pytest.approx(2 * r * p / (r + p))
    assert scores["ODS"] == pytest.approx(2 * r * p / (r + p))
    assert scores["R50"] == pytest.approx(r)  # precision never drops to 0.5: recall at the lowest precision


def test_ground_truth_reads_from_mat_and_png(tmp_path):
    gt = square_edges()
    cell = np.empty((1, 2), dtype=object)
    for i in range(2):
        cell[0, i] = {"Boundaries": gt.astype(np.uint8), "Segmentation": np.ones((H, W), np.uint16)}
    savemat(tmp_path / "a.mat", {"groundTruth": cell})
    assert [b.sum() for b in read_boundaries(tmp_path, "a")] == [gt.sum()] * 2
    Image.fromarray(gt.astype(np.uint8) * 255).save(tmp_path / "b_0.png")
    assert np.array_equal(read_boundaries(tmp_path, "b")[0], gt)
    with pytest.raises(InputError, match="no ground truth for c"):
        read_boundaries(tmp_path, "c")
    savemat(tmp_path / "d.mat", {"other": 1})
    with pytest.raises(InputError, match="not BSDS ground truth"):
        read_boundaries(tmp_path, "d")


@pytest.fixture
def bsds(tmp_path):
    """2 images, PNG ground truth, and saved edge maps: perfect for one, shifted off for the other."""
    for folder in ("images", "gt", "pred"):
        (tmp_path / folder).mkdir()
    for name, shift in (("one", 0), ("two", 2)):
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "images" / f"{name}.jpg")
        Image.fromarray(square_edges().astype(np.uint8) * 255).save(tmp_path / "gt" / f"{name}.png")
        np.save(tmp_path / "pred" / f"{name}.npy", square_edges(shift).astype(float))
    return tmp_path


def test_a_folder_scores_as_its_pooled_counts_and_resumes(bsds):
    report = evaluate_edges(saved_edge_maps(bsds / "pred"), bsds / "images", bsds / "gt")
    assert report["images"] == 2
    # 2 px shift on a 100 px diagonal: only the horizontal sides (2 x 30 - 2 px each way) match
    matched = 2 * 28
    r = p = (116 + matched) / (2 * 116)
    assert report["metrics"]["ODS"] == pytest.approx(2 * r * p / (r + p))
    assert len(report["curve"]["recall"]) == 99


def test_cli_scores_saved_maps_and_the_report_renders(bsds, capsys):
    out = bsds / "runs" / "edges.json"
    argv = ["eval", "edges", "--predictions", str(bsds / "pred"), "--images", str(bsds / "images"),
            "--gt", str(bsds / "gt"), "--json", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0 and main(argv) == 0  # the rerun reads every image from the log
    data = json.loads(out.read_text())
    assert data["protocol"] == "edges" and 0 < data["metrics"]["ODS"] < 1
    page = write_report([out], bsds / "report")
    assert "BSDS500 zero-shot edges" in page.read_text() and (bsds / "report" / "edges_pr.png").is_file()
    (bsds / "gt" / "two.png").unlink()
    assert main(argv[:-3] + ["--no-progress"]) == 2
    assert "no ground truth for two" in capsys.readouterr().err
    assert main(["eval", "edges", "--images", "x", "--gt", "y"]) == 2
