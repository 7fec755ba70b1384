"""Model sizes and FLOPs are counted by the project, and match the official implementations' counts."""

from __future__ import annotations

import pytest
import torch

import litesam
from litesam.modeling.image_encoder import Attention


@pytest.mark.parametrize(
    "name, total_params, gflops",
    [("sam_vit_b", 93_735_472, 972.1), ("sam_vit_h", 641_090_608, 5961.1)],
)
def test_sam_counts_equal_the_official_ones(name, total_params, gflops):
    # Official numbers: shared/fixtures meta.json n_parameters and shared/baselines/official_cpu.md GFLOPs.
    stats = litesam.get_spec(name).stats()
    assert stats.total_params == total_params
    assert stats.encoder_flops / 1e9 == pytest.approx(gflops, abs=0.05)


def test_folded_relative_positions_equal_the_plain_formulation():
    torch.manual_seed(0)
    attn = Attention(dim=64, num_heads=4, use_rel_pos=True, input_size=(14, 14)).eval()
    for table in (attn.rel_pos_h, attn.rel_pos_w):
        torch.nn.init.normal_(table, std=0.5)
    x = torch.randn(3, 14, 14, 64)
    folded = attn(x)
    attn.fold_rel_pos = False
    torch.testing.assert_close(folded, attn(x), atol=1e-5, rtol=1e-5)
