"""EfficientSAM (ViT-Ti / ViT-S) reproduces the official yformer/EfficientSAM outputs.

The fixture ``efficient_sam_vitt`` holds the official ``EfficientSam`` outputs for ``picture1.jpg`` on
name-keyed weights: the encoder input patch, the image embedding and, per prompt, the 256x256 logits,
the IoU estimates and the bicubic-upsampled masks (``*_single`` cases: token 0, logits and IoUs only).
Prompts are given the litesam way (points, labels, a box in original pixels); the model must turn a box
into the official corner points with labels 2 / 3 and map everything into its 1024x1024 stretched frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fixture_cases import (
    Fixture,
    assert_allclose,
    assert_masks_match,
    fill_parity_weights,
    parity_weights,
    require_fixture,
    run_case,
)
from PIL import Image

import litesam
from litesam.checkpoint import load_into
from litesam.modeling.efficient_sam import EfficientSam
from litesam.prompts import Prompts

FIXTURE = "efficient_sam_vitt"
CASES = ["a_point", "b_box", "b_box_single", "c_two_points", "d_box_point", "d_box_point_single"]
# Official parameter counts (EfficientSam.parameters(), buffers excluded).
NUM_PARAMS = {"efficient_sam_vitt": 10_223_204, "efficient_sam_vits": 26_413_028}
# ViT-S differs from ViT-Ti only in the encoder width: 192 -> 384 (qkv 576 -> 1152, mlp 768 -> 1536).
VITS_WIDTHS = {192: 384, 576: 1152, 768: 1536}


@pytest.fixture(scope="module")
def fixture() -> Fixture:
    return require_fixture(FIXTURE)


@pytest.fixture(scope="module")
def model(fixture: Fixture) -> EfficientSam:
    return fill_parity_weights(litesam.build_model(FIXTURE))


@pytest.fixture(scope="module")
def predictor(model: EfficientSam, fixture: Fixture) -> litesam.Predictor:
    predictor = litesam.Predictor(model)
    predictor.set_image(fixture.image_path)
    return predictor


def official_shapes(fixture: Fixture, name: str) -> dict[str, tuple[int, ...]]:
    """Official state_dict key -> shape for ``name``; ViT-S's is ViT-Ti's with the encoder widened."""
    shapes = fixture.official_state_dict_shapes
    if name == "efficient_sam_vits":
        shapes = {
            k: tuple(VITS_WIDTHS.get(d, d) for d in s) if k.startswith("image_encoder.") else s
            for k, s in shapes.items()
        }
    return shapes


def official_input(model: EfficientSam, fixture: Fixture) -> torch.Tensor:
    """The fixture image through ``model.transform``: 1x3x1024x1024."""
    return model.transform.to_input(np.array(Image.open(fixture.image_path).convert("RGB")))


def check_case(fixture: Fixture, case: dict[str, Any], low_res: Any, iou: Any, masks: Any) -> None:
    """Logits and IoUs within the fixture's tolerances; masks too where the fixture stores them."""
    tol, name = fixture.tolerance, case["name"]
    assert_allclose(low_res, fixture.expected(case, "low_res_logits"), tol["low_res_logits_atol"], name)
    assert_allclose(iou, fixture.expected(case, "iou_predictions"), tol["iou_atol"], name)
    expected_masks = fixture.expected(case, "masks")
    if expected_masks is not None:
        assert_masks_match(masks, expected_masks, tol["mask_mismatch_max_fraction"], name)


def test_fixture_lists_the_cases_tested_here(fixture: Fixture) -> None:
    assert [c["name"] for c in fixture.cases] == CASES


# ------------------------------------------------------------------------------------ checkpoint layout


@pytest.mark.parametrize("name", ["efficient_sam_vitt", "efficient_sam_vits"])
def test_state_dict_is_the_official_layout(fixture: Fixture, name: str) -> None:
    model = litesam.build_model(name)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == official_shapes(fixture, name)
    assert sum(p.numel() for p in model.parameters()) == NUM_PARAMS[name]


def test_official_checkpoint_file_loads_strictly(tmp_path: Path) -> None:
    """The official file is ``{"model": state_dict}``; build_model unwraps it and loads it strictly."""
    state = parity_weights().fill_state_dict(litesam.build_model(FIXTURE).state_dict())
    path = tmp_path / "efficient_sam_vitt.pt"
    torch.save({"model": state}, path)
    loaded = litesam.build_model(FIXTURE, checkpoint=path).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


@pytest.fixture(scope="module")
def vits(fixture: Fixture) -> EfficientSam:
    """ViT-S with its official key set filled by the weight rule (strict load)."""
    model = litesam.build_model("efficient_sam_vits")
    rule = parity_weights()
    state = {
        k: torch.from_numpy(rule.tensor_for(k, s))
        for k, s in official_shapes(fixture, "efficient_sam_vits").items()
    }
    load_into(model, state, "efficient_sam_vits", "weight rule")
    return model


def test_vits_decodes_from_its_official_weights(vits: EfficientSam, fixture: Fixture) -> None:
    with torch.inference_mode():
        features = {"image_embeddings": torch.from_numpy(fixture.features)}
        low_res, iou = vits.decode(features, Prompts(boxes=torch.tensor([[100.0, 200, 600, 700]])))
    assert low_res.shape == (1, 3, 256, 256) and iou.shape == (1, 3)
    assert torch.isfinite(low_res).all() and torch.isfinite(iou).all()


@pytest.mark.slow
def test_vits_encodes_an_image(vits: EfficientSam, fixture: Fixture) -> None:
    with torch.inference_mode():
        embedding = vits.image_encoder(official_input(vits, fixture))
    assert embedding.shape == (1, 256, 64, 64) and torch.isfinite(embedding).all()


# ---------------------------------------------------------------------------------------------- parity


def test_preprocess_stretches_the_image_like_the_official_model(
    model: EfficientSam, fixture: Fixture
) -> None:
    with torch.inference_mode():
        x = official_input(model, fixture)
    assert x.shape == (1, 3, 1024, 1024)
    assert_allclose(x[0, :, 248:264, 248:264], fixture.arrays["input_patch"], 1e-6, "input patch")


@pytest.mark.parametrize("name", CASES)
def test_decode_matches_official(model: EfficientSam, fixture: Fixture, name: str) -> None:
    """The model alone on the official embedding, prompts mapped by ``model.transform``."""
    case = fixture.case(name)
    size = tuple(fixture.index["original_size"])

    prompts = Prompts.single(case["point_coords"], case["point_labels"], case["box"])
    with torch.inference_mode():
        features = {"image_embeddings": torch.from_numpy(fixture.features)}
        frame = model.transform.apply_prompts(prompts, size)
        low_res, iou = model.decode(features, frame, case["multimask_output"])
        masks = model.transform.postprocess_masks(low_res, size) > model.mask_threshold
    check_case(fixture, case, low_res[0], iou[0], masks[0])


def test_image_embedding_matches_official(predictor: litesam.Predictor, fixture: Fixture) -> None:
    assert predictor.original_size == tuple(fixture.index["original_size"])
    assert predictor.input_size == (1024, 1024)  # stretched: the image covers the whole encoder input
    features = predictor.get_image_embedding()
    assert_allclose(features, fixture.features, fixture.tolerance["features_atol"], "features")


@pytest.mark.parametrize("name", CASES)
def test_predictor_matches_official(predictor: litesam.Predictor, fixture: Fixture, name: str) -> None:
    case = fixture.case(name)
    masks, iou, low_res = run_case(fixture, predictor, case)
    check_case(fixture, case, low_res, iou, masks)


def test_predict_batch_matches_single_prompts(predictor: litesam.Predictor, fixture: Fixture) -> None:
    """Two box prompts decoded together each give the official single-mask box result."""
    case = fixture.case("b_box_single")
    masks, iou, low_res = predictor.predict_batch(boxes=np.array([case["box"]] * 2), multimask_output=False)
    assert masks.shape == (2, 1, *fixture.index["original_size"])
    for k in range(2):
        check_case(fixture, case, low_res[k], iou[k], None)


# ---------------------------------------------------------------------------------------- prompt rules


def test_box_becomes_corner_points_before_the_points(model: EfficientSam) -> None:
    """Official prompt layout: corners (labels 2, 3), then points, padded to 6 with (-1, -1) / -1;
    negative coordinates become -1."""
    coords, labels = model.prompt_points(
        Prompts(
            points=torch.tensor([[[5.0, 6.0], [-3.0, 7.0]]]),
            labels=torch.tensor([[1, 0]]),
            boxes=torch.tensor([[1.0, 2.0, 3.0, 4.0]]),
        )
    )
    assert labels.tolist() == [[2, 3, 1, 0, -1, -1]]
    assert coords.tolist() == [[[1, 2], [3, 4], [5, 6], [-1, 7], [-1, -1], [-1, -1]]]


def test_more_than_six_points_are_truncated_like_the_official_model(model: EfficientSam) -> None:
    coords, labels = model.prompt_points(
        Prompts(points=torch.arange(16.0).view(1, 8, 2), labels=torch.ones(1, 8, dtype=torch.int))
    )
    assert coords.shape == (1, 6, 2) and labels.tolist() == [[1] * 6]
    assert coords[0, -1].tolist() == [10, 11]


def test_mask_prompt_is_rejected(model: EfficientSam, fixture: Fixture) -> None:
    prompts = Prompts(
        points=torch.tensor([[[300.0, 300.0]]]), labels=torch.tensor([[1]]), mask=torch.zeros(1, 1, 256, 256)
    )
    with pytest.raises(ValueError, match="mask prompt"):
        model.decode({"image_embeddings": torch.from_numpy(fixture.features)}, prompts)
