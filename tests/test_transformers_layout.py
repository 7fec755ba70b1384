"""Hugging Face ``transformers`` SAM files load into litesam, and compute what ``transformers`` computes.

Live oracle: a ``transformers.SamModel`` from a small config with random weights, saved as its own
``model.safetensors`` / ``pytorch_model.bin``; litesam reads the file, converts the keys (the registry's
``convert_state_dict`` hook), loads strictly, and must give the same embeddings, masks and IoU
predictions. The full ViT-B/L/H layouts are compared key by key on the meta device.
"""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_sam
from test_live_official_sam import randomize

import litesam
from litesam.checkpoint import CheckpointError, load_into, read_state_dict
from litesam.prompts import Prompts
from litesam.transformers_layout import from_transformers_sam

transformers = pytest.importorskip("transformers", reason="needs transformers (pip install -e '.[test]')")

VIT = {  # facebook/sam-vit-base/large/huge vision configs
    "sam_vit_b": dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, global_attn_indexes=[2, 5, 8, 11]
    ),
    "sam_vit_l": dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, global_attn_indexes=[5, 11, 17, 23]
    ),
    "sam_vit_h": dict(
        hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, global_attn_indexes=[7, 15, 23, 31]
    ),
}
TINY = dict(
    hidden_size=32, num_hidden_layers=1, num_attention_heads=2, global_attn_indexes=[0]
)  # = tiny_sam()


def hf_sam(vision: dict) -> torch.nn.Module:
    config = transformers.SamConfig(vision_config=transformers.SamVisionConfig(**vision))
    return transformers.SamModel(config).eval()


@pytest.mark.parametrize("name", list(VIT))
def test_transformers_layout_converts_to_the_official_keys(name):
    with torch.device("meta"):
        theirs = hf_sam(VIT[name]).state_dict()
        ours = litesam.get_spec(name).instantiate().state_dict()
    converted = litesam.get_spec(name).convert_state_dict(theirs)
    assert {k: v.shape for k, v in converted.items()} == {k: v.shape for k, v in ours.items()}


@pytest.fixture(scope="module")
def oracle(tmp_path_factory) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(transformers SamModel with random weights, litesam's model loaded from its model.safetensors)."""
    hf = hf_sam(TINY)
    randomize(hf, seed=3)
    folder = tmp_path_factory.mktemp("hf")
    hf.save_pretrained(folder)
    ours = tiny_sam()
    load_into(
        ours,
        read_state_dict(folder / "model.safetensors"),
        "tiny",
        "model.safetensors",
        from_transformers_sam,
    )
    return hf, ours


def test_pytorch_model_bin_loads_the_same_weights(oracle, tmp_path):
    hf, ours = oracle
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")  # the legacy format: a pickled state_dict
    other = tiny_sam(seed=1)
    load_into(other, read_state_dict(tmp_path / "pytorch_model.bin"), "tiny", "bin", from_transformers_sam)
    for (key, a), b in zip(ours.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


@pytest.fixture(scope="module")
def embedded(oracle) -> tuple[dict, torch.Tensor]:
    hf, ours = oracle
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return ours.encode(x), hf.get_image_embeddings(x)


def test_same_image_embeddings(embedded):
    ours, theirs = embedded
    torch.testing.assert_close(ours["image_embeddings"], theirs, rtol=1e-4, atol=1e-4)


PROMPTS = {
    "points": dict(points=[[[500.0, 375.0], [100.0, 900.0]]], labels=[[1, 0]]),
    "box": dict(boxes=[[100.0, 200.0, 700.0, 650.0]]),
    "box_and_point": dict(points=[[[400.0, 420.0]]], labels=[[1]], boxes=[[100.0, 200.0, 700.0, 650.0]]),
}


@pytest.mark.parametrize("multimask", [True, False], ids=["3 masks", "1 mask"])
@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_same_masks_and_iou_predictions(oracle, embedded, prompt, multimask):
    hf, ours = oracle
    features, embeddings = embedded
    given = PROMPTS[prompt]
    points = torch.tensor(given["points"], dtype=torch.float64) if "points" in given else None
    labels = torch.tensor(given["labels"]) if "labels" in given else None
    boxes = torch.tensor(given["boxes"], dtype=torch.float64) if "boxes" in given else None
    with torch.no_grad():
        low_res, iou = ours.decode(features, Prompts(points, labels, boxes), multimask)
        out = hf(
            image_embeddings=embeddings,
            input_points=None if points is None else points[None].float(),
            input_labels=None if labels is None else labels[None],
            input_boxes=None if boxes is None else boxes[None].float(),
            multimask_output=multimask,
        )
    assert low_res.shape == (1, 3 if multimask else 1, 256, 256)
    assert low_res.abs().max() > 1.0
    # float32 rounding of two implementations (logits up to ~5 here): the fixtures' 1e-3 logit tolerance
    torch.testing.assert_close(low_res, out.pred_masks[0], rtol=0, atol=1e-3)
    torch.testing.assert_close(iou, out.iou_scores[0], rtol=1e-4, atol=1e-4)


def test_a_damaged_safetensors_file_is_a_checkpoint_error(oracle, tmp_path):
    hf, _ = oracle
    hf.save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        read_state_dict(path)
