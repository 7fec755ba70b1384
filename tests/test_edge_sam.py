"""EdgeSAM reproduces the official chongzhou96/EdgeSAM outputs (parity fixture ``edge_sam``).

EdgeSAM-3x is another checkpoint of the same build, so the fixture covers both registry names.
"""

from __future__ import annotations

import pytest
import torch
from fixture_cases import (
    assert_allclose,
    assert_case_matches,
    case_names,
    encoder_input,
    fill_parity_weights,
    official_encoder_shapes,
    predictor_for,
    require_fixture,
    state_dict_shapes,
)
from test_repvit_sam import assert_fuse_is_exact

import litesam
from litesam.modeling.edge_sam import EdgeSam, EdgeSamEncoder
from litesam.modeling.fuse import fuse_modules
from litesam.utils.masks import stability_score


def test_encoder_has_every_official_key_with_its_shape():
    fixture = require_fixture("edge_sam")
    assert state_dict_shapes(EdgeSamEncoder()) == official_encoder_shapes(fixture)


@pytest.mark.parametrize("name", ["edge_sam", "edge_sam_3x"])
def test_registry_models_have_exactly_the_official_state_dict(name):
    fixture = require_fixture("edge_sam")
    model = litesam.build_model(name)
    assert isinstance(model, EdgeSam)
    assert state_dict_shapes(model) == fixture.official_state_dict_shapes


def test_encoder_reproduces_official_features_unfused_and_fused():
    fixture = require_fixture("edge_sam")
    encoder = fill_parity_weights(EdgeSamEncoder(), "image_encoder.")
    x = encoder_input(fixture)
    with torch.no_grad():
        features = encoder(x)
        assert_allclose(features, fixture.features, fixture.tolerance["features_atol"], "features")
        fused = fuse_modules(encoder)(x)
    assert_allclose(fused, fixture.features, fixture.tolerance["features_atol"], "fused features")


def test_fuse_folds_every_batchnorm_and_branch_exactly():
    assert_fuse_is_exact(EdgeSamEncoder())


def test_stability_score_is_the_iou_of_the_two_thresholded_masks():
    logits = torch.tensor([[[[-2.0, -0.5], [0.5, 2.0]], [[-2.0, -2.0], [-2.0, 3.0]]]])  # 1x2x2x2
    assert stability_score(logits, 0.0, 1.0).tolist() == [[pytest.approx(1 / 3), 1.0]]


@pytest.fixture(scope="module")
def edge_predictor() -> litesam.Predictor:
    fixture = require_fixture("edge_sam")
    return predictor_for(fixture, "edge_sam")


def test_predictor_reproduces_official_features(edge_predictor):
    fixture = require_fixture("edge_sam")
    tol = fixture.tolerance["features_atol"]
    assert_allclose(edge_predictor.features, fixture.features, tol, "features")


@pytest.mark.parametrize("case_name", case_names("edge_sam"))
def test_predictor_reproduces_official_case(edge_predictor, case_name):
    """Cases with 4 masks were made with ``num_multimask_outputs=4, use_stability_score=True`` (meta.json)."""
    fixture = require_fixture("edge_sam")
    official_call = next(c for c in fixture.meta["prompt_cases"] if c["name"] == case_name)
    options = {
        "stability_scores": official_call["use_stability_score"],
        "multimask_outputs": 4 if official_call["num_multimask_outputs"] == 4 else 3,
    }
    predictor = edge_predictor
    if options != litesam.get_spec("edge_sam").options:  # options are the model's: same weights, other model
        model = litesam.build_model("edge_sam", **options)
        model.load_state_dict(edge_predictor.model.state_dict())
        predictor = litesam.Predictor(model)
        predictor.state = edge_predictor.state  # same encoder, so the same image state
    assert_case_matches(predictor, fixture, fixture.case(case_name))
