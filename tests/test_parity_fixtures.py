"""Official outputs on name-keyed weights (../shared/fixtures/parity) are reproduced through the Predictor.

Each model of PARITY_MODELS is built from the registry, its state_dict is filled by the fixtures' weight
rule (which works only because our keys are the official checkpoint's keys), and every prompt case of
its cases.json must give the official features, low-res logits, IoU predictions and masks.
"""

from __future__ import annotations

import pytest
from fixture_cases import Fixture, assert_allclose, assert_case_matches, fill_parity_weights, require_fixture

import litesam

PARITY_MODELS = ["sam_vit_b", "sam_vit_h"]
# ViT-H is ViT-B's code at another depth and width; its full run (100 s of random init and encoding on
# two cores) is a slow check, its keys and shapes are checked in every run
ENCODED = ["sam_vit_b", pytest.param("sam_vit_h", marks=pytest.mark.slow)]


@pytest.fixture(scope="module", params=ENCODED)
def parity_run(request) -> tuple[Fixture, litesam.Predictor]:
    fixture = require_fixture(request.param)
    predictor = litesam.Predictor(fill_parity_weights(litesam.build_model(request.param)))
    predictor.set_image(fixture.image_path)
    yield fixture, predictor
    predictor.reset_image()


@pytest.mark.parametrize("name", PARITY_MODELS)
def test_state_dict_has_the_official_keys_and_shapes(name):
    fixture = require_fixture(name)
    ours = {k: tuple(v.shape) for k, v in litesam.build_model(name).state_dict().items()}
    assert ours == fixture.official_state_dict_shapes


def test_image_embedding_matches_official(parity_run):
    fixture, predictor = parity_run
    assert predictor.original_size == tuple(fixture.index["original_size"])
    assert_allclose(
        predictor.get_image_embedding(), fixture.features, fixture.tolerance["features_atol"], "features"
    )


def test_every_prompt_case_matches_official(parity_run):
    fixture, predictor = parity_run
    for case in fixture.cases:
        assert_case_matches(predictor, fixture, case)
