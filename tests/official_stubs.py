"""Small stand-ins for torchvision and timm so the official PyPI packages import with CPU-only torch.

``segment-anything`` and ``mobilesam-mirror`` (test oracles) import a few names from torchvision and
timm, neither of which installs here. Each stand-in does what the official function does on the
inputs those packages pass; nothing here is litesam code.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import torch
from PIL import Image


def _resize(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    h, w = size  # torchvision takes (h, w); its PIL path resizes bilinearly
    return img.resize((w, h), Image.BILINEAR)


def _to_pil_image(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.asarray(arr))


def _box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Greedy NMS per category, like torchvision's CPU kernel: keep in descending score order."""
    order = torch.sort(scores, descending=True, stable=True).indices
    keep: list[int] = []
    suppressed = torch.zeros(len(scores), dtype=torch.bool)
    area = _box_area(boxes)
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        lt = torch.maximum(boxes[i, :2], boxes[:, :2])
        rb = torch.minimum(boxes[i, 2:], boxes[:, 2:])
        inter = (rb - lt).clamp(min=0).prod(dim=1)
        iou = inter / (area[i] + area - inter)
        suppressed |= (iou > iou_threshold) & (idxs == idxs[i])
    return torch.tensor(keep, dtype=torch.int64)


def _module(name: str, **attrs) -> types.ModuleType:
    mod = sys.modules.get(name) or types.ModuleType(name)
    for key, value in attrs.items():
        setattr(mod, key, value)
    sys.modules[name] = mod
    return mod


def install() -> None:
    """Register the stand-in modules in ``sys.modules`` (idempotent)."""
    if "torchvision" in sys.modules and not getattr(sys.modules["torchvision"], "_litesam_stub", False):
        return  # a real torchvision is importable: use it
    _module("torchvision", _litesam_stub=True)
    _module("torchvision.transforms")
    _module("torchvision.transforms.functional", resize=_resize, to_pil_image=_to_pil_image)
    _module("torchvision.ops")
    _module("torchvision.ops.boxes", batched_nms=_batched_nms, box_area=_box_area)

    def to_2tuple(x):
        return tuple(x) if isinstance(x, (tuple, list)) else (x, x)

    class DropPath(torch.nn.Identity):
        def __init__(self, drop_prob: float = 0.0) -> None:
            super().__init__()
            self.drop_prob = drop_prob

    _module("timm")
    _module("timm.models")
    _module(
        "timm.models.layers",
        DropPath=DropPath,
        to_2tuple=to_2tuple,
        trunc_normal_=torch.nn.init.trunc_normal_,
    )
    _module("timm.models.registry", register_model=lambda fn: fn)
