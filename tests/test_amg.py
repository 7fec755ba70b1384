"""The mask generator's building blocks and its behaviour, on small inputs and a tiny model.

Parity with the official generator (fixtures and live) is in test_amg_parity.py.
"""

from __future__ import annotations

import json
from collections import deque

import numpy as np
import pytest
import torch
from helpers import photo
from official_stubs import _batched_nms as reference_nms
from torch import nn

import litesam
import litesam.modeling
from litesam.candidates import CropFrame, MaskCandidates
from litesam.utils.amg import (
    batched_nms,
    box_near_crop_edge,
    build_layer_point_grids,
    build_point_grid,
    coco_to_rle,
    generate_crop_boxes,
    mask_to_rle,
    masks_to_boxes,
    remove_small_regions,
    rle_area,
    rle_to_coco,
    rle_to_mask,
)
from litesam.utils.masks import stability_score


def mini_sam(modeling, seed: int = 0, **sam_kwargs) -> nn.Module:
    """A SAM at 256 px with 32-wide parts (16x16 embedding, 64x64 low-res masks) that runs in milliseconds.

    ``modeling`` is ``litesam.modeling`` or the official ``segment_anything.modeling`` (same class and
    attribute names, so one's state_dict loads into the other); ``sam_kwargs`` go to ``Sam``.
    """
    torch.manual_seed(seed)
    return modeling.Sam(
        image_encoder=modeling.ImageEncoderViT(
            img_size=256, embed_dim=32, depth=1, num_heads=2, out_chans=32, use_rel_pos=False,
            window_size=0, global_attn_indexes=(0,),
        ),
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=32, image_embedding_size=(16, 16), input_image_size=(256, 256), mask_in_chans=16
        ),
        mask_decoder=modeling.MaskDecoder(
            transformer_dim=32,
            transformer=modeling.TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=2),
            iou_head_hidden_dim=32,
        ),
        **sam_kwargs,
    ).eval()  # fmt: skip


def reference_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slow 8-connected labelling by breadth-first search: HxW labels (-1 off the mask, components
    numbered in raster order of their first pixel) and the component sizes."""
    h, w = mask.shape
    labels = -np.ones((h, w), dtype=np.int64)
    sizes: list[int] = []
    for y, x in zip(*np.nonzero(mask), strict=True):
        if labels[y, x] >= 0:
            continue
        label, size, queue = len(sizes), 0, deque([(y, x)])
        labels[y, x] = label
        while queue:
            cy, cx = queue.popleft()
            size += 1
            for ny in range(max(cy - 1, 0), min(cy + 2, h)):
                for nx in range(max(cx - 1, 0), min(cx + 2, w)):
                    if mask[ny, nx] and labels[ny, nx] < 0:
                        labels[ny, nx] = label
                        queue.append((ny, nx))
        sizes.append(size)
    return labels, np.array(sizes, dtype=np.int64)


def reference_remove_small_regions(mask: np.ndarray, area: int, mode: str) -> tuple[np.ndarray, bool]:
    """The documented rule, written plainly on top of :func:`reference_components`."""
    holes = mode == "holes"
    labels, sizes = reference_components(~mask if holes else mask)
    small = sizes < area
    if not small.any():
        return mask, False
    if holes:
        return mask | np.isin(labels, np.flatnonzero(small)), True
    keep = np.flatnonzero(~small) if not small.all() else [int(np.argmax(sizes))]
    return np.isin(labels, keep), True


# ---- grids and crops ------------------------------------------------------------------------------


def test_point_grid_is_cell_centres_x_fastest():
    np.testing.assert_array_equal(
        build_point_grid(2), [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]
    )
    grids = build_layer_point_grids(8, 2, 2)
    assert [len(g) for g in grids] == [64, 16, 4]


def test_crop_boxes_tile_the_image_with_overlap():
    boxes, layers = generate_crop_boxes((100, 200), 2, 0.25)
    assert boxes[0] == [0, 0, 200, 100] and layers == [0] + [1] * 4 + [2] * 16
    layer1 = boxes[1:5]
    # column by column: (x0, y0) = (0, 0), (0, y), (x, 0), (x, y); overlap int(0.25 * 100) = 25 pixels
    assert layer1 == [[0, 0, 113, 63], [0, 38, 113, 100], [88, 0, 200, 63], [88, 38, 200, 100]]
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= 200 and 0 <= y0 < y1 <= 100


# ---- boxes, stability --------------------------------------------------------------------------------


def test_masks_to_boxes_inclusive_and_empty():
    masks = torch.zeros(3, 6, 8, dtype=torch.bool)
    masks[0, 2, 3] = True
    masks[1, 1:5, 2:7] = True
    masks[1, 5, 0] = True
    assert masks_to_boxes(masks).tolist() == [[3, 2, 3, 2], [0, 1, 6, 5], [0, 0, 0, 0]]
    assert masks_to_boxes(masks.reshape(3, 1, 6, 8)).shape == (3, 1, 4)


def test_box_near_crop_edge_ignores_image_edges():
    crop, image = [50, 0, 100, 80], [0, 0, 100, 80]
    boxes = torch.tensor([[0, 0, 49, 79], [5, 10, 30, 60], [30, 10, 45, 60]])  # crop frame
    # image frame: box 0 starts at the crop's left edge x=50 (not an image edge), box 1 at x=55 (within
    # 20 px of it); box 2 (x 80..95, y 10..60) is near the crop's other edges only where they are the image's
    assert box_near_crop_edge(boxes, crop, image).tolist() == [True, True, False]


def test_stability_score_is_iou_of_offset_thresholds():
    logits = torch.tensor([[[3.0, 0.5, -0.5, -3.0]], [[-5.0, -5.0, -5.0, -5.0]]])
    score = stability_score(logits, 0.0, 1.0)
    assert score[0].item() == pytest.approx(1 / 3)  # > 1: one pixel; > -1: three pixels
    assert torch.isnan(score[1])


# ---- NMS ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_nms_equals_greedy_reference(seed):
    rng = np.random.default_rng(seed)
    n = [0, 7, 600, 1300][seed]  # 1300 spans several blocks
    corner = rng.random((n, 2)) * 100
    boxes = torch.tensor(
        np.concatenate([corner, corner + rng.random((n, 2)) * 50], axis=1), dtype=torch.float
    )
    scores = torch.tensor(rng.integers(0, 30, n) / 30, dtype=torch.float)  # many ties
    categories = torch.tensor(rng.integers(0, 3, n))
    for thresh in (0.0, 0.3, 0.7, 1.0):
        expected = reference_nms(boxes, scores, categories, thresh)
        assert torch.equal(batched_nms(boxes, scores, categories, thresh), expected)


# ---- RLE ---------------------------------------------------------------------------------------------


def test_rle_is_column_major_starting_with_zeros():
    mask = torch.tensor([[[0, 1, 1], [0, 1, 0]], [[1, 1, 1], [1, 1, 1]]], dtype=torch.bool)
    # column-major streams: 0 0 1 1 1 0 and 1 1 1 1 1 1
    assert [c.tolist() for c in mask_to_rle(mask)] == [[2, 3, 1], [0, 6]]
    assert rle_area([2, 3, 1]) == 3


def test_rle_round_trip_random_masks():
    rng = np.random.default_rng(0)
    masks = torch.from_numpy(rng.random((5, 31, 47)) < [[[0.0]], [[1.0]], [[0.5]], [[0.05]], [[0.95]]])
    for mask, counts in zip(masks, mask_to_rle(masks), strict=True):
        rle = {"size": [31, 47], "counts": counts.tolist()}
        np.testing.assert_array_equal(rle_to_mask(rle), mask.numpy())
        assert coco_to_rle(rle_to_coco(rle)) == rle
        assert rle_area(counts) == int(mask.sum())


def test_coco_rle_encodes_large_and_negative_differences():
    # differences between counts two apart are large and of both signs
    rle = {"size": [1000, 1000], "counts": [0, 400000, 3, 599996, 1]}
    coco = rle_to_coco(rle)
    assert isinstance(coco["counts"], str) and json.loads(json.dumps(coco)) == coco
    assert coco_to_rle(coco) == rle


def test_coco_rle_valid_for_pycocotools():
    mask_utils = pytest.importorskip("pycocotools.mask", reason="pycocotools (optional extra) not installed")
    rng = np.random.default_rng(1)
    masks = torch.from_numpy(rng.random((4, 40, 33)) < 0.4)
    masks[3] = True
    for mask, counts in zip(masks, mask_to_rle(masks), strict=True):
        rle = {"size": [40, 33], "counts": counts.tolist()}
        ours = rle_to_coco(rle)
        assert ours["counts"] == mask_utils.frPyObjects(rle, 40, 33)["counts"].decode()
        decoded = mask_utils.decode({"size": ours["size"], "counts": ours["counts"].encode()})
        np.testing.assert_array_equal(decoded.astype(bool), mask.numpy())


# ---- small regions -----------------------------------------------------------------------------------


def test_remove_small_regions_matches_slow_reference():
    rng = np.random.default_rng(2)
    for _ in range(150):
        h, w = rng.integers(1, 24, size=2)
        mask = rng.random((h, w)) < rng.random()
        area = int(rng.integers(1, 15))
        for mode in ("holes", "islands"):
            got, changed = remove_small_regions(mask, area, mode)
            want, want_changed = reference_remove_small_regions(mask, area, mode)
            assert changed == want_changed
            np.testing.assert_array_equal(got, want)


def test_remove_small_regions_connects_diagonals():
    mask = np.eye(5, dtype=bool)  # one 8-connected island of 5 pixels
    assert remove_small_regions(mask, 5, "islands") == (mask, False)
    out, changed = remove_small_regions(mask, 6, "islands")  # all islands small: the largest stays
    assert changed and (out == mask).all()


# ---- the generator -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return mini_sam(litesam.modeling, transform=litesam.ImageTransform(256))


KEEP_ALL = dict(
    points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0, stability_score_offset=0.3
)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(points_per_side=None), "exactly one of points_per_side"),
        (dict(point_grids=[np.full((4, 2), 0.5)]), "exactly one of points_per_side"),
        (dict(points_per_side=0), "points_per_side must be an integer >= 1"),
        (dict(points_per_batch=0), "points_per_batch"),
        (dict(box_nms_thresh=1.5), "box_nms_thresh"),
        (dict(crop_overlap_ratio=1.0), "crop_overlap_ratio"),
        (dict(output_mode="png"), "output_mode"),
        (dict(min_mask_region_area=-1), "min_mask_region_area"),
        (dict(points_per_side=3, crop_n_layers=2, crop_n_points_downscale_factor=2), "leaves no points"),
        (dict(points_per_side=None, point_grids=[np.full((4, 2), 2.0)]), r"in \[0, 1\]"),
        (dict(points_per_side=None, point_grids=[np.full((4, 2), 0.5)], crop_n_layers=1), "one grid per"),
        (dict(pred_iou_thresh=float("nan")), "finite"),
    ],
)
def test_bad_settings_raise_clear_errors(model, settings, message):
    with pytest.raises(ValueError, match=message):
        litesam.MaskGenerator(model, **settings)


def test_records_have_the_official_fields(model):
    image = photo(60, 80)
    records = litesam.MaskGenerator(model, box_nms_thresh=1.0, **KEEP_ALL).generate(image)
    assert len(records) == 27  # 9 points x 3 masks, nothing filtered
    for r in records:
        assert set(r) == {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score",
                          "crop_box"}  # fmt: skip
        mask = r["segmentation"]
        assert mask.dtype == bool and mask.shape == (60, 80)
        assert r["area"] == int(mask.sum())
        if r["area"]:
            ys, xs = np.nonzero(mask)
            assert r["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
        assert r["crop_box"] == [0, 0, 80, 60]
        assert isinstance(r["predicted_iou"], float) and isinstance(r["stability_score"], float)
    ious = [r["predicted_iou"] for r in records]
    assert ious == sorted(ious, reverse=True)
    points = np.unique([r["point_coords"][0] for r in records], axis=0)
    np.testing.assert_allclose(points, [[x, y] for x in (80 / 6, 40, 400 / 6) for y in (10, 30, 50)])
    json.dumps(litesam.MaskGenerator(model, output_mode="coco_rle", **KEEP_ALL).generate(image))


def test_an_encoded_image_is_not_encoded_again(model, monkeypatch):
    image = photo(60, 80)
    generator = litesam.MaskGenerator(model, **KEEP_ALL)
    state = generator.predictor.encode(image)
    expected = generator.generate(image)
    encoded = []
    encode = generator.predictor.encode
    monkeypatch.setattr(generator.predictor, "encode", lambda rgb: encoded.append(rgb.shape) or encode(rgb))
    again = generator.generate(image, state=state)
    assert encoded == [] and len(again) == len(expected)
    for a, b in zip(again, expected, strict=True):
        np.testing.assert_array_equal(a["segmentation"], b["segmentation"])
    cropping = litesam.MaskGenerator(model, crop_n_layers=1, **KEEP_ALL)  # the image and 4 crops
    encode = cropping.predictor.encode
    monkeypatch.setattr(cropping.predictor, "encode", lambda rgb: encoded.append(rgb.shape) or encode(rgb))
    cropping.generate(image, state=state)
    assert len(encoded) == 4 and (60, 80, 3) not in encoded  # only the crops are encoded


def test_output_modes_hold_the_same_masks(model):
    image = photo(50, 70)
    outputs = {
        mode: litesam.MaskGenerator(model, output_mode=mode, **KEEP_ALL).generate(image)
        for mode in ("binary_mask", "uncompressed_rle", "coco_rle")
    }
    assert len({len(r) for r in outputs.values()}) == 1 and outputs["binary_mask"]
    for binary, rle, coco in zip(*outputs.values(), strict=True):
        np.testing.assert_array_equal(rle_to_mask(rle["segmentation"]), binary["segmentation"])
        assert coco_to_rle(coco["segmentation"]) == rle["segmentation"]


def test_iou_filter_before_upsampling_keeps_exactly_the_masks_above_threshold(model):
    image = photo(50, 70)
    settings = dict(KEEP_ALL, stability_score_offset=0.01, box_nms_thresh=1.0, output_mode="uncompressed_rle")
    everything = litesam.MaskGenerator(model, **settings).generate(image)
    thresh = float(np.median([r["predicted_iou"] for r in everything]))
    filtered = litesam.MaskGenerator(model, **dict(settings, pred_iou_thresh=thresh)).generate(image)
    assert 0 < len(filtered) < len(everything)
    assert filtered == [r for r in everything if r["predicted_iou"] > thresh]
    stable_thresh = float(np.nanmedian([r["stability_score"] for r in everything]))
    stable = litesam.MaskGenerator(model, **dict(settings, stability_score_thresh=stable_thresh)).generate(
        image
    )
    assert 0 < len(stable) < len(everything)
    assert stable == [r for r in everything if r["stability_score"] >= stable_thresh]  # NaN fails too


def test_box_nms_removes_duplicates(model):
    image = photo(50, 70)
    records = litesam.MaskGenerator(model, **dict(KEEP_ALL, box_nms_thresh=0.5)).generate(image)
    boxes = torch.tensor([r["bbox"] for r in records], dtype=torch.float)
    boxes[:, 2:] += boxes[:, :2]
    assert len(records) >= 1
    assert len(batched_nms(boxes, torch.ones(len(boxes)), torch.zeros(len(boxes)), 0.5)) == len(records)


def test_min_mask_region_area_leaves_no_small_islands_or_holes(model):
    image = photo(50, 70)
    area = 30
    settings = dict(KEEP_ALL, box_nms_thresh=1.0, min_mask_region_area=area)
    for r in litesam.MaskGenerator(model, **settings).generate(image):
        mask = r["segmentation"]
        for part in (mask, ~mask):
            _, sizes = reference_components(part)
            assert (sizes >= area).all() or len(sizes) == 1


def test_crops_and_progress_bar(model, capsys):
    image = photo(64, 96)
    gen = litesam.MaskGenerator(
        model, crop_n_layers=1, crop_n_points_downscale_factor=2, progress=True, **KEEP_ALL
    )
    records = gen.generate(image)
    crops = {tuple(r["crop_box"]) for r in records}
    assert crops <= {(0, 0, 96, 64)} | {tuple(b[:2] + [b[2] - b[0], b[3] - b[1]]) for b in
                                         generate_crop_boxes((64, 96), 1, 512 / 1500)[0]}  # fmt: skip
    assert "5/5" in capsys.readouterr().err  # 1 + 4 crops, one batch each


# ---- prompt sources ------------------------------------------------------------------------------------


class ScoredBoxes:
    """A detector-like source: boxes with a score column of its own."""

    multimask_output = False

    def __init__(self, boxes: list[list[float]], scores: list[float]) -> None:
        self.boxes, self.scores = torch.tensor(boxes, dtype=torch.float64), torch.tensor(scores)

    def crops(self, image_size):
        return [CropFrame.whole(image_size)]

    def prompts(self, frame):
        centres = (self.boxes[:, :2] + self.boxes[:, 2:]) / 2
        return litesam.Prompts(boxes=self.boxes), {"points": centres, "det_score": self.scores}


def test_a_source_of_its_own_adds_a_column_that_reaches_the_records(model):
    image = photo(60, 80)
    source = ScoredBoxes([[5, 5, 40, 30], [30, 20, 75, 55]], [0.9, 0.25])
    gen = litesam.MaskGenerator(model, box_nms_thresh=1.0, **KEEP_ALL)
    records = gen.generate(image, source=source)
    plain = gen.generate(image, boxes=source.boxes.numpy())
    assert len(records) == len(plain) == 2
    for record, reference in zip(records, plain, strict=True):
        assert record.pop("det_score") in (pytest.approx(0.9), pytest.approx(0.25))
        np.testing.assert_array_equal(record.pop("segmentation"), reference.pop("segmentation"))
        assert record == reference


def test_box_prompts_wholly_outside_the_image_are_refused(model):
    gen = litesam.MaskGenerator(model, **KEEP_ALL)
    with pytest.raises(litesam.InputError, match=r"box \(100, 5, 120, 30\) lies outside the image"):
        gen.generate(photo(60, 80), boxes=[[10, 5, 30, 30], [100, 5, 120, 30]])
    records = gen.generate(photo(60, 80), boxes=[[-10, -5, 30, 300]])  # partly outside: clipped
    assert len(records) <= 1


def test_candidates_select_and_concat_treat_every_column_alike():
    masks = torch.zeros(3, 4, 5, dtype=torch.bool)
    masks[0, 1:3, 1:4] = masks[1, 0, 0] = masks[2, 3, 4] = True
    frame = CropFrame((2, 1, 7, 5), (8, 9))
    cands = MaskCandidates.from_masks(masks, frame, points=torch.zeros(3, 2, dtype=torch.float64),
                                      class_id=torch.tensor([4, 5, 6]))  # fmt: skip
    assert cands["boxes"].tolist() == [[3, 2, 5, 3], [2, 1, 2, 1], [6, 4, 6, 4]]  # inclusive, image frame
    picked = MaskCandidates.concat(
        [cands.select(torch.tensor([2, 0])), MaskCandidates(), cands.select(torch.tensor([1]))]
    )
    assert picked["class_id"].tolist() == [6, 4, 5] and len(picked.rles) == 3
    assert [r["class_id"] for r in picked.records((8, 9))] == [6, 4, 5]
    with pytest.raises(ValueError, match="different columns"):
        MaskCandidates.concat([cands, MaskCandidates.from_masks(masks, frame)])
