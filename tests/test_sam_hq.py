"""SAM-HQ and Light HQ-SAM reproduce the official sam-hq outputs (../shared/fixtures/parity/sam_hq_*).

Each model is built from the registry and filled by the fixtures' weight rule; its encoder's named
features, the HQ features and every prompt case (with and without ``hq_token_only``, a model option)
must match the official run. The official-layout file (the released key set) loads strictly through
``build_model(checkpoint=...)`` and gives the same masks after fusing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixture_cases import (
    Fixture,
    assert_allclose,
    assert_case_matches,
    fill_parity_weights,
    parity_weights,
    require_fixture,
)

import litesam

HQ_MODELS = ["sam_hq_vit_b", "sam_hq_vit_tiny"]


@pytest.fixture(scope="module", params=HQ_MODELS)
def hq_run(request) -> tuple[Fixture, litesam.Predictor, litesam.Predictor]:
    """(fixture, predictor, predictor of the same weights with hq_token_only=True), image set."""
    fixture = require_fixture(request.param)
    predictor = litesam.Predictor(fill_parity_weights(litesam.build_model(request.param)))
    predictor.set_image(fixture.image_path)
    hq_only = litesam.Predictor(fill_parity_weights(litesam.build_model(request.param, hq_token_only=True)))
    hq_only.state = predictor.state  # same encoder weights: the image is encoded once
    yield fixture, predictor, hq_only


def test_state_dict_has_the_official_keys_and_shapes(hq_run):
    fixture, predictor, _ = hq_run
    ours = {k: tuple(v.shape) for k, v in predictor.model.state_dict().items()}
    assert ours == fixture.official_state_dict_shapes


def test_encoder_features_match_official(hq_run):
    """The image embedding, and the intermediate features the HQ decoder reads (first global-attention
    block of the ViT / TinyViT's second stage), probed on a 4x4 grid of the 64x64 map."""
    fixture, predictor, _ = hq_run
    features = predictor.state.features
    tol = fixture.tolerance["features_atol"]
    assert_allclose(predictor.get_image_embedding(), fixture.features, tol, "features")
    probe = features["interm_embeddings"][0, :, ::16, ::16].permute(1, 2, 0)
    expected = fixture.arrays["interm_embedding_probe"]
    assert_allclose(probe, expected, 1e-4 * np.abs(expected).max(), "interm_embeddings")


def test_hq_features_match_official(hq_run):
    fixture, predictor, _ = hq_run
    with torch.no_grad():
        hq = predictor.model.mask_decoder.hq_features(predictor.state.features)
    expected = fixture.arrays["hq_features_probe"]
    assert_allclose(hq[0, :, ::32, ::32], expected, 1e-4 * np.abs(expected).max(), "hq_features")


def test_every_prompt_case_matches_official(hq_run):
    """One mask per prompt set, also with multimask_output (the best-scored SAM mask + the HQ mask)."""
    fixture, predictor, hq_only = hq_run
    for case in fixture.cases:
        assert_case_matches(hq_only if case["hq_token_only"] else predictor, fixture, case)


def test_hq_token_only_is_a_model_option():
    spec = litesam.get_spec("sam_hq_vit_tiny")
    assert spec.options == {"hq_token_only": False}
    assert litesam.build_model("sam_hq_vit_tiny", hq_token_only=True).mask_decoder.hq_token_only


def test_official_layout_file_loads_strictly_and_fuses(tmp_path):
    """The released sam_hq_vit_tiny.pth holds exactly the model's keys (Grounded-SAM loads it with
    strict=True): a file of that layout goes through the real loader, BatchNorms folded."""
    fixture = require_fixture("sam_hq_vit_tiny")
    shapes = fixture.official_state_dict_shapes
    state = parity_weights().fill_state_dict(
        {
            k: torch.zeros(s, dtype=torch.long if k.endswith("num_batches_tracked") else torch.float32)
            for k, s in shapes.items()
        }
    )
    path = tmp_path / "sam_hq_vit_tiny.pth"
    torch.save(state, path)
    predictor = litesam.Predictor(litesam.build_model("sam_hq_vit_tiny", checkpoint=path))
    predictor.set_image(fixture.image_path)
    assert_allclose(
        predictor.get_image_embedding(), fixture.features, fixture.tolerance["features_atol"], "features"
    )
    for name in ("a_point", "f_batched_boxes"):
        assert_case_matches(predictor, fixture, fixture.case(name))
