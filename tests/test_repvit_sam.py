"""RepViT-SAM reproduces the official THU-MIG/RepViT outputs (parity fixture ``repvit_sam``).

The helpers here are shared with ``test_edge_sam.py`` (same backbone family, same fixture layout).
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
from torch import nn

import litesam
from litesam.modeling.fuse import fuse_modules, merge_parallel_convs
from litesam.modeling.repvit import RepDWConv, RepViTSamEncoder

# ---------------------------------------------------------------------------------------------- helpers


def assert_fuse_is_exact(encoder: nn.Module, size: int = 128) -> None:
    """``fuse_modules(encoder)`` leaves no BatchNorm or multi-branch block and computes the same function.

    Checked in float64 on a random 1x3xSxS input so only the algebra of the folding is tested, not
    float32 rounding (parity weights blow activations up to ~1e16 before the neck's LayerNorm).
    """
    fill_parity_weights(encoder, "image_encoder.").double()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        reference = encoder(x)
        modules_before = len(list(encoder.modules()))
        fused = fuse_modules(encoder)
        out = fused(x)
    assert fused is encoder
    assert not any(isinstance(m, (nn.BatchNorm2d, RepDWConv)) for m in fused.modules())
    assert len(list(fused.modules())) < modules_before
    assert_allclose(out, reference.numpy(), 1e-9, "fused vs unfused (float64)")


# ------------------------------------------------------------------------------------------------ tests


def test_encoder_has_every_official_key_with_its_shape():
    fixture = require_fixture("repvit_sam")
    assert state_dict_shapes(RepViTSamEncoder()) == official_encoder_shapes(fixture)


def test_registry_model_has_exactly_the_official_state_dict():
    fixture = require_fixture("repvit_sam")
    assert state_dict_shapes(litesam.build_model("repvit_sam")) == fixture.official_state_dict_shapes


def test_encoder_reproduces_official_features_unfused_and_fused():
    fixture = require_fixture("repvit_sam")
    encoder = fill_parity_weights(RepViTSamEncoder(), "image_encoder.")
    x = encoder_input(fixture)
    with torch.no_grad():
        features = encoder(x)
        assert_allclose(features, fixture.features, fixture.tolerance["features_atol"], "features")
        fused = fuse_modules(encoder)(x)
    assert_allclose(fused, fixture.features, fixture.tolerance["features_atol"], "fused features")


def test_fuse_folds_every_batchnorm_and_branch_exactly():
    assert_fuse_is_exact(RepViTSamEncoder())


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_merge_parallel_convs_sums_branches_and_identity(groups):
    """The RepVGG merge used by :class:`RepDWConv`, also for dense and grouped convs (fuse.py API)."""
    torch.manual_seed(0)
    big = nn.Conv2d(6, 6, 3, padding=1, groups=groups)
    small = nn.Conv2d(6, 6, 1, groups=groups, bias=False)
    x = torch.randn(2, 6, 9, 9)
    with torch.no_grad():
        merged = merge_parallel_convs([big, small], identity=True)
        assert_allclose(merged(x), (big(x) + small(x) + x).numpy(), 1e-5, "merged conv")


def test_output_stride_is_16_with_256_channels():
    encoder = RepViTSamEncoder().eval()
    with torch.no_grad():
        assert encoder(torch.zeros(1, 3, 256, 256)).shape == (1, 256, 16, 16)


@pytest.fixture(scope="module")
def repvit_predictor() -> litesam.Predictor:
    fixture = require_fixture("repvit_sam")
    return predictor_for(fixture, "repvit_sam")


def test_predictor_reproduces_official_features(repvit_predictor):
    fixture = require_fixture("repvit_sam")
    tol = fixture.tolerance["features_atol"]
    assert_allclose(repvit_predictor.features, fixture.features, tol, "features")


@pytest.mark.parametrize("case_name", case_names("repvit_sam"))
def test_predictor_reproduces_official_case(repvit_predictor, case_name):
    fixture = require_fixture("repvit_sam")
    assert_case_matches(repvit_predictor, fixture, fixture.case(case_name))
