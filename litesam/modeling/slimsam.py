"""SlimSAM's globally pruned ViT (czg1225/SlimSAM): SAM's ViT whose blocks each keep their own q/k/v and
MLP widths, with separate ``q``, ``k``, ``v`` projections (the official keys ``blocks.N.attn.q`` ...).

Every block keeps SAM's 12 heads; head width = q width / 12, and the relative-position tables have that
width. The embedding width is shared by all blocks and the neck.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .common import MLPBlock
from .image_encoder import Attention, ImageEncoderViT


class SeparateQKVAttention(Attention):
    """:class:`Attention` with ``inner_dim``-wide q, k and v as three Linear layers (SlimSAM's layout)."""

    def __init__(self, dim: int, num_heads: int, inner_dim: int, input_size: tuple[int, int]) -> None:
        super().__init__(dim, num_heads, True, True, input_size, inner_dim=inner_dim)
        del self.qkv
        self.q = nn.Linear(dim, inner_dim)
        self.k = nn.Linear(dim, inner_dim)
        self.v = nn.Linear(dim, inner_dim)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """BxNxC tokens -> q, k, v, each B x heads x N x head_dim."""
        b, n, _ = x.shape
        return tuple(f(x).view(b, n, self.num_heads, -1).transpose(1, 2) for f in (self.q, self.k, self.v))


def global_pruned_vit(
    embed_dim: int,
    qkv_dims: Sequence[int],
    mlp_dims: Sequence[int],
    global_attn: Sequence[int],
    img_size: int = 1024,
    num_heads: int = 12,
) -> ImageEncoderViT:
    """SAM's ViT with per-block q/k/v widths ``qkv_dims`` and MLP widths ``mlp_dims``."""
    encoder = ImageEncoderViT(
        img_size=img_size,
        embed_dim=embed_dim,
        depth=len(qkv_dims),
        num_heads=num_heads,
        window_size=14,
        global_attn_indexes=tuple(global_attn),
    )
    grid = img_size // 16
    for block, inner, hidden in zip(encoder.blocks, qkv_dims, mlp_dims, strict=True):
        size = (block.window_size, block.window_size) if block.window_size else (grid, grid)
        block.attn = SeparateQKVAttention(embed_dim, num_heads, inner, size)
        block.mlp = MLPBlock(embed_dim, hidden)
    return encoder
