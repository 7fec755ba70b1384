"""The exported files the ONNX Runtime / OpenVINO backends run, cached under ``$LITESAM_HOME/runtimes``.

One folder per model identity (its class, options and weights: :func:`model_identity`); in it one file
per format and precision (``encoder.onnx``, ``encoder.int8.onnx``, ``openvino/encoder.xml``, ...) and one
prompt decoder per prompt kind, each made once: the first process takes a lock file and writes the file
atomically, the others wait for it.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .. import prompts
from ..export import graphs
from ..hub import cache_dir
from ..utils.io import release_lock, try_lock

EXPORT_VERSION = 1  # bump when the exported graphs change: older cache entries are then not used
_WAIT_S = 0.2


def model_identity(model: nn.Module) -> str:
    """SHA-256 (hex) of what an export depends on: the module tree (classes and plain settings such as
    EdgeSAM's ``multimask_outputs``), the source files of those classes and of the traced wrappers (a
    changed model or export code exports anew), the transform and every weight."""
    h = hashlib.sha256(f"litesam-export-{EXPORT_VERSION}\n{model.transform!r}\n".encode())
    sources = {sys.modules[type(m).__module__].__file__ for m in model.modules()}
    sources |= {graphs.__file__, prompts.__file__}
    for path in sorted(p for p in sources if p):
        h.update(Path(path).read_bytes())
    for name, module in model.named_modules():
        settings = sorted(
            (k, repr(v))
            for k, v in vars(module).items()
            if not k.startswith("_") and isinstance(v, bool | int | float | str | tuple)
        )
        h.update(f"{name}:{type(module).__qualname__}:{settings}\n".encode())
    for key, value in model.state_dict().items():
        h.update(f"{key}:{value.dtype}:{tuple(value.shape)}\n".encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def model_folder(model: nn.Module) -> Path:
    """``$LITESAM_HOME/runtimes/<class>-<identity>``: the cache folder of ``model``'s exports."""
    return cache_dir() / "runtimes" / f"{type(model).__name__.lower()}-{model_identity(model)[:20]}"


def cached_file(path: Path, make: Callable[[], object], timeout_s: float = 3600.0) -> Path:
    """``path``, made by ``make()`` (which must create it atomically, last of its files) unless it
    exists; one process at a time makes it (lock file ``<path>.lock``), the others wait."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if try_lock(lock):
            try:
                if not path.exists():
                    make()
            finally:
                release_lock(lock)
        elif time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s:.0f} s for another process to write {path} ({lock})")
        else:
            time.sleep(_WAIT_S)
    return path
