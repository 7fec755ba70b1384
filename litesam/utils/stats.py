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


# flags of speed-only reformulations that have a plain form: the ViT's folded relative positions, the
# convolutions fused with their activation (oneDNN ops that a FLOP counter does not know)
_REFORMULATIONS = ("fold_rel_pos", "onednn")


@contextmanager
def reference_formulation(model: nn.Module) -> Iterator[None]:
    """Run speed-only reformulations (e.g. the ViT's folded relative positions, fused convolutions) in
    their plain form, so FLOP counts describe the architecture rather than litesam's way of computing it."""
    switched = [(m, flag) for m in model.modules() for flag in _REFORMULATIONS if getattr(m, flag, False)]
    for m, flag in switched:
        setattr(m, flag, False)
    try:
        yield
    finally:
        for m, flag in switched:
            setattr(m, flag, True)


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
