"""Numeric precision of a model's encode/decode: exact float32 (the default) or bfloat16 autocast.

``build_model(..., precision="bf16")`` marks the model; :class:`~litesam.Predictor` then runs encode and
decode under ``torch.autocast`` with bfloat16: matrix products and convolutions in bf16 (AMX or
AVX512-BF16 through oneDNN on CPUs that have them, tensor cores on CUDA), the ops autocast keeps in
float32 (softmax, normalisation statistics, reductions) in float32, and every output (features, logits,
scores) handed back as float32, so masks are thresholded in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from .errors import InputError

PRECISIONS = ("fp32", "bf16", "auto")


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 matrix products have hardware support on ``device``: CUDA with bf16, or a CPU with
    AMX tiles or AVX512-BF16 (elsewhere oneDNN emulates bf16 and it is slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    return False


def resolve(precision: str, device: torch.device) -> str:
    """``"fp32"`` or ``"bf16"`` for a requested precision; ``"auto"`` is bf16 where it has hardware
    support (:func:`bf16_is_fast`), else fp32."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    return precision


def set_precision(model: Any, precision: str) -> Any:
    """Mark ``model`` (in place) to run in ``precision`` (``"fp32"``, ``"bf16"`` or ``"auto"``)."""
    model.precision = resolve(precision, model.device)
    return model


@contextlib.contextmanager
def autocast(model: Any) -> Iterator[None]:
    """The autocast context of ``model``'s precision (none for fp32)."""
    if getattr(model, "precision", "fp32") != "bf16":
        yield
        return
    with torch.autocast(device_type=model.device.type, dtype=torch.bfloat16):
        yield


def to_float32(value: Any) -> Any:
    """Floating tensors (also inside lists, tuples and dicts) as float32; everything else as it is."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: to_float32(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_float32(v) for v in value)
    return value
