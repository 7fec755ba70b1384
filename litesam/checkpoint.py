"""Loading checkpoint files into models: unwrap common containers, strict key/shape checks, clear errors."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "module")
_SHOW = 5


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable or does not fit the model."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file (``weights_only=True``) and return its plain state_dict.

    Accepts a bare state_dict and the usual wrappers (``{"model": ...}``, ``{"state_dict": ...}``,
    DataParallel/DDP ``module.`` prefixes).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): an interrupted download?")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler raises many types on garbage input
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, pickle.UnpicklingError) and "Weights only load failed" in str(e):
            reason = next((line for line in str(e).splitlines() if "Unsupported" in line), first)
            raise CheckpointError(
                f"{path} holds objects other than tensors and cannot be loaded safely "
                f"(weights_only=True): {reason.strip()}"
            ) from e
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (truncated or corrupt download?): {first}"
        ) from e
    return unwrap_state_dict(obj, source=str(path))


def unwrap_state_dict(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Dig the tensor mapping out of common checkpoint containers and strip ``module.`` prefixes."""
    for _ in range(3):
        if isinstance(obj, Mapping) and not _is_state_dict(obj):
            inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not _is_state_dict(obj):
        kind = type(obj).__name__
        keys = list(obj)[:_SHOW] if isinstance(obj, Mapping) else []
        raise CheckpointError(f"{source} does not contain a state_dict (found a {kind} with keys {keys})")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _is_state_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def load_into(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    model_name: str,
    source: str,
    convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> None:
    """Strictly load ``state`` into ``model``; any missing/unexpected key or shape mismatch is an error."""
    state = dict(state)
    if convert is not None:
        state = convert(state)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (first: {', '.join(missing[:_SHOW])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:_SHOW])})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (first: {'; '.join(mismatched[:_SHOW])})")
    if problems:
        raise CheckpointError(
            f"{source} does not fit model {model_name!r}: "
            + "; ".join(problems)
            + ". Is this the checkpoint of another model?"
        )
    model.load_state_dict(state, strict=True)
