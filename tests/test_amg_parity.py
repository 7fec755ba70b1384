"""The mask generator reproduces the official ``SamAutomaticMaskGenerator``.

1. Stored fixture: ``parity/mobile_sam/amg.json`` (official MobileSAM generator on the fixtures' name-keyed
   weights, settings per run in the file) is reproduced record by record.
2. Live: the official ``segment_anything`` generator and ours drive the same small random-weight SAM
   (crops off and on, small-region removal on); same masks, boxes, areas and scores.
"""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
from fixture_cases import fill_parity_weights, require_fixture
from test_amg import mini_sam, reference_components
from test_live_official_sam import randomize

import litesam
import litesam.modeling
from litesam.build import prepare_for_inference
from litesam.utils.amg import rle_to_mask


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def assert_records_match(ours: list[dict], theirs: list[dict], min_iou: float = 0.99) -> None:
    """Same number of masks; each official record is matched to one of ours with the same prompt point
    and crop (best mask IoU), and the matched masks, areas, boxes and scores agree."""
    assert len(ours) == len(theirs), f"{len(ours)} masks, official {len(theirs)}"
    unmatched = list(range(len(ours)))
    for t in theirs:
        t_mask = rle_to_mask(t["segmentation"])
        candidates = [
            i
            for i in unmatched
            if np.allclose(ours[i]["point_coords"], t["point_coords"])
            and np.allclose(ours[i]["crop_box"], t["crop_box"])
        ]
        assert candidates, f"no mask of ours for the official point {t['point_coords']}"
        ious = [mask_iou(rle_to_mask(ours[i]["segmentation"]), t_mask) for i in candidates]
        best = candidates[int(np.argmax(ious))]
        unmatched.remove(best)
        o = ours[best]
        assert max(ious) >= min_iou, f"mask IoU {max(ious):.4f} at {t['point_coords']}"
        assert abs(o["area"] - t["area"]) <= max(2, 0.002 * t["area"])
        np.testing.assert_allclose(o["bbox"], t["bbox"], atol=1)
        assert o["predicted_iou"] == pytest.approx(t["predicted_iou"], abs=1e-4)
        t_stability = t["stability_score"]
        if t_stability is None or np.isnan(t_stability):
            assert np.isnan(o["stability_score"])
        else:
            assert o["stability_score"] == pytest.approx(t_stability, abs=1e-3)


# ---- 1. stored fixture ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mobile_sam_amg():
    fixture = require_fixture("mobile_sam")
    runs = json.loads((fixture.folder / "amg.json").read_text())
    plain = fill_parity_weights(litesam.build_model("mobile_sam"))
    fast = prepare_for_inference(fill_parity_weights(litesam.build_model("mobile_sam")))
    return fixture, {"plain": plain, "fast": fast}, {"primary": runs["primary"], **runs["extra_runs"]}


@pytest.mark.parametrize("path", ["plain", "fast"])
@pytest.mark.parametrize("run", ["primary", "grid2_no_nms_offset0.1"])
def test_reproduces_official_mobile_sam_generator_fixture(mobile_sam_amg, run, path):
    """Both decoder paths: the plain one (as trained) and the fast one ``build_model`` gives with a
    checkpoint (reassociated attention, GEMM upscaling, prompt chunks)."""
    fixture, models, runs = mobile_sam_amg
    settings, expected = runs[run]["settings"], runs[run]["records"]
    records = litesam.MaskGenerator(models[path], **settings).generate(fixture.image_path)
    assert_records_match(records, expected, min_iou=0.999)
    for ours, theirs in zip(records, expected, strict=True):  # same order: descending predicted IoU
        assert ours["point_coords"] == theirs["point_coords"] and ours["crop_box"] == theirs["crop_box"]
        assert ours["segmentation"]["size"] == theirs["segmentation"]["size"]


@pytest.mark.parametrize("pred_iou_thresh", [0.0, "median"], ids=["filters off", "IoU filter"])
def test_fast_path_gives_the_plain_paths_records(mobile_sam_amg, pred_iou_thresh):
    """A 7x7 grid decoded 16 prompts at a time, no NMS: every mask of the plain path, in its order. With
    the IoU filter the fast path also skips the masks of prompts with no score above it."""
    fixture, models, _ = mobile_sam_amg
    settings = dict(
        points_per_side=7,
        points_per_batch=16,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=1.0,
        output_mode="uncompressed_rle",
    )
    plain = litesam.MaskGenerator(models["plain"], **settings).generate(fixture.image_path)
    if pred_iou_thresh == "median":
        settings["pred_iou_thresh"] = float(np.median([r["predicted_iou"] for r in plain]))
        plain = [r for r in plain if r["predicted_iou"] > settings["pred_iou_thresh"]]
    fast = litesam.MaskGenerator(models["fast"], **settings).generate(fixture.image_path)
    assert len(plain) >= 49
    assert_records_match(fast, plain, min_iou=0.999)


# ---- 2. live, against the official package --------------------------------------------------------


def official_cv2() -> types.ModuleType:
    """A stand-in for the ``cv2.connectedComponentsWithStats`` the official generator calls for
    ``min_mask_region_area`` (OpenCV is not installed): label 0 is the background, components follow in
    raster order, the last stats column is the area. Built on the slow reference labelling."""

    def connected_components_with_stats(image: np.ndarray, connectivity: int):
        assert connectivity == 8
        labels, sizes = reference_components(image.astype(bool))
        background = int((labels < 0).sum())
        stats = np.zeros((len(sizes) + 1, 5), dtype=np.int32)
        stats[:, -1] = [background, *sizes]
        return len(sizes) + 1, (labels + 1).astype(np.int32), stats, None

    return types.SimpleNamespace(connectedComponentsWithStats=connected_components_with_stats)


@pytest.fixture(scope="module")
def live_pair(official_sam):
    """The official generator module and two SAMs sharing one image encoder and one set of random weights.

    Weights are random except that the encoder's position embedding is small and the decoder's
    upscaling kernels are equal over their 2x2 taps, so masks follow the image's coloured regions
    instead of a fine checkerboard (masks that span the image leave box NMS nothing to choose).
    """
    import official_stubs

    official = mini_sam(official_sam.modeling)
    randomize(official, seed=3)
    with torch.no_grad():
        official.image_encoder.pos_embed.mul_(0.1)
        for layer in official.mask_decoder.output_upscaling:
            if isinstance(layer, torch.nn.ConvTranspose2d):
                layer.weight.copy_(layer.weight[..., :1, :1].expand_as(layer.weight))
    ours = mini_sam(litesam.modeling, transform=litesam.ImageTransform(256))
    ours.load_state_dict(official.state_dict(), strict=True)
    ours.image_encoder = official.image_encoder  # isolate the generators from encoder rounding
    module = sys.modules["segment_anything.automatic_mask_generator"]

    def nms(boxes, scores, idxs, iou_threshold):  # the official passes iou_threshold by keyword
        return official_stubs._batched_nms(boxes, scores, idxs, iou_threshold)

    return module, official, ours, nms


def coloured_shapes(h: int = 150, w: int = 200) -> np.ndarray:
    rng = np.random.default_rng(0)
    image = np.full((h, w, 3), (40, 40, 160), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    image[(yy - 0.4 * h) ** 2 + (xx - 0.35 * w) ** 2 < (0.23 * h) ** 2] = (250, 30, 30)
    image[int(0.67 * h) : int(0.93 * h), int(0.6 * w) : int(0.95 * w)] = (20, 200, 40)
    image[int(0.07 * h) : int(0.33 * h), int(0.7 * w) : int(0.95 * w)] = (230, 230, 30)
    return (image + rng.integers(0, 12, image.shape)).astype(np.uint8)


KEEP = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0, output_mode="uncompressed_rle")
LIVE = {
    "grid, no NMS": dict(KEEP, points_per_side=4, box_nms_thresh=1.0, stability_score_offset=0.01),
    "grid, NMS": dict(KEEP, points_per_side=4, box_nms_thresh=0.7),
    "filters on": dict(
        points_per_side=4,
        pred_iou_thresh=0.1,
        stability_score_thresh=0.3,
        stability_score_offset=0.01,
        output_mode="uncompressed_rle",
    ),
    "crops": dict(KEEP, points_per_side=4, crop_n_layers=1, crop_n_points_downscale_factor=2),
    "small regions": dict(KEEP, points_per_side=2, box_nms_thresh=0.9, min_mask_region_area=60),
}


@pytest.mark.parametrize("settings", LIVE.values(), ids=LIVE.keys())
def test_matches_official_generator_live(live_pair, official_sam, monkeypatch, settings):
    module, official, ours, nms = live_pair
    monkeypatch.setattr(module, "batched_nms", nms)
    monkeypatch.setitem(sys.modules, "cv2", official_cv2())
    image = coloured_shapes()
    theirs = official_sam.SamAutomaticMaskGenerator(official, **settings).generate(image)
    records = litesam.MaskGenerator(ours, **settings).generate(image)
    assert len(theirs) >= 3, "the setting should keep several masks"
    assert_records_match(records, theirs)
