"""``build_model``: a registry name (and optionally a checkpoint) -> a ready model in eval mode."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import load_into, read_state_dict
from .modeling.fuse import fuse_modules
from .modeling.mask_decoder import MaskDecoder
from .modeling.sam import PromptableModel
from .registry import get_spec


def build_model(
    name: str,
    checkpoint: str | os.PathLike | Mapping[str, str | os.PathLike] | None = None,
    device: str | torch.device = "cpu",
    fuse: bool | None = None,
    **options: Any,
) -> PromptableModel:
    """Build a registered model in eval mode.

    ``checkpoint``: a file path, or ``"auto"`` to use the official file from the cache (downloading it
    if needed); loaded strictly. With no checkpoint the weights are random. Models whose official
    weights are several files (``spec.read_checkpoint``: MobileSAM-v2) also take a folder or a mapping
    of role -> file.
    ``fuse``: prepare for inference (:func:`prepare_for_inference`): fold BatchNorms and
    re-parameterisable branches into single convolutions, switch convolutions to channels-last memory
    and the mask decoder to its fast upscaling (same outputs to float rounding, 10-20% faster on CPU;
    the state_dict then no longer has the official keys). Default: fuse exactly
    when a checkpoint was loaded — pass ``fuse=False`` to train or fine-tune.
    ``options``: the model's options (``get_spec(name).options``), e.g. ``multimask_outputs=4`` for EdgeSAM.
    """
    spec = get_spec(name)
    model = spec.instantiate(**options)
    if checkpoint is not None and spec.read_checkpoint is not None:  # several files (a folder, a mapping)
        state = spec.read_checkpoint(checkpoint, **{**spec.options, **options})
        load_into(model, state, spec.name, str(checkpoint), convert=spec.convert_state_dict)
    elif checkpoint is not None:
        if str(checkpoint) == "auto":
            from .hub import fetch_checkpoint

            path = fetch_checkpoint(
                spec.name, spec.url, spec.checkpoint_filename, spec.sha256, member=spec.member
            )
        else:
            path = Path(checkpoint)
        load_into(model, read_state_dict(path), spec.name, str(path), convert=spec.convert_state_dict)
    model.eval()
    if fuse if fuse is not None else checkpoint is not None:
        prepare_for_inference(model)
    return model.to(device)


def prepare_for_inference(model: nn.Module) -> nn.Module:
    """In place: fold BatchNorms / re-parameterisable branches, use channels-last convolutions and the
    mask decoders' fast upscaling (``MaskDecoder.fast_upscaling``)."""
    fuse_modules(model.eval()).to(memory_format=torch.channels_last)
    model.channels_last = True
    for module in model.modules():
        if isinstance(module, MaskDecoder):
            module.fast_upscaling = True
    return model
