"""Model size and cost, counted by the project: parameters and encoder FLOPs (on the meta device)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class ModelStats:
    encoder_params: int
    total_params: int
    encoder_flops: int  # multiply-add = 2 FLOPs; matmul/conv/attention only (elementwise ops are free)
    input_size: int


@contextmanager
def reference_formulation(model: nn.Module) -> Iterator[None]:
    """Run speed-only reformulations (the ViT's folded relative positions, and the fast paths that
    :func:`litesam.build.reference_paths` switches off, e.g. fused convolutions) in their plain form, so
    FLOP counts describe the architecture rather than litesam's way of computing it."""
    from ..build import reference_paths  # build imports the registry, which imports this module

    folded = [m for m in model.modules() if getattr(m, "fold_rel_pos", False)]
    for m in folded:
        m.fold_rel_pos = False
    try:
        with reference_paths(model):
            yield
    finally:
        for m in folded:
            m.fold_rel_pos = True


def model_stats(model: nn.Module, input_size: int) -> ModelStats:
    """Parameters and encoder FLOPs of ``model`` (best built on the meta device: no weights, no compute)
    for one ``input_size`` square image."""
    device = next(model.parameters()).device
    with reference_formulation(model), FlopCounterMode(display=False) as counter:
        model.encode(torch.empty(1, 3, input_size, input_size, device=device))
    encoder = getattr(model, "image_encoder", model)  # one-pass models (FastSAM) are all encoder
    return ModelStats(
        encoder_params=sum(p.numel() for p in encoder.parameters()),
        total_params=sum(p.numel() for p in model.parameters()),
        encoder_flops=counter.get_total_flops(),
        input_size=input_size,
    )
