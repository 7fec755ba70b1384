"""``build_model``: a registry name (and optionally a checkpoint) -> a ready model in eval mode."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import load_into, read_state_dict
from .errors import InputError
from .identify import identify
from .modeling.fuse import FusedConv, fuse_modules
from .modeling.mask_decoder import MaskDecoder
from .modeling.sam import PromptableModel
from .modeling.transformer import Attention
from .precision import resolve as resolve_precision
from .precision import set_precision
from .registry import get_spec
from .utils.allocator import reuse_freed_memory


def build_model(
    name: str | None = None,
    checkpoint: str | os.PathLike | Mapping[str, str | os.PathLike] | None = None,
    device: str | torch.device = "cpu",
    fuse: bool | None = None,
    precision: str = "fp32",
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
    ``precision``: ``"fp32"`` (exact, the default), ``"bf16"`` (bfloat16 autocast in encode and decode,
    outputs float32; see :mod:`litesam.precision`) or ``"auto"`` (bf16 where the device has hardware
    for it, else fp32).
    ``options``: the model's options (``get_spec(name).options``), e.g. ``multimask_outputs=4`` for EdgeSAM.
    ``name`` None: the model is identified from the checkpoint file's keys and shapes
    (:func:`litesam.identify.identify`, which logs what it found).
    """
    if checkpoint is None:
        if name is None:
            raise InputError("build_model needs a model name, or a checkpoint file to identify it from")
        model = get_spec(name).instantiate(**options)
    elif name is not None and get_spec(name).read_checkpoint is not None:  # several files: folder, mapping
        spec = get_spec(name)
        state = spec.convert(spec.read_checkpoint(checkpoint, **{**spec.options, **options}))
        model = spec.instantiate(state, **options)
        load_into(model, state, spec.name, str(checkpoint))
    else:
        if name is None and str(checkpoint) == "auto":
            raise InputError("checkpoint='auto' needs a model name (the file to download depends on it)")
        if str(checkpoint) == "auto":
            from .hub import fetch_checkpoint

            spec = get_spec(name)
            path = fetch_checkpoint(
                spec.name, spec.url, spec.checkpoint_filename, spec.sha256, member=spec.member
            )
        else:
            path = Path(checkpoint)
        state = read_state_dict(path)
        spec = get_spec(name) if name is not None else identify(state, str(path)).spec
        state = spec.convert(state)
        model = spec.instantiate(state, **options)
        load_into(model, state, spec.name, str(path))
    model.eval()
    resolve_precision(precision, torch.device(device))  # a bad value fails before any work
    if fuse if fuse is not None else checkpoint is not None:
        prepare_for_inference(model)
    return set_precision(model.to(device), precision)


def prepare_for_inference(model: nn.Module) -> nn.Module:
    """In place: fold BatchNorms / re-parameterisable branches, use channels-last convolutions and the
    mask decoders' fast upscaling (``MaskDecoder.fast_upscaling``) and reassociated prompt-image
    attention (``Attention.reassociate``); :func:`reference_paths` switches the last two off for a
    while. Also keeps freed memory for reuse, process-wide
    (:func:`litesam.utils.allocator.reuse_freed_memory`; ``LITESAM_KEEP_FREED_MEMORY=0`` opts out)."""
    reuse_freed_memory()
    fuse_modules(model.eval()).to(memory_format=torch.channels_last)
    model.channels_last = True
    for module in model.modules():
        if isinstance(module, MaskDecoder):
            module.fast_upscaling = True
        if isinstance(module, Attention):
            module.reassociate = True
    return model


# The speed-only paths prepare_for_inference switches on, as (module type, flag): same results, but they
# branch on shapes in Python, which a traced graph (ONNX export) would freeze.
_FAST_PATHS = ((MaskDecoder, "fast_upscaling"), (Attention, "reassociate"), (FusedConv, "onednn"))
_DEFAULT = object()  # a flag not set on the instance: the class default applies


@contextmanager
def reference_paths(model: nn.Module) -> Iterator[None]:
    """Within the block, ``model`` computes with the reference paths (e.g. for tracing to ONNX); the
    flags are restored after it, including where they were the class defaults."""
    saved = []
    for module in model.modules():
        for kind, flag in _FAST_PATHS:
            if isinstance(module, kind):
                saved.append((module, flag, vars(module).get(flag, _DEFAULT)))
                setattr(module, flag, False)
    try:
        yield
    finally:
        for module, flag, value in saved:
            if value is _DEFAULT:
                delattr(module, flag)
            else:
                setattr(module, flag, value)
