"""TAP's image encoder (baaivision/tokenize-anything): a windowed ViT with convolutional cross blocks.

Bx3x1024x1024 (BGR, normalised) -> Bx256x64x64. 16x16 patches plus an absolute position table
(4096 x D, row-major over the 64x64 grid); every block attends inside 16x16 windows (no global blocks)
with a learned relative-position bias per head (a (2*16-1)^2 table gathered by a fixed 256x256 index);
after every quarter of the blocks the windows are merged into the DxHxW map and a residual bottleneck
(1x1, 3x3, 1x1 convolutions with BatchNorm and GELU) mixes them; a LayerNorm precedes the last one.
The neck is a 1x1 and a 3x3 convolution, each followed by BatchNorm, no activation. Attribute names are
the official ones (``rel_pos_embed.index`` is recomputed, not stored: see :class:`RelPosBias`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fuse import fuse_conv_bn


class RelPosBias(nn.Module):
    """Learned relative-position bias of a ``size`` x ``size`` window: ``weight`` heads x (2*size-1)^2,
    gathered into heads x size^2 x size^2 by ``index`` (row offset * (2*size-1) + column offset).

    ``index`` is a non-persistent buffer: official files carry it (the same numbers), litesam drops it
    when converting, so files without it load too.
    """

    def __init__(self, num_heads: int, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_heads, (2 * size - 1) ** 2))
        self.register_buffer("index", self.relative_index(size), persistent=False)

    @staticmethod
    def relative_index(size: int) -> torch.Tensor:
        """size^2 x size^2 int64: the table entry for each (query, key) pair of row-major window cells."""
        y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        y, x = y.flatten(), x.flatten()
        dy = y[:, None] - y[None, :] + size - 1
        dx = x[:, None] - x[None, :] + size - 1
        return dy * (2 * size - 1) + dx

    def forward(self) -> torch.Tensor:
        """The bias, heads x size^2 x size^2."""
        return self.weight[:, self.index]


class WindowAttention(nn.Module):
    """Multi-head self-attention over the tokens of one window with a relative-position bias."""

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_embed = RelPosBias(num_heads, window_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (windows)xTxD -> (windows)xTxD, T = window_size^2."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.rel_pos_embed().to(q.dtype))
        return self.proj(out.transpose(1, 2).flatten(2))


class Mlp(nn.Module):
    """``fc2(GELU(fc1(x)))``."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block on windows: (windows)xTxD -> (windows)xTxD."""

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Bottleneck(nn.Module):
    """Residual bottleneck on the BxDxHxW map: 1x1 (D -> D/2), 3x3, 1x1 (-> D), BatchNorm after each, GELU
    after the first two. :meth:`fused` folds the BatchNorms for inference."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        width = dim // 2
        self.conv1 = nn.Conv2d(dim, width, 1, bias=False)
        self.norm1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, dim, 1, bias=False)
        self.norm3 = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.norm1(self.conv1(x)))
        y = F.gelu(self.norm2(self.conv2(y)))
        return x + self.norm3(self.conv3(y))

    def fused(self) -> nn.Module:
        """The same function with each conv + BatchNorm folded into one conv."""
        return _FusedBottleneck(
            fuse_conv_bn(self.conv1, self.norm1),
            fuse_conv_bn(self.conv2, self.norm2),
            fuse_conv_bn(self.conv3, self.norm3),
        )


class _FusedBottleneck(nn.Module):
    """:class:`Bottleneck` with its BatchNorms folded into the convolutions."""

    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d, conv3: nn.Conv2d) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3 = conv1, conv2, conv3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))


class ConvBN(nn.Sequential):
    """Bias-free conv (key ``0``) + BatchNorm (key ``1``), 'same' padding; :meth:`fused` folds them."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_ch),
        )

    def fused(self) -> nn.Conv2d:
        return fuse_conv_bn(self[0], self[1])


class Neck(nn.Module):
    """Official ``SimpleFeaturePyramid`` at its one used level: 1x1 conv + BN, then 3x3 conv + BN."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.lateral_conv = nn.ModuleList([ConvBN(in_ch, out_ch, 1)])
        self.output_conv = nn.ModuleList([ConvBN(out_ch, out_ch, 3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_conv[0](self.lateral_conv[0](x))


class PatchEmbed(nn.Module):
    """Bx3xSxS -> Bx(S/p)^2xD, row-major tokens."""

    def __init__(self, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class PosEmbed(nn.Module):
    """Absolute position table, (S/p)^2 x D, added to the patch tokens."""

    def __init__(self, dim: int, num_patches: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_patches, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight


class TapImageEncoder(nn.Module):
    """TAP's ViT (see the module docstring): Bx3xSxS -> Bx``out_dim``x(S/16)x(S/16)."""

    def __init__(
        self,
        depth: int,
        embed_dim: int,
        num_heads: int,
        image_size: int = 1024,
        patch_size: int = 16,
        window_size: int = 16,
        out_dim: int = 256,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.grid = image_size // patch_size
        self.window_size = window_size
        if self.grid % window_size or depth % 4:
            raise ValueError("the patch grid must tile into windows and the depth be a multiple of 4")
        self.patch_embed = PatchEmbed(embed_dim, patch_size)
        self.pos_embed = PosEmbed(embed_dim, self.grid**2)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, window_size, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)
        self.cross_conv = nn.ModuleList(Bottleneck(embed_dim) for _ in range(4))
        self.neck = Neck(embed_dim, out_dim)
        self.cross_indices = list(range(depth // 4 - 1, depth, depth // 4))  # last block of each quarter

    def to_windows(self, x: torch.Tensor) -> torch.Tensor:
        """BxDxHxW -> (B*nW)xTxD: non-overlapping windows (row-major), cells row-major inside each."""
        b, d, h, w = x.shape
        s = self.window_size
        x = x.reshape(b, d, h // s, s, w // s, s).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(-1, s * s, d)

    def from_windows(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        """Inverse of :meth:`to_windows`: (B*nW)xTxD -> BxDxHxW."""
        s, n = self.window_size, self.grid // self.window_size
        x = x.reshape(batch, n, n, s, s, -1).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(batch, -1, self.grid, self.grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x = self.pos_embed(self.patch_embed(x))
        x = self.to_windows(x.transpose(1, 2).unflatten(2, (self.grid, self.grid)))
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.cross_indices:
                if i == last:
                    x = self.norm(x)
                x = self.cross_conv[self.cross_indices.index(i)](self.from_windows(x, b))
                if i < last:
                    x = self.to_windows(x)
        return self.neck(x)
