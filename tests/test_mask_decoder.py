"""SAM's mask decoder: the fast upscaling equals the reference, the reference exports to ONNX, and the
extension hooks carry an extra output token (SAM-HQ's shape) without disturbing SAM's outputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import torch
from helpers import tiny_sam
from test_live_official_sam import randomize
from torch import nn

from litesam.build import prepare_for_inference
from litesam.modeling import MaskDecoder, TwoWayTransformer
from litesam.modeling.common import MLP
from litesam.modeling.transformer import Attention

DIM, SIDE, POINTS = 32, 8, 3  # a 32-wide decoder on an 8x8 embedding (32x32 masks), 3 prompt tokens
MULTIMASK, SINGLE = slice(1, None), slice(0, 1)


class ExtraTokenDecoder(MaskDecoder):
    """SAM-HQ's extension in miniature: one more output token with its own hypernetwork MLP, whose mask
    (from the image tokens plus an intermediate encoder feature) is added to every returned SAM mask."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.extra_token = nn.Embedding(1, self.transformer_dim)
        self.extra_mlp = MLP(self.transformer_dim, self.transformer_dim, self.transformer_dim // 8, 3)

    def output_tokens(self) -> torch.Tensor:
        return torch.cat([super().output_tokens(), self.extra_token.weight])

    def heads(
        self, tokens: torch.Tensor, image: torch.Tensor, features: Mapping[str, Any] | None, keep: slice
    ) -> tuple[torch.Tensor, torch.Tensor]:
        masks, iou = super().heads(tokens, image, features, keep)
        interm = features["interm_embeddings"][0].permute(0, 2, 3, 1)  # 1xCxHxW -> 1xHxWxC
        extra = self.upscale_masks(image + interm, self.extra_mlp(tokens[:, -1])[:, None])
        return masks + extra, iou


def decoder(cls: type[MaskDecoder] = MaskDecoder, depth: int = 2, seed: int = 0) -> MaskDecoder:
    """A randomly weighted ``cls`` (no two-way layers when ``depth`` is 0), eval mode."""
    transformer = TwoWayTransformer(depth=depth, embedding_dim=DIM, mlp_dim=64, num_heads=2)
    model = cls(transformer_dim=DIM, transformer=transformer, iou_head_hidden_dim=DIM)
    randomize(model, seed)
    return model.eval()


def prompts(
    batch: int, image_batch: int = 1, dtype: torch.dtype = torch.float32, dim: int = DIM
) -> tuple[torch.Tensor, ...]:
    """Random (image_embeddings, image_pe, sparse, dense) for ``batch`` prompt sets of POINTS tokens."""
    gen = torch.Generator().manual_seed(batch)
    shapes = [
        (image_batch, dim, SIDE, SIDE),
        (1, dim, SIDE, SIDE),
        (batch, POINTS, dim),
        (1, dim, SIDE, SIDE),
    ]
    return tuple(torch.randn(shape, generator=gen, dtype=dtype) for shape in shapes)


def interm_features(dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """The encoder outputs an HQ-style decoder reads: one intermediate feature map, 1xCxHxW."""
    gen = torch.Generator().manual_seed(7)
    return {"interm_embeddings": [torch.randn(1, DIM, SIDE, SIDE, generator=gen, dtype=dtype)]}


# -------------------------------------------------------------------------------- upscaling paths


@pytest.mark.parametrize("keep", [MULTIMASK, SINGLE], ids=["3 masks", "1 mask"])
@pytest.mark.parametrize(
    ("batch", "image_batch"), [(1, 1), (5, 1), (5, 5)], ids=["1 prompt", "5 prompts", "5 images"]
)
def test_fast_upscaling_equals_the_reference(batch, image_batch, keep):
    """Checked in float64 with 2 prompts per fast chunk, so 5 prompts span three chunks, the last partial."""
    model = decoder().double()
    model.upscale_chunk = 2
    inputs = prompts(batch, image_batch, torch.float64)
    with torch.no_grad():
        reference = model.predict_masks(*inputs, keep)
        model.fast_upscaling = True
        fast = model.predict_masks(*inputs, keep)
    masks, iou = reference
    kept = len(range(4)[keep])
    assert masks.shape == (batch, kept, 4 * SIDE, 4 * SIDE) and iou.shape == (batch, kept)
    assert masks.abs().max() > 0.1
    torch.testing.assert_close(fast, reference, rtol=1e-12, atol=1e-12)


def test_prepare_for_inference_switches_the_decoder_to_fast_upscaling():
    model = tiny_sam()  # as build_model gives it without a checkpoint: the reference path
    assert not model.mask_decoder.fast_upscaling
    inputs = prompts(4, dim=256)
    with torch.no_grad():
        reference = model.mask_decoder.predict_masks(*inputs)
        prepare_for_inference(model)
        fast = model.mask_decoder.predict_masks(*inputs)
    assert model.mask_decoder.fast_upscaling
    torch.testing.assert_close(fast, reference)


@pytest.mark.parametrize("memo", [None, {}], ids=["once", "kept"])
@pytest.mark.parametrize(
    ("queries", "keys"),
    [
        ((5, 7), (1, 64)),
        ((5, 7), (5, 64)),
        ((1, 64), (5, 7)),
        ((5, 64), (5, 7)),
        ((1, 7), (1, 64)),
        ((2, 7), (1, 64)),
        ((1, 64), (1, 7)),
        ((1, 64), (2, 7)),
    ],
    ids=[
        "tokens->shared image",
        "tokens->per-prompt image",
        "shared image->tokens",
        "image->tokens",
        "one prompt->image",
        "two prompts->shared image",
        "image->one prompt",
        "shared image->two prompts",
    ],
)
def test_reassociated_attention_equals_the_projected_one(queries, keys, memo):
    """(batch, tokens) of each side; 8 heads of width 16 meeting 7 tokens fold into 56 < 128 columns. A
    shared image side is projected (kept in the memo when one is given) or, for one or two prompts
    without a memo, folded like a per-prompt one."""
    attention = Attention(256, num_heads=8, downsample_rate=2).double()
    randomize(attention, seed=1)
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(*queries, 256, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(*keys, 256, generator=gen, dtype=torch.float64) for _ in range(2))
    with torch.no_grad():
        reference = attention(q, k, v)
        attention.reassociate = True
        folded = attention(q, k, v, memo)
        again = attention(q, k, v, memo)
    assert folded.shape == (max(queries[0], keys[0]), queries[1], 256)
    torch.testing.assert_close(folded, reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(again, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk", [1, 2])
@pytest.mark.parametrize("fast", [False, True], ids=["reference", "prepared"])
def test_decoding_in_prompt_chunks_equals_one_batch(chunk, fast):
    """SAM's 256-wide decoder in float64; chunks of 1 and 2 over 5 prompts (the image side is computed
    by the first chunk and reused by the others)."""
    model = tiny_sam().double()
    if fast:
        prepare_for_inference(model)
    inputs = prompts(5, dtype=torch.float64, dim=256)
    with torch.no_grad():
        whole = model.mask_decoder.predict_masks(*inputs, MULTIMASK)
        model.mask_decoder.prompt_chunk = chunk
        chunked = model.mask_decoder.predict_masks(*inputs, MULTIMASK)
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)  # BLAS blocking may differ


@pytest.mark.parametrize("extra", [False, True], ids=["SAM", "extra token"])
def test_min_score_skips_exactly_the_prompts_with_no_mask_above_it(extra):
    model = decoder(ExtraTokenDecoder if extra else MaskDecoder).double()
    inputs, features = prompts(6, dtype=torch.float64), interm_features(torch.float64)
    keep = SINGLE if extra else MULTIMASK
    with torch.no_grad():
        masks, scores = model.predict_masks(*inputs, keep, features=features)
        threshold = float(scores.max(dim=1).values.median())
        gated_masks, gated_scores = model.predict_masks(*inputs, keep, features=features, min_score=threshold)
    torch.testing.assert_close(gated_scores, scores, rtol=0, atol=0)
    live = (scores > threshold).any(dim=1)
    assert 0 < int(live.sum()) < len(live)
    torch.testing.assert_close(gated_masks[live], masks[live], rtol=1e-12, atol=1e-12)
    assert bool((gated_masks[~live] == float("-inf")).all())


class FixedPromptDecoder(nn.Module):
    """The decoder as one graph for fixed prompt shapes and 3 masks per prompt (what an exporter wraps)."""

    def __init__(self, decoder: MaskDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decoder.predict_masks(*inputs, MULTIMASK)


def test_reference_decoder_exports_to_onnx_with_its_transposed_convolutions():
    onnx = pytest.importorskip("onnx", reason="needs onnx (the test extra: pip install -e '.[test]')")
    pytest.importorskip("onnxscript", reason="torch.onnx.export needs onnxscript (the test extra)")
    from onnx.reference import ReferenceEvaluator

    inputs = prompts(2)
    graph = FixedPromptDecoder(decoder()).eval()
    program = torch.onnx.export(graph, inputs, dynamo=True, verbose=False)
    onnx.checker.check_model(program.model_proto, full_check=True)
    assert "ConvTranspose" in {node.op_type for node in program.model_proto.graph.node}
    feeds = {i.name: t.numpy() for i, t in zip(program.model_proto.graph.input, inputs, strict=True)}
    masks, iou = ReferenceEvaluator(program.model_proto).run(None, feeds)
    with torch.no_grad():
        expected_masks, expected_iou = graph(*inputs)
    torch.testing.assert_close(torch.from_numpy(masks), expected_masks, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.from_numpy(iou), expected_iou, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------- extension hooks


@pytest.mark.parametrize("fast", [False, True], ids=["reference", "fast"])
@pytest.mark.parametrize("keep", [MULTIMASK, SINGLE], ids=["3 masks", "1 mask"])
def test_an_extra_output_token_runs_end_to_end(keep, fast):
    model = decoder(ExtraTokenDecoder)
    model.fast_upscaling = fast
    assert model.output_tokens().shape == (1 + 4 + 1, DIM)
    inputs = prompts(3)
    moved = interm_features()
    moved["interm_embeddings"][0] += 1.0
    with torch.no_grad():
        masks, iou = model.predict_masks(*inputs, keep, features=interm_features())
        masks_moved, iou_moved = model.predict_masks(*inputs, keep, features=moved)
    kept = len(range(4)[keep])
    assert masks.shape == (3, kept, 4 * SIDE, 4 * SIDE) and iou.shape == (3, kept)
    assert not torch.allclose(masks_moved, masks), "the features reach the heads"
    torch.testing.assert_close(iou_moved, iou)


@pytest.mark.parametrize("keep", [MULTIMASK, SINGLE], ids=["3 masks", "1 mask"])
def test_an_extra_output_token_leaves_sam_outputs_as_they_are(keep):
    """Output tokens meet only in the transformer's self-attention: without two-way layers (depth 0) each
    is decoded on its own, so the subclass must give SAM's scores, and SAM's masks plus one extra mask
    that follows the extra token. Checked in float64; the base decoder loads all but the extra weights."""
    extended = decoder(ExtraTokenDecoder, depth=0).double()
    base = decoder(MaskDecoder, depth=0, seed=1).double()
    loaded = base.load_state_dict(extended.state_dict(), strict=False)
    assert loaded.missing_keys == [] and all(k.startswith("extra_") for k in loaded.unexpected_keys)
    inputs = prompts(3, dtype=torch.float64)
    features = interm_features(torch.float64)
    with torch.no_grad():
        sam_masks, sam_iou = base.predict_masks(*inputs, keep)
        masks, iou = extended.predict_masks(*inputs, keep, features=features)
        extended.extra_token.weight.add_(1.0)
        masks_retokened, iou_retokened = extended.predict_masks(*inputs, keep, features=features)
    for extended_masks, extended_iou in ((masks, iou), (masks_retokened, iou_retokened)):
        torch.testing.assert_close(extended_iou, sam_iou, rtol=1e-12, atol=1e-12)
        extra = extended_masks - sam_masks
        assert extra.abs().max() > 0.1
        torch.testing.assert_close(extra, extra[:, :1].expand_as(extra), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(masks_retokened, masks), "the extra mask follows the extra token"
