"""TinyViT image encoder, as MobileSAM uses it (TinyViT-5M: a conv stage, three windowed-attention stages).

Maps Bx3x1024x1024 normalized images to Bx256x64x64 embeddings. Attribute names follow the official
checkpoint (``image_encoder.patch_embed.seq.0.c``, ``layers.1.blocks.0.attn.attention_biases``,
``neck.0`` ...), including the ImageNet classification head (``norm_head``, ``head``) that the
checkpoint carries but the encoder never uses.

Activations are NCHW tensors in channels-last memory (much faster depthwise and 1x1 convs on CPU);
the attention stages work on their NHWC view (a free ``permute``), where LayerNorm/Linear see
contiguous channels. :func:`litesam.modeling.fuse.fuse_modules`, after loading weights, folds every
BatchNorm into its convolution for inference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import ConvBN, sam_neck
from .fuse import FusedConv, ResidualChain
from .image_encoder import window_partition, window_unpartition


def gelu_(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU, computed in place unless autograd tracks ``x``.

    Only for intermediates the caller owns: in inference it spares a large allocation (and its page
    faults), which is most of the cost of an elementwise op on the 256x256 feature maps.
    """
    return F.gelu(x) if x.requires_grad else torch.ops.aten.gelu_(x)


class DropPath(nn.Module):
    """Stochastic depth: in training, drop a residual branch per sample with probability ``p``.

    Kept samples are scaled by 1/(1-p) so the expectation is unchanged; identity in eval mode.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class PatchEmbed(nn.Module):
    """Bx3xHxW -> Bx``dim``xH/4xW/4: two stride-2 3x3 ConvBNs with GELU between them."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(in_chans, dim // 2, 3, 2), nn.GELU(), ConvBN(dim // 2, dim, 3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual on BxCxHxW: 1x1 expand, GELU, 3x3 depthwise, GELU, 1x1 project, + input, GELU."""

    def __init__(self, dim: int, expand_ratio: float, drop_path: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)
        nn.init.zeros_(self.conv3.bn.weight)  # each block starts as identity (+GELU), as in TinyViT
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = gelu_(self.conv2(gelu_(self.conv1(x))))
        return gelu_(x + self.drop_path(self.conv3(y)))

    def fused(self) -> ResidualChain:
        """For inference: BatchNorms folded, the GELUs and the residual addition fused into the convs."""
        convs = (self.conv1, self.conv2, self.conv3)
        return ResidualChain([FusedConv(conv.fused(), nn.GELU()) for conv in convs])


class PatchMerging(nn.Module):
    """BxCxHxW -> Bx``out_dim``xH/sxW/s: 1x1 ConvBN, GELU, 3x3 depthwise ConvBN (stride s), GELU, 1x1."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(gelu_(self.conv2(gelu_(self.conv1(x)))))

    def fused(self) -> nn.Sequential:
        """For inference: BatchNorms folded, the GELUs fused into the convs before them."""
        first = [FusedConv(conv.fused(), nn.GELU()) for conv in (self.conv1, self.conv2)]
        return nn.Sequential(*first, self.conv3.fused())


def relative_offset_index(window: int) -> torch.Tensor:
    """(window², window²) int64: index of the bias shared by each (query, key) pair of one window.

    Tokens are numbered row-major; pair (i, j) maps to ``|dy| * window + |dx|``, the order in which
    TinyViT enumerates the distinct absolute offsets (so ``attention_biases`` has window² columns).
    """
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return (ys[:, None] - ys[None, :]).abs() * window + (xs[:, None] - xs[None, :]).abs()


class Attention(nn.Module):
    """Pre-norm multi-head self-attention within one window, with a learned bias per head and offset.

    Input/output: (B*windows) x N x C, N = window². The fused ``qkv`` projection is laid out per head
    as [q_h, k_h, v_h] (each C/heads wide), the official TinyViT layout.
    """

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        self.register_buffer("bias_index", relative_offset_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.head_dim).transpose(1, 2)
        q, k, v = qkv.split(self.head_dim, dim=-1)  # each B x heads x N x head_dim
        bias = self.attention_biases[:, self.bias_index][None]  # 1 x heads x N x N (4-D: fused CPU kernel)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """Pre-norm feed-forward on the last axis: LayerNorm, Linear, GELU, Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(gelu_(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """BxCxHxW -> same: x += window attention(x); x = 3x3 depthwise ConvBN(x); x += MLP(x).

    Windows are zero-padded at the bottom/right; padded positions take part as keys (official behaviour).
    """

    def __init__(
        self, dim: int, num_heads: int, window: int, mlp_ratio: float, drop_path: float, local_conv_size: int
    ) -> None:
        super().__init__()
        self.window = window
        self.attn = Attention(dim, num_heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, local_conv_size, groups=dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.permute(0, 2, 3, 1)  # B x H x W x C
        h, w, c = tokens.shape[1:]
        windows, padded = window_partition(tokens, self.window)
        attn = self.attn(windows.reshape(-1, self.window * self.window, c))
        attn = window_unpartition(attn.view(-1, self.window, self.window, c), self.window, padded, (h, w))
        tokens = tokens + self.drop_path(attn)
        tokens = self.local_conv(tokens.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        tokens = tokens + self.drop_path(self.mlp(tokens))
        return tokens.permute(0, 3, 1, 2)


class Stage(nn.Module):
    """``blocks`` at one resolution, then an optional ``downsample`` (PatchMerging) to the next stage."""

    def __init__(self, blocks: Sequence[nn.Module], downsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """TinyViT backbone + SAM neck: Bx3x``img_size``x``img_size`` -> Bx``out_chans``x(img_size/16)².

    Stage 0 is MBConv blocks; stages 1.. are TinyViT blocks with windowed attention. Every stage but
    the last ends in a PatchMerging of stride 2, except the one before the last stage, whose stride is
    ``last_downsample_stride`` (1 in MobileSAM, so the last stage stays at 1/16 for SAM's decoder).
    ``drop_path_rate`` is the stochastic-depth rate of the last block, rising linearly from 0 over
    all blocks. The classification head (``norm_head``, ``head``) is built for checkpoint
    compatibility only; ``forward`` never uses it.
    """

    def __init__(
        self,
        img_size: int = 1024,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        last_downsample_stride: int = 1,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        total = sum(depths)
        rates = iter([drop_path_rate * i / max(total - 1, 1) for i in range(total)])
        self.layers = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(embed_dims, depths, strict=True)):
            drops = [next(rates) for _ in range(depth)]
            if i == 0:
                blocks = [MBConv(dim, mbconv_expand_ratio, p) for p in drops]
            else:
                heads, window = num_heads[i], window_sizes[i]
                blocks = [TinyViTBlock(dim, heads, window, mlp_ratio, p, local_conv_size) for p in drops]
            last = i == len(depths) - 1
            stride = last_downsample_stride if i == len(depths) - 2 else 2
            downsample = None if last else PatchMerging(dim, embed_dims[i + 1], stride)
            self.layers.append(Stage(blocks, downsample))
        self.norm_head = nn.LayerNorm(embed_dims[-1])  # classification head: in the checkpoint, unused
        self.head = nn.Linear(embed_dims[-1], num_classes)
        self.apply(_init_weights)
        self.neck = sam_neck(embed_dims[-1], out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x.contiguous(memory_format=torch.channels_last))
        for layer in self.layers:
            x = layer(x)
        return self.neck(x).contiguous()


def _init_weights(module: nn.Module) -> None:
    """TinyViT's initialisation for training from scratch: truncated-normal(0.02) Linear, unit LayerNorm."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
