"""Live parity against the official ``segment-anything`` package on the same random weights.

A small ViT config keeps it fast; the full ViT-B/L/H key layouts are checked on the meta device.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

import litesam
from litesam.modeling import ImageEncoderViT
from litesam.utils.transforms import ImageTransform
from litesam.zoo.sam import sam_with_encoder

TINY = dict(embed_dim=96, depth=3, num_heads=4, global_attn=(1,))


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial weights everywhere (the official init leaves rel-pos tables, LayerNorms at 0/1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            noise = torch.randn(t.shape, generator=gen)
            if t.dim() >= 2:
                t.copy_(noise / max(1, t[0].numel()) ** 0.5)
            else:
                t.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * noise)


@pytest.mark.parametrize("size", ["vit_b", "vit_l", "vit_h"])
def test_official_state_dict_layout_loads_strictly(official_sam, size):
    with torch.device("meta"):
        official = official_sam.sam_model_registry[size]()
        ours = litesam.get_spec(f"sam_{size}").instantiate()
    theirs = {k: tuple(v.shape) for k, v in official.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == theirs


@pytest.fixture(scope="module")
def tiny_pair(official_sam):
    build_module = importlib.import_module("segment_anything.build_sam")
    official = build_module._build_sam(
        encoder_embed_dim=TINY["embed_dim"],
        encoder_depth=TINY["depth"],
        encoder_num_heads=TINY["num_heads"],
        encoder_global_attn_indexes=list(TINY["global_attn"]),
    ).eval()
    randomize(official)
    encoder = ImageEncoderViT(
        embed_dim=TINY["embed_dim"],
        depth=TINY["depth"],
        num_heads=TINY["num_heads"],
        global_attn_indexes=TINY["global_attn"],
    )
    ours = sam_with_encoder(encoder, ImageTransform())
    ours.load_state_dict(official.state_dict(), strict=True)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(300, 451, 3), dtype=np.uint8)
    theirs_pred = official_sam.SamPredictor(official)
    theirs_pred.set_image(image)
    ours_pred = litesam.Predictor(ours.eval())
    ours_pred.set_image(image)
    return theirs_pred, ours_pred


def test_embeddings_match_official(tiny_pair):
    theirs, ours = tiny_pair
    expected = theirs.get_image_embedding()
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(ours.get_image_embedding(), expected, atol=2e-5, rtol=1e-5)


PROMPTS = {
    "one point, 3 masks": dict(point_coords=[[200, 150]], point_labels=[1], multimask_output=True),
    "fg + bg points": dict(point_coords=[[200, 150], [30, 40]], point_labels=[1, 0], multimask_output=True),
    "box": dict(box=[50, 60, 400, 280], multimask_output=False),
    "box + point": dict(
        point_coords=[[220, 100]], point_labels=[1], box=[50, 60, 400, 280], multimask_output=False
    ),
    "edge points": dict(point_coords=[[0, 0], [451, 300]], point_labels=[1, 0], multimask_output=True),
}


def as_numpy(prompt: dict) -> dict:
    """The official predictor takes numpy arrays only."""
    return {k: np.asarray(v) if isinstance(v, list) else v for k, v in prompt.items()}


@pytest.mark.parametrize("prompt", PROMPTS.values(), ids=PROMPTS.keys())
def test_predict_matches_official(tiny_pair, prompt):
    theirs, ours = tiny_pair
    t_masks, t_scores, t_logits = theirs.predict(**as_numpy(prompt))
    masks, scores, logits = ours.predict(**prompt)
    np.testing.assert_allclose(logits, t_logits, atol=1e-4)
    np.testing.assert_allclose(scores, t_scores, atol=1e-5)
    assert masks.dtype == bool and masks.shape == t_masks.shape
    assert (masks != t_masks).mean() < 1e-4


def test_mask_input_round_trip_matches_official(tiny_pair):
    theirs, ours = tiny_pair
    first = as_numpy(dict(point_coords=[[200, 150]], point_labels=[1]))
    _, _, t_logits = theirs.predict(**first)
    prompt = dict(first, mask_input=t_logits[:1], multimask_output=False)
    np.testing.assert_allclose(ours.predict(**prompt)[2], theirs.predict(**prompt)[2], atol=1e-4)


def test_predict_batch_matches_official_predict_torch(tiny_pair):
    theirs, ours = tiny_pair
    boxes = np.array([[50, 60, 400, 280], [10, 10, 100, 120], [300, 150, 450, 299]], dtype=np.float32)
    points = np.array([[[200, 150]], [[50, 50]], [[400, 200]]], dtype=np.float32)
    t_boxes = theirs.transform.apply_boxes_torch(torch.as_tensor(boxes), theirs.original_size)
    t_points = theirs.transform.apply_coords_torch(torch.as_tensor(points), theirs.original_size)
    t_masks, t_scores, t_logits = theirs.predict_torch(
        t_points, torch.ones(3, 1, dtype=torch.int), t_boxes, multimask_output=True
    )
    masks, scores, logits = ours.predict_batch(
        points, np.ones((3, 1)), boxes, multimask_output=True, batch_size=2
    )
    np.testing.assert_allclose(logits, t_logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(scores, t_scores.numpy(), atol=1e-5)
    assert (masks != t_masks.numpy()).mean() < 1e-4
