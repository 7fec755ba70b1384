"""FastSAM: YOLOv8-seg in plain torch, the official checkpoint format, and the official pipeline's
numbers (raw head outputs, everything boxes/scores/masks, box and point prompt selection)."""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest
import torch

import litesam
from litesam.build import prepare_for_inference
from litesam.checkpoint import CheckpointError, read_state_dict
from litesam.modeling.fastsam import Instances, select_by_box, select_by_points
from litesam.utils.image import load_image
from tests.fixture_cases import assert_allclose, assert_masks_match, fill_parity_weights, require_fixture


def parity_fastsam() -> litesam.modeling.fastsam.FastSAM:
    """fastsam_s with the fixture's weights (DFL bins back at arange(16), as built), fused as official."""
    model = fill_parity_weights(litesam.build_model("fastsam_s"))
    model.model[22].dfl.conv.weight.data[:] = torch.arange(16.0).view(1, 16, 1, 1)
    return prepare_for_inference(model)


def everything_masks(fixture) -> np.ndarray:
    arrays = fixture.index["everything"]["arrays"]
    shape = arrays["masks_shape"]
    bits = np.unpackbits(fixture.arrays[arrays["masks_packbits"]], count=int(np.prod(shape)))
    return bits.reshape(shape).astype(bool)


def test_state_dict_has_the_official_keys_and_shapes():
    fixture = require_fixture("fastsam_s")
    ours = {k: tuple(v.shape) for k, v in litesam.build_model("fastsam_s").state_dict().items()}
    assert ours == fixture.official_state_dict_shapes


def test_letterbox_reproduces_the_official_network_input():
    fixture = require_fixture("fastsam_s")
    x = litesam.get_spec("fastsam_s").transform.to_input(load_image(fixture.image_path))
    ours = (x[0].permute(1, 2, 0) * 255).round().to(torch.int16).numpy()
    official = fixture.arrays["letterboxed_rgb_uint8"].astype(np.int16)
    assert ours.shape == official.shape
    assert np.abs(ours - official).max() <= 1  # OpenCV's fixed-point rounding, off by one on a few pixels
    assert (ours != official).mean() < 1e-3


def test_raw_head_outputs_match_the_official_network():
    fixture = require_fixture("fastsam_s")
    x = torch.from_numpy(fixture.arrays["letterboxed_rgb_uint8"]).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        out = parity_fastsam()(x)
    tol = fixture.tolerance
    assert_allclose(out["pred"], fixture.arrays["pred"], tol["pred_atol"], "pred")
    assert_allclose(out["protos"], fixture.arrays["protos"], tol["protos_atol"], "protos")
    for level in ("p3", "p4", "p5"):
        name = f"head_raw_{level}"
        assert_allclose(out[name], fixture.arrays[name], tol["pred_atol"], name)


def test_everything_from_the_official_head_outputs_gives_the_official_boxes_scores_and_masks():
    fixture = require_fixture("fastsam_s")
    everything, tol = fixture.index["everything"], fixture.tolerance
    features = {
        "pred": torch.from_numpy(fixture.arrays["pred"]),
        "protos": torch.from_numpy(fixture.arrays["protos"]),
        "original_size": torch.tensor(fixture.index["original_size"]),
    }
    found = parity_fastsam().instances(features, everything["conf"], everything["iou"])
    assert_allclose(found.boxes, fixture.arrays["everything_boxes_xyxy"], tol["boxes_atol_px"], "boxes")
    assert_allclose(found.scores, fixture.arrays["everything_scores"], tol["scores_atol"], "scores")
    assert_masks_match(found.masks, everything_masks(fixture), tol["mask_mismatch_max_fraction"], "masks")


def test_mask_generator_on_the_photo_gives_the_official_everything_masks_as_records():
    fixture = require_fixture("fastsam_s")
    everything, tol = fixture.index["everything"], fixture.tolerance
    generator = litesam.MaskGenerator(parity_fastsam(), conf=everything["conf"], iou=everything["iou"])
    records = generator.generate(fixture.image_path)
    masks = np.stack([r["segmentation"] for r in records])
    assert_masks_match(masks, everything_masks(fixture), tol["mask_mismatch_max_fraction"], "everything")
    scores = [r["predicted_iou"] for r in records]
    assert_allclose(scores, fixture.arrays["everything_scores"], tol["scores_atol"], "scores")
    assert [r["area"] for r in records] == [int(m.sum()) for m in masks]
    x, y, w, h = records[0]["bbox"]
    rows, cols = np.nonzero(masks[0])
    assert (x, y, x + w, y + h) == (cols.min(), rows.min(), cols.max(), rows.max())


@pytest.mark.parametrize("case_name", ["a_point", "b_box"])
def test_predictor_returns_the_official_prompt_selected_mask(case_name):
    fixture = require_fixture("fastsam_s")
    case = fixture.case(case_name)
    model = parity_fastsam()
    model.conf = fixture.index["everything"]["conf"]
    predictor = litesam.Predictor(model)
    predictor.set_image(fixture.image_path)
    masks, scores, _ = predictor.predict(
        point_coords=case["point_coords"], point_labels=case["point_labels"], box=case["box"]
    )
    expected, tol = fixture.expected(case, "masks"), fixture.tolerance
    assert_masks_match(masks, expected, tol["mask_mismatch_max_fraction"], case_name)
    assert scores.shape == (1,)


def test_official_checkpoint_file_loads_through_build_model_as_float32():
    fixture = require_fixture("fastsam_s")
    model = litesam.build_model("fastsam_s", checkpoint=fixture.folder / "fastsam_s_format.pt", fuse=False)
    expected = fill_parity_weights(litesam.build_model("fastsam_s")).state_dict()
    for key, value in model.state_dict().items():
        assert value.dtype == expected[key].dtype, key
        if key.endswith("dfl.conv.weight"):
            assert torch.equal(value.flatten(), torch.arange(16.0))
        elif value.is_floating_point():
            assert torch.equal(value, expected[key].half().float()), key


def test_a_checkpoint_of_another_scale_is_refused_naming_its_scale():
    fixture = require_fixture("fastsam_s")
    with pytest.raises(CheckpointError, match="FastSAM-s .*not FastSAM-x"):
        litesam.build_model("fastsam_x", checkpoint=fixture.folder / "fastsam_s_format.pt")


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_an_ultralytics_pickle_with_a_malicious_reduce_is_refused_without_running_it(tmp_path, monkeypatch):
    model_cls = type("SegmentationModel", (), {"__module__": "ultralytics.nn.tasks"})
    for name in ("ultralytics", "ultralytics.nn", "ultralytics.nn.tasks"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules["ultralytics.nn.tasks"].SegmentationModel = model_cls
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"model": model_cls(), "extra": _Evil(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refusing the global posix.system"):
        read_state_dict(path)
    assert not marker.exists()


def _instances(*masks: np.ndarray, scores: list[float]) -> Instances:
    stacked = torch.from_numpy(np.stack(masks))
    return Instances(torch.zeros(len(masks), 4), torch.tensor(scores), stacked)


def test_points_unite_masks_largest_first_and_background_points_cut_out():
    big = np.zeros((10, 10), bool)
    big[:, :6] = True
    other = np.zeros((10, 10), bool)
    other[:8, 5:] = True  # smaller, so visited after big: its background point cuts column 5 out of big
    found = _instances(other, big, scores=[0.9, 0.5])
    mask, score = select_by_points(found, torch.tensor([[1.0, 1.0], [8.0, 2.0]]), torch.tensor([1, 0]))
    assert torch.equal(mask, torch.from_numpy(big & ~other))
    assert float(score) == pytest.approx(0.9)
    none, zero = select_by_points(found, torch.tensor([[9.0, 9.0]]), torch.tensor([1]))
    assert not none.any() and float(zero) == 0.0


def test_a_box_selects_the_mask_of_highest_box_iou():
    left = np.zeros((10, 10), bool)
    left[:, :3] = True
    right = np.zeros((10, 10), bool)
    right[:, 5:] = True
    masks = _instances(left, right, scores=[0.9, 0.8]).masks
    mask, iou = select_by_box(masks, torch.tensor([5.0, 0, 10, 10]))
    assert torch.equal(mask, torch.from_numpy(right)) and float(iou) == pytest.approx(1.0)


def test_instance_thresholds_are_mask_generator_keywords_only_for_models_that_take_them():
    with pytest.raises(litesam.InputError, match="unexpected keyword arguments: conf"):
        litesam.MaskGenerator(torch.nn.Identity(), conf=0.4)
    with pytest.raises(litesam.InputError, match="conf and iou must be in"):
        litesam.MaskGenerator(litesam.build_model("fastsam_s"), conf=2.0)
