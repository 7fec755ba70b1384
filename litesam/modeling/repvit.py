"""RepViT backbone and the RepViT-SAM image encoder (THU-MIG/RepViT, ``sam/repvit_sam``).

A RepViT is a stem (two stride-2 3x3 convs, /4) followed by stages of MobileNet-like blocks: a
depthwise *token mixer* and a pointwise 2x *channel mixer* (residual FFN). The first block of every
stage but the first changes the width (depthwise conv with stride + 1x1 projection); the other blocks
use a re-parameterisable depthwise 3x3 + 1x1 + identity token mixer and, on every second block but the
last of a stage, squeeze-and-excitation. Module names follow the official checkpoints
(``features.N.token_mixer.0.conv.c.weight``, ``neck.0.weight``, ...). BatchNorms run in eval mode
unfused, as in the official predictors; :func:`~litesam.modeling.fuse.fuse_modules` folds them for inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .common import ConvBN, sam_neck
from .fuse import fuse_conv_bn, fuse_modules, fuse_residual_chain, merge_parallel_convs


class RepDWConv(nn.Module):
    """Depthwise ``conv(x) + conv1(x) + x`` with a 3x3 (``conv``) and a 1x1 (``conv1``) branch (RepVGGDW).

    ``norm_after_sum=True`` (RepViT-SAM): ``conv1`` is a plain conv with bias and a BatchNorm ``bn``
    normalises the sum. ``False`` (EdgeSAM): ``conv1`` carries its own BatchNorm and the sum is returned.
    Shapes: BxCxHxW -> BxCxHxW.
    """

    def __init__(self, channels: int, norm_after_sum: bool) -> None:
        super().__init__()
        self.conv = ConvBN(channels, channels, 3, groups=channels)
        if norm_after_sum:
            self.conv1 = nn.Conv2d(channels, channels, 1, groups=channels)
            self.bn = nn.BatchNorm2d(channels)
        else:
            self.conv1 = ConvBN(channels, channels, 1, groups=channels)
            self.bn = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x) + self.conv1(x) + x
        return y if self.bn is None else self.bn(y)

    def fused(self) -> nn.Conv2d:
        """The single depthwise 3x3 conv (with bias) computing the same function."""
        branch1 = self.conv1 if isinstance(self.conv1, nn.Conv2d) else self.conv1.fused()
        merged = merge_parallel_convs([self.conv.fused(), branch1], identity=True)
        return merged if self.bn is None else fuse_conv_bn(merged, self.bn)


def _se_channels(channels: int, ratio: float = 0.25, divisor: int = 8) -> int:
    """Squeeze width: ``channels * ratio`` rounded to the nearest multiple of ``divisor`` (timm, no floor)."""
    return max(divisor, int(channels * ratio + divisor / 2) // divisor * divisor)


class SqueezeExcite(nn.Module):
    """``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))`` with 1x1 convs (timm ``SEModule``); BxCxHxW -> same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = _se_channels(channels)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class Residual(nn.Module):
    """``x + m(x)``."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.m(x)

    def fused(self) -> nn.Module:
        """The branch's BatchNorms folded, and the FFN's GELU and the addition fused into its convs."""
        self.m = fuse_modules(self.m)
        return fuse_residual_chain(self.m) or self


class RepViTBlock(nn.Module):
    """``channel_mixer(token_mixer(x))``: BxCinxHxW -> BxCoutxH'xW'.

    Width-changing blocks (``in_ch != out_ch``) mix tokens with a depthwise 3x3 conv of the given
    ``stride`` and a 1x1 projection; the others with a :class:`RepDWConv` (stride 1). Both optionally
    apply :class:`SqueezeExcite` after the depthwise part; the channel mixer is a residual 2x FFN with GELU.
    """

    def __init__(
        self, in_ch: int, out_ch: int, stride: int = 1, use_se: bool = False, norm_after_sum: bool = True
    ) -> None:
        super().__init__()
        excite = SqueezeExcite(in_ch) if use_se else nn.Identity()
        if in_ch != out_ch:
            self.token_mixer = nn.Sequential(
                ConvBN(in_ch, in_ch, 3, stride=stride, groups=in_ch), excite, ConvBN(in_ch, out_ch)
            )
        else:
            self.token_mixer = nn.Sequential(RepDWConv(in_ch, norm_after_sum), excite)
        self.channel_mixer = Residual(
            nn.Sequential(ConvBN(out_ch, 2 * out_ch), nn.GELU(), ConvBN(2 * out_ch, out_ch))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_mixer(self.token_mixer(x))


@dataclass(frozen=True)
class RepViTConfig:
    """A RepViT layout.

    widths: channels of each stage; depths: blocks per stage after its (width-changing) first block,
    which stage 0 does not have; downsample_strides: stride of each later stage's first block;
    norm_after_sum: the :class:`RepDWConv` variant.
    """

    widths: tuple[int, ...]
    depths: tuple[int, ...]
    downsample_strides: tuple[int, ...]
    norm_after_sum: bool

    def stage_ends(self) -> list[int]:
        """Index in ``features`` of the last block of each stage (``features[0]`` is the stem)."""
        ends, last = [], 0
        for stage, depth in enumerate(self.depths):
            last += depth + (stage > 0)
            ends.append(last)
        return ends


# RepViT-M2.3 as used by RepViT-SAM: 7 + 8 + 36 + 3 blocks; the 320 -> 640 block keeps stride 1 (output /16).
REPVIT_SAM_CONFIG = RepViTConfig(
    widths=(80, 160, 320, 640), depths=(7, 7, 35, 2), downsample_strides=(2, 2, 1), norm_after_sum=True
)


def build_features(config: RepViTConfig) -> nn.ModuleList:
    """``[stem, block, block, ...]``: Bx3xHxW -> BxC_lastx(H/s)x(W/s) when run in order."""
    width = config.widths[0]
    stem = nn.Sequential(
        ConvBN(3, width // 2, 3, stride=2), nn.GELU(), ConvBN(width // 2, width, 3, stride=2)
    )
    layers: list[nn.Module] = [stem]
    for stage, (out_ch, depth) in enumerate(zip(config.widths, config.depths, strict=True)):
        if stage > 0:
            stride = config.downsample_strides[stage - 1]
            layers.append(RepViTBlock(width, out_ch, stride, norm_after_sum=config.norm_after_sum))
            width = out_ch
        for i in range(depth):
            use_se = i % 2 == 0 and i < depth - 1
            layers.append(RepViTBlock(width, width, use_se=use_se, norm_after_sum=config.norm_after_sum))
    return nn.ModuleList(layers)


class RepViTSamEncoder(nn.Module):
    """RepViT-SAM image encoder: Bx3x1024x1024 (normalised, padded) -> Bx256x64x64."""

    def __init__(self, config: RepViTConfig = REPVIT_SAM_CONFIG, img_size: int = 1024) -> None:
        super().__init__()
        self.img_size = img_size
        self.features = build_features(config)
        self.neck = sam_neck(config.widths[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.features:
            x = layer(x)
        return self.neck(x)
