"""YOLOv8 in plain torch: the detection / instance-segmentation network of FastSAM and of MobileSAM-v2's
object-aware model (no ultralytics needed).

Module and attribute names are ultralytics' (``model.<i>.cv1.conv.weight``, ...), so the official
checkpoints' weights load strictly. The layer graph is the ``yolov8-seg.yaml`` one; a scale (n/s/m/l/x)
sets depth and width, and :func:`yolo_scale_of` reads the scale back from a state_dict's tensor shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .fuse import fuse_conv_bn


@dataclass(frozen=True)
class YoloScale:
    """Depth multiple (blocks per C2f), width multiple (channels) and channel cap of one YOLOv8 scale."""

    depth: float
    width: float
    max_channels: int


SCALES = {
    "n": YoloScale(0.33, 0.25, 1024),
    "s": YoloScale(0.33, 0.50, 1024),
    "m": YoloScale(0.67, 0.75, 768),
    "l": YoloScale(1.00, 1.00, 512),
    "x": YoloScale(1.00, 1.25, 512),
}
STRIDES = (8, 16, 32)


class Conv(nn.Module):
    """Conv2d (no bias, 'same' padding) + BatchNorm (eps 1e-3) + SiLU."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def fused(self) -> nn.Module:
        """The same function with BatchNorm folded into the convolution."""
        return nn.Sequential(fuse_conv_bn(self.conv, self.bn), nn.SiLU())


class Bottleneck(nn.Module):
    """Two 3x3 Convs, with a residual connection when ``shortcut`` and the widths agree."""

    def __init__(self, c1: int, c2: int, shortcut: bool) -> None:
        super().__init__()
        self.cv1 = Conv(c1, c2, 3)
        self.cv2 = Conv(c2, c2, 3)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP block with 2 convolutions: split, n bottlenecks on one half, concatenate every stage, fuse."""

    def __init__(self, c1: int, c2: int, n: int, shortcut: bool) -> None:
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        for block in self.m:
            y.append(block(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained 5x5 max-pools, concatenated with their input."""

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        self.cv1 = Conv(c1, c1 // 2, 1)
        self.cv2 = Conv(c1 // 2 * 4, c2, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class DFL(nn.Module):
    """Distribution focal loss decoding: the expected bin of a softmax over ``reg_max`` bins per side.

    ``conv.weight`` (1 x reg_max x 1 x 1) holds the bin values (``arange(reg_max)`` in every checkpoint).
    """

    def __init__(self, reg_max: int) -> None:
        super().__init__()
        self.reg_max = reg_max
        self.conv = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(reg_max, dtype=torch.float).view(1, reg_max, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Bx(4*reg_max)xN logits -> Bx4xN distances (left, top, right, bottom) in stride units."""
        b, _, n = x.shape
        return self.conv(x.view(b, 4, self.reg_max, n).transpose(2, 1).softmax(1)).view(b, 4, n)


class Proto(nn.Module):
    """Prototype masks: Conv3x3, 2x transposed-conv upsampling, Conv3x3, Conv1x1 to ``c2`` prototypes."""

    def __init__(self, c1: int, c_: int, c2: int) -> None:
        super().__init__()
        self.cv1 = Conv(c1, c_, 3)
        self.upsample = nn.ConvTranspose2d(c_, c_, 2, 2, 0, bias=True)
        self.cv2 = Conv(c_, c_, 3)
        self.cv3 = Conv(c_, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(self.cv2(self.upsample(self.cv1(x))))


def _branch(c_in: int, c_mid: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(Conv(c_in, c_mid, 3), Conv(c_mid, c_mid, 3), nn.Conv2d(c_mid, c_out, 1))


class Head(nn.Module):
    """The Detect head (``cv2`` box-bin logits, ``cv3`` class logits per level), plus the Segment head's
    mask coefficients ``cv4`` and prototype net ``proto`` when ``nm`` > 0."""

    def __init__(self, nc: int, ch: tuple[int, ...], reg_max: int = 16, nm: int = 0, npr: int = 0) -> None:
        super().__init__()
        self.nc, self.reg_max, self.nm = nc, reg_max, nm
        c2, c3 = max(16, ch[0] // 4, reg_max * 4), max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(_branch(c, c2, 4 * reg_max) for c in ch)
        self.cv3 = nn.ModuleList(_branch(c, c3, nc) for c in ch)
        self.dfl = DFL(reg_max)
        if nm:
            self.proto = Proto(ch[0], npr, nm)
            self.cv4 = nn.ModuleList(_branch(c, max(ch[0] // 4, nm), nm) for c in ch)

    def forward(self, feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """P3/P4/P5 features -> ``head_raw_p{3,4,5}`` (Bx(4*reg_max+nc)xhxw logits per level), ``pred``
        (Bx(4+nc+nm)xN: xywh boxes in input pixels, sigmoid class scores, mask coefficients; anchors
        row-major per level, levels in order) and, when segmenting, ``protos`` (BxnmxH/4xW/4)."""
        out = {}
        raw = [torch.cat((box(f), cls(f)), 1) for f, box, cls in zip(feats, self.cv2, self.cv3, strict=True)]
        for level, r in enumerate(raw, start=3):
            out[f"head_raw_p{level}"] = r
        b = feats[0].shape[0]
        flat = torch.cat([r.view(b, r.shape[1], -1) for r in raw], 2)
        box, cls = flat.split((4 * self.reg_max, self.nc), 1)
        anchors, strides = make_anchors(feats)
        parts = [dist_to_xywh(self.dfl(box), anchors) * strides, cls.sigmoid()]
        if self.nm:
            out["protos"] = self.proto(feats[0])
            coefs = [m(f).view(b, self.nm, -1) for f, m in zip(feats, self.cv4, strict=True)]
            parts.append(torch.cat(coefs, 2))
        out["pred"] = torch.cat(parts, 1)
        return out


def make_anchors(feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres (2xN, (x, y) in stride units) and their strides (1xN) for the levels' grids."""
    points, strides = [], []
    for f, stride in zip(feats, STRIDES, strict=True):
        h, w = f.shape[-2:]
        sy, sx = torch.meshgrid(
            torch.arange(h, device=f.device, dtype=f.dtype) + 0.5,
            torch.arange(w, device=f.device, dtype=f.dtype) + 0.5,
            indexing="ij",
        )
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        strides.append(torch.full((h * w, 1), stride, device=f.device, dtype=f.dtype))
    return torch.cat(points).T, torch.cat(strides).T


def dist_to_xywh(dist: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Bx4xN (left, top, right, bottom) distances from 2xN anchor points -> Bx4xN (cx, cy, w, h)."""
    lt, rb = dist.chunk(2, 1)
    x1y1, x2y2 = anchors[None] - lt, anchors[None] + rb
    return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1)


def _channels(c: int, scale: YoloScale) -> int:
    return math.ceil(min(c, scale.max_channels) * scale.width / 8) * 8


class YOLOv8(nn.Module):
    """The yolov8(-seg) graph: backbone (Conv, C2f, SPPF), PAN neck, and the head as layer 22.

    ``nm`` > 0 builds the Segment head (``nm`` mask coefficients, prototype width 256 scaled);
    ``nm`` = 0 the plain Detect head. ``reg_max``: box-regression bins per side (16; 26 in MobileSAM-v2's
    object-aware model). Input Bx3xHxW with H, W multiples of 32, RGB in [0, 1].
    """

    def __init__(self, scale: str = "s", nc: int = 1, nm: int = 32, reg_max: int = 16) -> None:
        super().__init__()
        s = SCALES[scale]
        c = {k: _channels(k, s) for k in (64, 128, 256, 512, 1024)}

        def n(blocks: int) -> int:
            return max(round(blocks * s.depth), 1)

        self.model = nn.ModuleList(
            [
                Conv(3, c[64], 3, 2),
                Conv(c[64], c[128], 3, 2),
                C2f(c[128], c[128], n(3), True),
                Conv(c[128], c[256], 3, 2),
                C2f(c[256], c[256], n(6), True),
                Conv(c[256], c[512], 3, 2),
                C2f(c[512], c[512], n(6), True),
                Conv(c[512], c[1024], 3, 2),
                C2f(c[1024], c[1024], n(3), True),
                SPPF(c[1024], c[1024]),
                nn.Upsample(scale_factor=2.0, mode="nearest"),
                nn.Identity(),  # Concat with layer 6
                C2f(c[1024] + c[512], c[512], n(3), False),
                nn.Upsample(scale_factor=2.0, mode="nearest"),
                nn.Identity(),  # Concat with layer 4
                C2f(c[512] + c[256], c[256], n(3), False),
                Conv(c[256], c[256], 3, 2),
                nn.Identity(),  # Concat with layer 12
                C2f(c[256] + c[512], c[512], n(3), False),
                Conv(c[512], c[512], 3, 2),
                nn.Identity(),  # Concat with layer 9
                C2f(c[512] + c[1024], c[1024], n(3), False),
                Head(nc, (c[256], c[512], c[1024]), reg_max, nm, _channels(256, s) if nm else 0),
            ]
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Bx3xHxW in [0, 1] -> the head's outputs (see :meth:`Head.forward`)."""
        m = self.model
        y: dict[int, torch.Tensor] = {}
        for i in range(10):
            x = y[i] = m[i](x)
        x = y[12] = m[12](torch.cat((m[10](x), y[6]), 1))
        x = y[15] = m[15](torch.cat((m[13](x), y[4]), 1))
        x = y[18] = m[18](torch.cat((m[16](x), y[12]), 1))
        x = y[21] = m[21](torch.cat((m[19](x), y[9]), 1))
        return m[22]([y[15], y[18], y[21]])


def yolo_scale_of(state: dict[str, torch.Tensor]) -> str | None:
    """The YOLOv8 scale (n/s/m/l/x) whose widths and depths a ``model.<i>.*`` state_dict has, or None."""
    stem = state.get("model.0.conv.weight")
    sppf = state.get("model.9.cv2.conv.weight")
    if stem is None or sppf is None:
        return None
    blocks = len({k.split(".")[3] for k in state if k.startswith("model.2.m.")})
    for name, s in SCALES.items():
        widths = (_channels(64, s), _channels(1024, s))
        if widths == (stem.shape[0], sppf.shape[0]) and max(round(3 * s.depth), 1) == blocks:
            return name
    return None

