"""Model size and cost, counted by the project: parameters and encoder FLOPs (on the meta device)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..registry import get_spec


@dataclass(frozen=True)
class ModelStats:
    encoder_params: int
    total_params: int
    encoder_flops: int  # multiply-add = 2 FLOPs; matmul/conv/attention only (elementwise ops are free)
    input_size: int


@contextmanager
def reference_formulation(model: nn.Module) -> Iterator[None]:
    """Run speed-only reformulations (e.g. the ViT's folded relative positions) in their plain form, so
    FLOP counts describe the architecture rather than litesam's way of computing it."""
    folded = [m for m in model.modules() if getattr(m, "fold_rel_pos", False)]
    for m in folded:
        m.fold_rel_pos = False
    try:
        yield
    finally:
        for m in folded:
            m.fold_rel_pos = True


@cache
def model_stats(name: str) -> ModelStats:
    """Parameters and encoder FLOPs for one image at the model's input size (no weights, no compute)."""
    spec = get_spec(name)
    with torch.device("meta"):
        model = spec.build(spec.preprocess)
    size = spec.preprocess.image_size
    with reference_formulation(model), FlopCounterMode(display=False) as counter:
        model.image_encoder(torch.empty(1, 3, size, size, device="meta"))
    return ModelStats(
        encoder_params=sum(p.numel() for p in model.image_encoder.parameters()),
        total_params=sum(p.numel() for p in model.parameters()),
        encoder_flops=counter.get_total_flops(),
        input_size=size,
    )
