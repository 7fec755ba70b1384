"""EfficientViT-SAM image encoders (L0, L1, L2, XL0, XL1) in plain torch, and the model around them.

An EfficientViT "large" backbone (conv stages, then stages of multi-scale ReLU linear attention) feeds a
SAM neck that projects three backbone stages to 256 channels, resamples them to 64x64 (bicubic), sums
them, refines with FusedMBConv blocks and ends in a 1x1 conv + LayerNorm2d: Bx3xSxS -> Bx256x64x64 for
any input side S (512 for the L models, 1024 for XL). :class:`EfficientViTSam` keeps prompts and masks
in SAM's 1024 frame whatever S is, as the official predictor does. Attribute names follow the official
checkpoints (mit-han-lab/efficientvit, ``image_encoder.backbone.stages.N.op_list.M...``,
``image_encoder.neck...``), so those load strictly. Every norm uses eps 1e-6 (the official model zoo
calls ``set_norm_eps(1e-6)``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d
from .fuse import FusedConv, fuse_conv_bn, fuse_modules, fuse_residual_chain

NORM_EPS = 1e-6
EMBED_DIM = 256
EMBED_SIDE = 64


class ConvNormAct(nn.Module):
    """Conv2d with 'same' padding -> optional BatchNorm2d -> optional GELU (tanh approximation).

    Keys ``conv.weight`` [, ``conv.bias``] [, ``norm.*``]. ``bias`` defaults to ``not norm``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        norm: bool = True,
        act: bool = False,
        bias: bool | None = None,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            kernel_size // 2,
            groups=groups,
            bias=not norm if bias is None else bias,
        )
        self.norm = nn.BatchNorm2d(out_channels, eps=NORM_EPS) if norm else None
        self.act = nn.GELU(approximate="tanh") if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return x if self.act is None else self.act(x)

    def fused(self) -> nn.Module:
        """The same function with BatchNorm folded into the conv and the GELU fused into it (eval mode;
        for ``fuse_modules``)."""
        conv = self.conv if self.norm is None else fuse_conv_bn(self.conv, self.norm)
        return conv if self.act is None else FusedConv(conv, self.act)


class Residual(nn.Module):
    """``main(x) + x``, or ``main(x)`` alone for the stride-2 block opening a stage (``identity=False``)."""

    def __init__(self, main: nn.Module, identity: bool = True) -> None:
        super().__init__()
        self.main = main
        self.identity = identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + x if self.identity else self.main(x)

    def fused(self) -> nn.Module:
        """The branch fused (:func:`fuse_modules`), the addition into its last conv where it can be."""
        self.main = fuse_modules(self.main)
        return (self.identity and fuse_residual_chain(self.main)) or self


class OpList(nn.Module):
    """Modules applied in order under the official ``op_list.N`` keys."""

    def __init__(self, ops: list[nn.Module]) -> None:
        super().__init__()
        self.op_list = nn.Sequential(*ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op_list(x)


def conv_block(
    kind: str, in_channels: int, out_channels: int, stride: int, expand: float, fewer_norm: bool
) -> nn.Sequential:
    """One official local block as named conv layers (GELU after every layer but the last).

    ``res``: ResBlock, conv1 3x3 (stride) -> conv2 3x3. ``fmb``: FusedMBConv, spatial_conv 3x3 (stride,
    in -> in*expand) -> point_conv 1x1. ``mb``: MBConv, inverted_conv 1x1 -> depth_conv depthwise 3x3
    (stride) -> point_conv 1x1. With ``fewer_norm`` every layer but the last has a bias instead of a norm.
    """
    mid = round(in_channels * expand)
    inner = dict(norm=not fewer_norm, act=True)
    if kind == "res":
        layers = [
            ("conv1", ConvNormAct(in_channels, mid, 3, stride, **inner)),
            ("conv2", ConvNormAct(mid, out_channels, 3)),
        ]
    elif kind == "fmb":
        layers = [
            ("spatial_conv", ConvNormAct(in_channels, mid, 3, stride, **inner)),
            ("point_conv", ConvNormAct(mid, out_channels, 1)),
        ]
    elif kind == "mb":
        layers = [
            ("inverted_conv", ConvNormAct(in_channels, mid, 1, **inner)),
            ("depth_conv", ConvNormAct(mid, mid, 3, stride, groups=mid, **inner)),
            ("point_conv", ConvNormAct(mid, out_channels, 1)),
        ]
    else:
        raise ValueError(f"unknown block kind {kind!r}")
    return nn.Sequential(OrderedDict(layers))


class LiteMLA(nn.Module):
    """Multi-scale ReLU linear attention (heads of ``head_dim`` = 32 channels).

    qkv = 1x1 conv (C -> 3C); each scale k adds a depthwise kxk conv + grouped 1x1 conv of qkv, giving
    extra heads. Per head: out_n = sum_m v_m (k_m . q_n) / (sum_m k_m . q_n + 1e-15) with q, k = ReLU,
    computed linearly in the token count as (v_pad @ k^T) @ q where v_pad carries a row of ones, in
    float32 also for half-precision inputs (as official). The official code switches to the equal
    quadratic form when H*W <= head_dim; the results agree up to float rounding. proj = 1x1 conv + BN
    back to C channels.
    """

    def __init__(self, channels: int, head_dim: int = 32, scales: tuple[int, ...] = (5,), eps: float = 1e-15):
        super().__init__()
        heads = channels // head_dim
        total = 3 * heads * head_dim
        self.head_dim = head_dim
        self.eps = eps
        self.qkv = ConvNormAct(channels, total, 1, norm=False, bias=False)
        self.aggreg = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(total, total, k, padding=k // 2, groups=total, bias=False),
                nn.Conv2d(total, total, 1, groups=3 * heads, bias=False),
            )
            for k in scales
        )
        self.proj = ConvNormAct(heads * head_dim * (1 + len(scales)), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """BxCxHxW -> BxCxHxW."""
        qkv = self.qkv(x)
        qkv = torch.cat([qkv, *(op(qkv) for op in self.aggreg)], dim=1)
        b, _, h, w = qkv.shape
        q, k, v = qkv.float().reshape(b, -1, 3 * self.head_dim, h * w).split(self.head_dim, dim=2)
        q, k = F.relu(q), F.relu(k)
        v = F.pad(v, (0, 0, 0, 1), value=1.0)
        out = torch.matmul(torch.matmul(v, k.transpose(-1, -2)), q)
        out = out[:, :, :-1] / (out[:, :, -1:] + self.eps)
        return self.proj(out.reshape(b, -1, h, w).to(qkv.dtype))


class EfficientViTBlock(nn.Module):
    """Residual LiteMLA (``context_module``) then a residual MBConv with fewer norms (``local_module``)."""

    def __init__(self, channels: int, expand: float, scale: int, head_dim: int = 32) -> None:
        super().__init__()
        self.context_module = Residual(LiteMLA(channels, head_dim, (scale,)))
        self.local_module = Residual(conv_block("mb", channels, channels, 1, expand, fewer_norm=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_module(self.context_module(x))


@dataclass(frozen=True)
class EfficientViTSamConfig:
    """One EfficientViT-SAM encoder: backbone stages (per-stage lists) and the SAM neck.

    blocks: per stage ``res`` / ``fmb`` / ``mb`` / ``att`` (LiteMLA 5x5) / ``att@3`` (LiteMLA 3x3).
    neck_stages: backbone stages fed to the neck (strides 2**(i+1)), in the official summation order.
    """

    widths: tuple[int, ...]
    depths: tuple[int, ...]
    blocks: tuple[str, ...]
    expands: tuple[float, ...]
    fewer_norm: tuple[bool, ...]
    neck_stages: tuple[int, ...]
    neck_depth: int
    neck_expand: float


_L = dict(
    widths=(32, 64, 128, 256, 512),
    blocks=("res", "fmb", "fmb", "mb", "att"),
    expands=(1, 4, 4, 4, 6),
    fewer_norm=(False, False, False, True, True),
    neck_stages=(4, 3, 2),
    neck_expand=1,
)
_XL = dict(
    widths=(32, 64, 128, 256, 512, 1024),
    blocks=("res", "fmb", "fmb", "fmb", "att@3", "att@3"),
    expands=(1, 4, 4, 4, 4, 6),
    fewer_norm=(False, False, False, False, True, True),
    neck_stages=(5, 4, 3),
    neck_expand=4,
)

CONFIGS: dict[str, EfficientViTSamConfig] = {
    "l0": EfficientViTSamConfig(depths=(1, 1, 1, 4, 4), neck_depth=4, **_L),
    "l1": EfficientViTSamConfig(depths=(1, 1, 1, 6, 6), neck_depth=8, **_L),
    "l2": EfficientViTSamConfig(depths=(1, 2, 2, 8, 8), neck_depth=12, **_L),
    "xl0": EfficientViTSamConfig(depths=(0, 1, 1, 2, 3, 3), neck_depth=6, **_XL),
    "xl1": EfficientViTSamConfig(depths=(1, 2, 2, 4, 6, 6), neck_depth=12, **_XL),
}


class EfficientViTBackbone(nn.Module):
    """EfficientViT large backbone: ``stages[i]`` halves the resolution (strides 2, 4, ..., 2**n).

    Stage 0 is a 3x3 stride-2 conv + BN + GELU followed by residual ``res`` blocks; every later stage
    opens with a stride-2 block without shortcut (``mb`` for attention stages, expand x4), followed by
    residual blocks of the stage's kind.
    """

    def __init__(self, cfg: EfficientViTSamConfig) -> None:
        super().__init__()
        w0 = cfg.widths[0]
        first = [ConvNormAct(3, w0, 3, 2, act=True)] + [
            Residual(conv_block(cfg.blocks[0], w0, w0, 1, cfg.expands[0], cfg.fewer_norm[0]))
            for _ in range(cfg.depths[0])
        ]
        stages = [OpList(first)]
        for i in range(1, len(cfg.widths)):
            kind, width, expand, fewer = cfg.blocks[i], cfg.widths[i], cfg.expands[i], cfg.fewer_norm[i]
            down_kind = kind if kind in ("mb", "fmb") else "mb"  # attention stages open with an MBConv
            down = conv_block(down_kind, cfg.widths[i - 1], width, 2, expand * 4, fewer)
            ops: list[nn.Module] = [Residual(down, identity=False)]
            for _ in range(cfg.depths[i]):
                if kind.startswith("att"):
                    ops.append(EfficientViTBlock(width, expand, scale=3 if kind == "att@3" else 5))
                else:
                    ops.append(Residual(conv_block(kind, width, width, 1, expand, fewer)))
            stages.append(OpList(ops))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Bx3xSxS -> every stage's output, stage i of shape B x widths[i] x S/2**(i+1) x S/2**(i+1)."""
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs


class SamNeck(nn.Module):
    """Fuse backbone stages into one Bx256x64x64 map (before the encoder's final LayerNorm2d).

    input_ops[j]: 1x1 conv + BN of backbone stage ``stage_ids[j]``, bicubic-resized (align_corners=False)
    to 64x64; the maps are summed, refined by residual FusedMBConv blocks (``middle``) and a 1x1 conv with
    bias (``output_ops``).
    """

    def __init__(self, cfg: EfficientViTSamConfig, width: int = EMBED_DIM) -> None:
        super().__init__()
        self.stage_ids = cfg.neck_stages
        self.input_ops = nn.ModuleList(OpList([ConvNormAct(cfg.widths[s], width)]) for s in cfg.neck_stages)
        refine = [conv_block("fmb", width, width, 1, cfg.neck_expand, False) for _ in range(cfg.neck_depth)]
        self.middle = OpList([Residual(block) for block in refine])
        self.output_ops = nn.ModuleList([OpList([ConvNormAct(width, width, 1, norm=False)])])

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Every backbone stage's output (as :class:`EfficientViTBackbone` returns) -> Bx256x64x64."""
        maps = []
        for stage, op in zip(self.stage_ids, self.input_ops, strict=True):
            x = op(features[stage])
            if x.shape[-2:] != (EMBED_SIDE, EMBED_SIDE):
                x = F.interpolate(x, size=(EMBED_SIDE, EMBED_SIDE), mode="bicubic", align_corners=False)
            maps.append(x)
        total = maps[-1]
        for x in reversed(maps[:-1]):  # official order: m0 + (m1 + m2)
            total = x + total
        return self.output_ops[0](self.middle(total))


class EfficientViTSamImageEncoder(nn.Module):
    """Bx3xSxS normalized, zero-padded image -> Bx256x64x64 SAM image embedding."""

    def __init__(self, cfg: EfficientViTSamConfig) -> None:
        super().__init__()
        self.backbone = EfficientViTBackbone(cfg)
        self.neck = SamNeck(cfg)
        self.norm = LayerNorm2d(EMBED_DIM, eps=NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.neck(self.backbone(x)))


def efficientvit_sam_image_encoder(variant: str) -> EfficientViTSamImageEncoder:
    """Encoder for ``variant`` in ``l0``, ``l1``, ``l2``, ``xl0``, ``xl1`` (official configurations)."""
    return EfficientViTSamImageEncoder(CONFIGS[variant])
