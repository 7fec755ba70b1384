"""Official outputs on name-keyed weights (../shared/fixtures/parity) are reproduced through the Predictor.

Each model of PARITY_MODELS is built from the registry, its state_dict is filled by the fixtures' weight
rule (which works only because our keys are the official checkpoint's keys), and every prompt case of
its cases.json must give the official features, low-res logits, IoU predictions and masks.
"""

from __future__ import annotations

import numpy as np
import pytest
from fixture_cases import Fixture, assert_allclose, assert_masks_match, fill_parity_weights, require_fixture

import litesam

PARITY_MODELS = ["sam_vit_b", "sam_vit_h"]


@pytest.fixture(scope="module", params=PARITY_MODELS)
def parity_run(request) -> tuple[Fixture, litesam.Predictor]:
    fixture = require_fixture(request.param)
    predictor = litesam.Predictor(fill_parity_weights(litesam.build_model(request.param)))
    predictor.set_image(fixture.image_path)
    yield fixture, predictor
    predictor.reset_image()


def run_case(fixture: Fixture, predictor: litesam.Predictor, case: dict) -> tuple[np.ndarray, ...]:
    """Call the predictor as the fixture's official call did: (masks, iou_predictions, low_res_logits)."""
    mask_input = None
    if case["mask_input"] is not None:
        source = fixture.case(case["mask_input"]["from_case"])
        mask_input = fixture.expected(source, "low_res_logits")[case["mask_input"]["index"]][None]
    box = case["box"]
    if box is not None and np.ndim(box) == 2:  # batched boxes: predict_torch in the official run
        return predictor.predict_batch(boxes=box, multimask_output=case["multimask_output"])
    return predictor.predict(
        point_coords=case["point_coords"],
        point_labels=case["point_labels"],
        box=box,
        mask_input=mask_input,
        multimask_output=case["multimask_output"],
    )


def test_state_dict_has_the_official_keys_and_shapes(parity_run):
    fixture, predictor = parity_run
    ours = {k: tuple(v.shape) for k, v in predictor.model.state_dict().items()}
    assert ours == fixture.official_state_dict_shapes


def test_image_embedding_matches_official(parity_run):
    fixture, predictor = parity_run
    assert predictor.original_size == tuple(fixture.index["original_size"])
    assert_allclose(
        predictor.get_image_embedding(), fixture.features, fixture.tolerance["features_atol"], "features"
    )


def test_every_prompt_case_matches_official(parity_run):
    fixture, predictor = parity_run
    tol = fixture.tolerance
    for case in fixture.cases:
        masks, scores, logits = run_case(fixture, predictor, case)
        name = f"{fixture.model}/{case['name']}"
        assert_allclose(
            logits, fixture.expected(case, "low_res_logits"), tol["low_res_logits_atol"], name + " logits"
        )
        assert_allclose(scores, fixture.expected(case, "iou_predictions"), tol["iou_atol"], name + " iou")
        assert_masks_match(
            masks, fixture.expected(case, "masks"), tol["mask_mismatch_max_fraction"], name + " masks"
        )
