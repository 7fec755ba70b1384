"""``build_model``: a registry name (and optionally a checkpoint) -> a ready model in eval mode."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .checkpoint import load_into, read_state_dict
from .modeling.sam import Sam
from .registry import get_spec


def build_model(
    name: str,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> Sam:
    """Build a registered model; load ``checkpoint`` (a file path, or ``"auto"`` to download the
    official file into the cache) strictly. With no checkpoint the weights are random."""
    spec = get_spec(name)
    model = spec.build(spec.preprocess)
    if checkpoint is not None:
        if str(checkpoint) == "auto":
            from .hub import fetch_checkpoint

            path = fetch_checkpoint(
                spec.name, spec.url, spec.checkpoint_filename, spec.sha256, member=spec.member
            )
        else:
            path = Path(checkpoint)
        load_into(model, read_state_dict(path), spec.name, str(path))
    return model.to(device).eval()
