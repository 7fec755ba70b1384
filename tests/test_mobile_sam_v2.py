"""MobileSAM-v2: the official Inference.py pipeline's numbers (object-aware detector outputs and boxes,
encoder embeddings, box-prompted masks, segment-everything records) and its checkpoint files."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import torch

import litesam
from litesam.build import prepare_for_inference
from litesam.checkpoint import CheckpointError
from litesam.modeling.mobile_sam_v2 import MobileSAMv2
from litesam.utils.image import load_image
from litesam.zoo.mobile_sam_v2 import read_decoder
from tests.fixture_cases import (
    assert_allclose,
    assert_masks_match,
    fill_parity_weights,
    require_fixture,
    state_dict_shapes,
)

ENCODERS = ("tiny_vit", "efficientvit_l2")


@cache
def parity_v2(encoder: str) -> MobileSAMv2:
    """mobile_sam_v2 with the fixture's weights: SAM side by its official keys, the detector by its
    own ``model.<i>.*`` keys with the DFL bins back at arange(26); fused, as the official detector."""
    model = fill_parity_weights(litesam.build_model("mobile_sam_v2", encoder=encoder))
    fill_parity_weights(model.detector)
    model.detector.model[22].dfl.conv.weight.data[:] = torch.arange(26.0).view(1, 26, 1, 1)
    return prepare_for_inference(model)


@cache
def predictor(encoder: str) -> litesam.Predictor:
    fixture = require_fixture("mobile_sam_v2")
    p = litesam.Predictor(parity_v2(encoder))
    p.set_image(fixture.image_path)
    return p


def expected_masks(fixture, arrays: dict) -> np.ndarray:
    shape = arrays["masks_shape"]
    bits = np.unpackbits(fixture.arrays[arrays["masks_packbits"]], count=int(np.prod(shape)))
    return bits.reshape(shape).astype(bool)


def official_keys(fixture, part: str) -> dict[str, tuple[int, ...]]:
    return {row["key"]: tuple(row["shape"]) for row in fixture.meta["state_dict"][part]}


def test_state_dicts_have_the_official_keys_of_every_file():
    fixture = require_fixture("mobile_sam_v2")
    model = litesam.build_model("mobile_sam_v2", encoder="tiny_vit")
    assert state_dict_shapes(model.detector) == official_keys(
        fixture, "detector (ObjectAwareModel.pt: ckpt['model'].state_dict())"
    )
    evit = litesam.build_model("mobile_sam_v2", encoder="efficientvit_l2").image_encoder
    tiny = {k: v for k, v in state_dict_shapes(model.image_encoder).items() if "attention_bias_idxs" not in k}
    assert tiny == official_keys(fixture, "tiny_vit (mobile_sam.pt: ckpt['model'])")
    assert state_dict_shapes(evit) == official_keys(
        fixture, "efficientvit_l2 (l2.pt: ckpt['state_dict'], keys 'image_encoder.' + key)"
    )


def test_the_official_decoder_file_loads_through_the_real_loader(tmp_path):
    fixture = require_fixture("mobile_sam_v2")
    state = read_decoder(fixture.folder / "mobile_sam_v2_decoder_format.pt")
    model = parity_v2("tiny_vit")
    for key, value in model.state_dict().items():
        if key.startswith(("prompt_encoder.", "mask_decoder.")):
            assert torch.equal(state.pop(key), value), key
    assert not state  # nothing left over

    # the whole model from upstream's folder layout: weight/ + PromptGuidedDecoder/
    weight, decoder = tmp_path / "weight", tmp_path / "PromptGuidedDecoder"
    weight.mkdir()
    decoder.mkdir()
    (decoder / "Prompt_guided_Mask_Decoder.pt").symlink_to(fixture.folder / "mobile_sam_v2_decoder_format.pt")
    raw = litesam.build_model("mobile_sam_v2", encoder="tiny_vit")
    torch.save({"model": {k[len("image_encoder.") :]: v for k, v in raw.state_dict().items()
                          if k.startswith("image_encoder.")}}, weight / "mobile_sam.pt")  # fmt: skip
    with pytest.raises(CheckpointError, match="needs ObjectAwareModel.pt"):
        litesam.build_model("mobile_sam_v2", checkpoint=weight, encoder="tiny_vit")
    torch.save({"model": raw.detector.state_dict()}, weight / "ObjectAwareModel.pt")
    loaded = litesam.build_model("mobile_sam_v2", checkpoint=weight, encoder="tiny_vit", fuse=False)
    assert torch.equal(
        loaded.mask_decoder.iou_token.weight, parity_v2("tiny_vit").mask_decoder.iou_token.weight
    )
    by_role = {
        "detector": weight / "ObjectAwareModel.pt",
        "decoder": decoder / "Prompt_guided_Mask_Decoder.pt",
    }
    with pytest.raises(CheckpointError, match="lacks encoder"):
        litesam.build_model("mobile_sam_v2", checkpoint=by_role, encoder="tiny_vit")
    with pytest.raises(CheckpointError, match="not a MobileSAM-v2 decoder file"):
        wrong = {**by_role, "decoder": weight / "mobile_sam.pt", "encoder": weight / "mobile_sam.pt"}
        litesam.build_model("mobile_sam_v2", encoder="tiny_vit", checkpoint=wrong)


def test_detector_sees_the_official_letterboxed_bgr_input():
    fixture = require_fixture("mobile_sam_v2")
    rgb = load_image(fixture.image_path)
    detector = parity_v2("tiny_vit").detector
    x = detector.transform.to_input(np.ascontiguousarray(rgb[..., ::-1]))
    assert list(x.shape) == fixture.arrays["det_input_shape"].tolist()
    h, w = x.shape[-2:]
    patch = x[0, :, h // 2 - 8 : h // 2 + 8, w // 2 - 8 : w // 2 + 8]
    assert_allclose(patch, fixture.arrays["det_input_patch"], 1.5 / 255, "input patch")  # OpenCV rounding


@cache
def detector_outputs() -> dict[str, torch.Tensor]:
    fixture = require_fixture("mobile_sam_v2")
    rgb = load_image(fixture.image_path)
    detector = parity_v2("tiny_vit").detector
    with torch.inference_mode():
        return detector(detector.transform.to_input(np.ascontiguousarray(rgb[..., ::-1])))


def test_raw_detector_outputs_match_the_official_network():
    fixture = require_fixture("mobile_sam_v2")
    out, tol = detector_outputs(), fixture.tolerance
    assert_allclose(out["head_raw_p5"], fixture.arrays["det_head_raw_p5"], tol["pred_atol"], "head p5")
    pred = out["pred"][0]
    assert_allclose(
        pred[:4], fixture.arrays["det_pred_boxes_scores"][:4], tol["pred_atol"] * 10, "pred boxes"
    )
    assert_allclose(pred[4], fixture.arrays["det_pred_boxes_scores"][4], tol["scores_atol"], "pred scores")
    assert "protos" not in out and pred.shape[0] == 4 + 1 + 32  # mask coefficients, no prototypes


def test_detector_boxes_and_scores_match_the_official_predictor():
    fixture = require_fixture("mobile_sam_v2")
    det = fixture.index["everything"]["detector"]
    rgb = load_image(fixture.image_path)
    with torch.inference_mode():
        boxes, scores = parity_v2("tiny_vit").detector.detect(rgb, det["conf"], det["iou"], det["max_det"])
    tol = fixture.tolerance
    assert_allclose(scores, fixture.arrays["everything_scores"], tol["scores_atol"], "scores")
    assert_allclose(boxes, fixture.arrays["everything_boxes_xyxy"], tol["boxes_atol_px"], "boxes")


@pytest.mark.parametrize("encoder", ENCODERS)
def test_encoder_embeddings_match_the_official_encoders(encoder):
    fixture = require_fixture("mobile_sam_v2")
    features = predictor(encoder).features
    atol = fixture.index["tolerance_by_encoder"][encoder]["features_atol"]
    assert_allclose(features, fixture.arrays[fixture.index["features_by_encoder"][encoder]], atol, encoder)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_box_prompts_give_the_official_masks(encoder):
    fixture = require_fixture("mobile_sam_v2")
    case = fixture.case(f"b_box_{encoder}")
    masks, scores, logits = predictor(encoder).predict(box=case["box"], multimask_output=False)
    tol = {**fixture.tolerance, **fixture.index["tolerance_by_encoder"][encoder]}
    assert_allclose(logits, fixture.expected(case, "low_res_logits"), tol["low_res_logits_atol"], "logits")
    assert_allclose(scores, fixture.expected(case, "iou_predictions"), tol["iou_atol"], "iou")
    assert_masks_match(masks, fixture.expected(case, "masks"), tol["mask_mismatch_max_fraction"], "masks")


@pytest.mark.parametrize("encoder", ENCODERS)
def test_detector_boxes_decode_to_the_official_everything_masks(encoder):
    fixture = require_fixture("mobile_sam_v2")
    case = fixture.index["everything"][encoder]
    arrays, tol = case["arrays"], {**fixture.tolerance, **fixture.index["tolerance_by_encoder"][encoder]}
    boxes = fixture.arrays[case["boxes"]]
    masks, scores, logits = predictor(encoder).predict_batch(boxes=boxes, multimask_output=False)
    assert_allclose(
        logits[:2, 0], fixture.arrays[arrays["low_res_logits_first2"]], tol["low_res_logits_atol"], "lr"
    )
    assert_allclose(scores, fixture.arrays[arrays["iou_predictions"]], tol["iou_atol"], "iou")
    assert_masks_match(
        masks[:, 0], expected_masks(fixture, arrays), tol["mask_mismatch_max_fraction"], "masks"
    )


@pytest.mark.parametrize("encoder", ENCODERS)
def test_segment_everything_gives_one_unfiltered_mask_per_detector_box_largest_first(encoder):
    fixture = require_fixture("mobile_sam_v2")
    case, det = fixture.index["everything"][encoder], fixture.index["everything"]["detector"]
    records = litesam.MaskGenerator(parity_v2(encoder), conf=det["conf"]).generate(fixture.image_path)
    official = expected_masks(fixture, case["arrays"])
    boxes = fixture.arrays["everything_boxes_xyxy"]
    assert len(records) == len(official)
    areas = [r["area"] for r in records]
    assert areas == sorted(areas, reverse=True)
    for record in records:  # pair masks with boxes: near-tied scores may swap the box order
        centre = np.array(record["point_coords"][0])
        i = int(np.argmin(np.abs((boxes[:, :2] + boxes[:, 2:]) / 2 - centre).sum(1)))
        assert_masks_match(
            record["segmentation"], official[i], fixture.tolerance["mask_mismatch_max_fraction"], "mask"
        )
        assert record["det_score"] == pytest.approx(float(fixture.arrays["everything_scores"][i]), abs=1e-6)


def test_generator_filters_apply_when_asked():
    fixture = require_fixture("mobile_sam_v2")
    det = fixture.index["everything"]["detector"]
    model = parity_v2("tiny_vit")
    iou = fixture.arrays["everything_tiny_vit_iou_predictions"][:, 0]
    low = np.sort(iou)
    threshold = (
        float(low[2] + low[3]) / 2
    )  # between the third- and fourth-lowest IoU: float rounding cannot cross
    records = litesam.MaskGenerator(model, conf=det["conf"], pred_iou_thresh=threshold).generate(
        fixture.image_path
    )
    assert sorted(r["predicted_iou"] for r in records) == pytest.approx(
        sorted(iou[iou > threshold]), abs=1e-4
    )


def test_model_options_and_errors():
    assert litesam.get_spec("mobile_sam_v2").options == {"encoder": "efficientvit_l2", "box_batch": 320}
    with pytest.raises(
        litesam.InputError, match="encoder must be one of efficientvit_l2, tiny_vit, sam_vit_h"
    ):
        litesam.build_model("mobile_sam_v2", encoder="vit_b")
    with pytest.raises(CheckpointError, match="is not a folder"):
        litesam.build_model("mobile_sam_v2", checkpoint="missing_folder/")
    with pytest.raises(litesam.InputError, match="conf and iou"):
        litesam.MaskGenerator(litesam.build_model("mobile_sam_v2", encoder="tiny_vit"), conf=2.0)
