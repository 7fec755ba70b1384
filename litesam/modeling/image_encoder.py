"""SAM's ViT image encoder (ViT-B/L/H): windowed + global attention with decomposed relative positions.

Maps Bx3x1024x1024 normalized images to Bx256x64x64 embeddings. Attribute names follow the official
checkpoints (``image_encoder.patch_embed.proj``, ``blocks.N.attn.rel_pos_h``, ``neck.0`` ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLPBlock, sam_neck


def relative_position_table(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Gather relative-position embeddings for every (query, key) pair along one axis.

    rel_pos: (L, C) table, L = 2*max(q_size, k_size) - 1 (resampled linearly if a checkpoint's table
    has another length). Returns (q_size, k_size, C).
    """
    length = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != length:
        rel_pos = F.interpolate(rel_pos.T[None], size=length, mode="linear")[0].T
    q_scale, k_scale = max(k_size / q_size, 1.0), max(q_size / k_size, 1.0)
    q_idx = torch.arange(q_size, device=rel_pos.device)[:, None] * q_scale
    k_idx = torch.arange(k_size, device=rel_pos.device)[None, :] * k_scale
    offset = (q_idx - k_idx) + (k_size - 1) * k_scale
    return rel_pos[offset.long()]


class Attention(nn.Module):
    """Multi-head self-attention on a BxHxWxC grid, with optional decomposed relative positions.

    The relative-position bias ``q·Rh[qh, kh] + q·Rw[qw, kw]`` is folded into the dot product by
    appending the per-query terms to q and one-hot row/column indicators to k, so the logits come out
    of one matmul with no separate bias tensor or broadcast add over the (HW)^2 attention matrix (the
    official code spends ~40% of ViT-B's time in that add). On CPU a plain matmul + softmax beats the
    fused SDPA kernels here (which require equal q/v widths for their fast paths).
    """

    fold_rel_pos: bool = True  # False: the plain formulation (bias added to the logits), for reference

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        input_size: tuple[int, int] | None = None,
        inner_dim: int | None = None,
    ) -> None:
        super().__init__()
        inner_dim = inner_dim or dim  # q/k/v width (pruned models: narrower than the block)
        self.num_heads = num_heads
        head_dim = inner_dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, inner_dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(inner_dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("input_size is required with use_rel_pos=True")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """BxNxC tokens -> q, k, v, each B x heads x N x head_dim."""
        b, n, _ = x.shape
        return self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        q, k, v = self.project(x.reshape(b, h * w, -1))
        if self.use_rel_pos and self.fold_rel_pos:
            q, k = self._fold_rel_pos(q, k, h, w)  # scale folded into q
            logits = q @ k.transpose(-2, -1)
        else:
            logits = (q * self.scale) @ k.transpose(-2, -1)
            if self.use_rel_pos:
                logits = logits + self._rel_pos_bias(q, h, w)
        out = logits.softmax(dim=-1) @ v
        out = out.transpose(1, 2).reshape(b, h, w, -1)
        return self.proj(out)

    def _rel_pos_bias(self, q: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """The decomposed relative-position bias as a (B, heads, HW, HW) tensor."""
        grid = q.reshape(-1, h, w, q.shape[-1])
        rel_h = torch.einsum("bhwc,hkc->bhwk", grid, relative_position_table(h, h, self.rel_pos_h))
        rel_w = torch.einsum("bhwc,wkc->bhwk", grid, relative_position_table(w, w, self.rel_pos_w))
        bias = rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
        return bias.reshape(*q.shape[:2], h * w, h * w)

    def _fold_rel_pos(
        self, q: torch.Tensor, k: torch.Tensor, h: int, w: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (q', k') with ``q'·k' = scale*q·k + rel_h + rel_w`` (q' and k' have C + h + w channels)."""
        rh = relative_position_table(h, h, self.rel_pos_h)  # h x h x C
        rw = relative_position_table(w, w, self.rel_pos_w)  # w x w x C
        bh, n, c = q.shape[0] * q.shape[1], h * w, q.shape[-1]
        grid = q.reshape(bh, h, w, c)
        rel_h = torch.einsum("bhwc,hkc->bhwk", grid, rh).reshape(q.shape[0], q.shape[1], n, h)
        rel_w = torch.einsum("bhwc,wkc->bhwk", grid, rw).reshape(q.shape[0], q.shape[1], n, w)
        q = torch.cat([q * self.scale, rel_h, rel_w], dim=-1)
        rows = torch.eye(h, dtype=k.dtype, device=k.device).repeat_interleave(w, dim=0)  # HW x h
        cols = torch.eye(w, dtype=k.dtype, device=k.device).repeat(h, 1)  # HW x w
        onehot = torch.cat([rows, cols], dim=-1).expand(*k.shape[:2], n, h + w)
        k = torch.cat([k, onehot], dim=-1)
        return q, k


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """BxHxWxC -> (B*nW)xwindowxwindowxC, zero-padding H and W up to multiples of ``window``."""
    b, h, w, c = x.shape
    pad_h, pad_w = (window - h % window) % window, (window - w % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window, window, c), (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B*nW)xwindowxwindowxC -> BxHxWxC without the padding."""
    hp, wp = padded_hw
    h, w = hw
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.view(b, hp // window, wp // window, window, window, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, hp, wp, -1)[:, :h, :w].contiguous()


class Block(nn.Module):
    """Pre-norm transformer block; ``window_size`` 0 means global attention."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        window_size: int = 0,
        input_size: tuple[int, int] | None = None,
        mlp_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        attn_size = (window_size, window_size) if window_size > 0 else input_size
        self.attn = Attention(dim, num_heads, qkv_bias, use_rel_pos, attn_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, mlp_dim or int(dim * mlp_ratio))
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        if self.window_size > 0:
            hw = (y.shape[1], y.shape[2])
            y, padded = window_partition(y, self.window_size)
            y = window_unpartition(self.attn(y), self.window_size, padded, hw)
        else:
            y = self.attn(y)
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Bx3xHxW -> BxH/pxW/pxC (channels last) with a strided convolution."""

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ImageEncoderViT(nn.Module):
    """SAM's ViT: patch embedding, absolute + relative positions, transformer blocks, 256-channel neck.

    ``mlp_dim`` overrides ``embed_dim * mlp_ratio`` (SlimSAM's pruned MLP widths are not a multiple).
    """

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        use_abs_pos: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 14,
        global_attn_indexes: tuple[int, ...] = (),
        mlp_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim)) if use_abs_pos else None
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio,
                qkv_bias,
                use_rel_pos,
                window_size=0 if i in global_attn_indexes else window_size,
                input_size=(grid, grid),
                mlp_dim=mlp_dim,
            )
            for i in range(depth)
        )
        self.neck = sam_neck(embed_dim, out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
