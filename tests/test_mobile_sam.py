"""MobileSAM (TinyViT-5M encoder) reproduces the official ChaoningZhang/MobileSAM outputs.

Two oracles, both on the fixtures' name-keyed weights: the stored parity fixture ``mobile_sam`` (official
``build_sam_vit_t`` + ``SamPredictor``) and the PyPI ``mobile_sam`` package (the same code) run live.
"""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import pytest
import torch
from fixture_cases import (
    Fixture,
    assert_allclose,
    assert_case_matches,
    case_names,
    fill_parity_weights,
    official_encoder_shapes,
    predictor_for,
    require_fixture,
    state_dict_shapes,
)
from PIL import Image
from torch import nn

import litesam
from litesam.modeling.common import ConvBN
from litesam.modeling.fuse import fuse_modules
from litesam.modeling.tiny_vit import DropPath, MBConv, TinyViT, TinyViTBlock
from litesam.utils.transforms import ImageTransform
from litesam.zoo.mobile_sam import mobile_sam_encoder

MODEL = "mobile_sam"


def encoder_input(fixture: Fixture) -> torch.Tensor:
    """1x3x1024x1024 encoder input as meta.json describes it (resize checked by SHA-256, then the sum)."""
    pre = fixture.meta["preprocessing"]
    image = np.asarray(Image.open(fixture.image_path).convert("RGB"))
    transform = ImageTransform(1024)
    assert hashlib.sha256(transform.resize_image(image).tobytes()).hexdigest() == pre["resized_uint8_sha256"]
    x = transform.to_input(image)
    assert x.double().sum().item() == pytest.approx(pre["encoder_input_stats"]["sum_float64"], rel=1e-9)
    return x


def random_image(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=dtype)


@pytest.fixture(scope="module")
def encoder() -> TinyViT:
    """MobileSAM's encoder with parity weights, eval mode (shared, never modified in place)."""
    return fill_parity_weights(mobile_sam_encoder(), "image_encoder.")


# ------------------------------------------------------------------------------------ checkpoint layout


def test_encoder_has_every_official_key_with_its_shape():
    """Strict loading of the official checkpoint: same keys (incl. the unused head) and shapes."""
    fixture = require_fixture(MODEL)
    assert state_dict_shapes(mobile_sam_encoder()) == official_encoder_shapes(fixture)


def test_registry_model_has_exactly_the_official_state_dict():
    fixture = require_fixture(MODEL)
    assert state_dict_shapes(litesam.build_model(MODEL)) == fixture.official_state_dict_shapes


# --------------------------------------------------------------------------------------------- numbers


def test_encoder_reproduces_official_features_unfused_and_fused(encoder):
    fixture = require_fixture(MODEL)
    x = encoder_input(fixture)
    atol = fixture.tolerance["features_atol"]
    with torch.no_grad():
        assert_allclose(encoder(x), fixture.features, atol, "features")
        assert_allclose(fuse_modules(copy.deepcopy(encoder))(x), fixture.features, atol, "fused features")


def test_encoder_matches_the_live_official_tinyvit(encoder, official_mobile_sam):
    from mobile_sam.build_sam import build_sam_vit_t

    official = fill_parity_weights(build_sam_vit_t().image_encoder, "image_encoder.")
    x = random_image(1, 3, 1024, 1024)
    with torch.no_grad():
        expected = official(x)
        assert_allclose(encoder(x), expected.numpy(), 1e-4, "ours vs official TinyViT")


def test_fuse_folds_every_batchnorm_and_computes_the_same_function():
    """Checked in float64 (batch of 2, small input), so only the algebra of the folding is tested."""
    model = fill_parity_weights(mobile_sam_encoder(), "image_encoder.").double()
    x = random_image(2, 3, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        reference = model(x)
        fused = fuse_modules(model)
        out = fused(x)
    assert fused is model
    assert not any(isinstance(m, (nn.BatchNorm2d, ConvBN)) for m in fused.modules())
    assert_allclose(out, reference.numpy(), 1e-9, "fused vs unfused (float64)")


def test_output_is_256_channels_at_stride_16_for_any_multiple_of_32():
    model = mobile_sam_encoder().eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 256, 384))
    assert out.shape == (1, 256, 16, 24)
    assert out.is_contiguous()


def test_attention_biases_loaded_after_eval_are_used():
    """The official model caches its attention bias table in eval(); ours never goes stale."""
    x = random_image(1, 3, 128, 128)
    late = mobile_sam_encoder().eval()
    late.load_state_dict(fill_parity_weights(mobile_sam_encoder(), "image_encoder.").state_dict())
    fresh = fill_parity_weights(mobile_sam_encoder(), "image_encoder.")
    with torch.no_grad():
        assert torch.equal(late(x), fresh(x))


# ------------------------------------------------------------------------------------ training support


def test_drop_path_drops_whole_samples_and_keeps_the_expectation():
    drop = DropPath(0.25).train()
    torch.manual_seed(0)
    out = drop(torch.ones(4000, 3, 2))
    per_sample = out.flatten(1)
    assert torch.all((per_sample == 0).all(1) | (per_sample == 1 / 0.75).all(1))
    assert out.mean().item() == pytest.approx(1.0, abs=0.03)
    x = torch.randn(8, 5)
    assert torch.equal(drop.eval()(x), x)


def test_stochastic_depth_rises_linearly_over_the_blocks():
    model = mobile_sam_encoder(drop_path_rate=0.11)
    blocks = [m for m in model.modules() if isinstance(m, (MBConv, TinyViTBlock))]
    rates = [b.drop_path.p for b in blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.11, 12).tolist())


def test_training_step_reaches_attention_biases_and_batchnorm():
    model = mobile_sam_encoder(drop_path_rate=0.1).train()
    model(random_image(2, 3, 128, 128)).square().mean().backward()
    attn = model.layers[2].blocks[0].attn
    assert attn.attention_biases.grad is not None and attn.attention_biases.grad.abs().sum() > 0
    assert model.patch_embed.seq[0].bn.num_batches_tracked.item() == 1
    assert model.head.weight.grad is None  # the classification head is not part of the encoder


# ------------------------------------------------------------------------------ predictor, every case


@pytest.fixture(scope="module")
def mobile_sam_predictor() -> litesam.Predictor:
    return predictor_for(require_fixture(MODEL), MODEL)


def test_predictor_reproduces_official_features(mobile_sam_predictor):
    fixture = require_fixture(MODEL)
    assert mobile_sam_predictor.original_size == tuple(fixture.index["original_size"])
    tol = fixture.tolerance["features_atol"]
    assert_allclose(mobile_sam_predictor.features, fixture.features, tol, "features")


@pytest.mark.parametrize("case_name", case_names(MODEL))
def test_predictor_reproduces_official_case(mobile_sam_predictor, case_name):
    fixture = require_fixture(MODEL)
    assert_case_matches(mobile_sam_predictor, fixture, fixture.case(case_name))
