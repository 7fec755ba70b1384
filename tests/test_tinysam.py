"""TinySAM: MobileSAM's keys (its checkpoint loads strictly into either), and its decoder returns masks
1..3 for every prompt, also when one mask is asked for."""

from __future__ import annotations

import pytest
import torch
from helpers import photo

import litesam


@pytest.fixture(scope="module")
def models() -> tuple[torch.nn.Module, torch.nn.Module]:
    """(tinysam, mobile_sam) with the same random weights (loaded strictly both ways)."""
    tiny = litesam.build_model("tinysam")
    mobile = litesam.build_model("mobile_sam")
    mobile.load_state_dict(tiny.state_dict(), strict=True)
    return tiny, mobile


@pytest.mark.parametrize("multimask", [True, False])
def test_three_masks_for_every_prompt(models, multimask):
    tiny, mobile = models
    state = litesam.Predictor(mobile).encode(photo())
    prompts = litesam.Prompts.batch(boxes=[[10, 10, 60, 50], [20, 30, 150, 110]])
    tiny_pred = litesam.Predictor(tiny).decode(state, prompts, multimask_output=multimask)
    mobile_pred = litesam.Predictor(mobile).decode(state, prompts, multimask_output=True)
    assert tiny_pred.low_res.shape == (2, 3, 256, 256)
    torch.testing.assert_close(tiny_pred.low_res, mobile_pred.low_res)
    torch.testing.assert_close(tiny_pred.scores, mobile_pred.scores)
