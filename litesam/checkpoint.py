"""Loading checkpoint files into models: unwrap common containers, strict key/shape checks, clear errors."""

from __future__ import annotations

import collections
import json
import os
import pickle
import re
import types
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import LitesamError

_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "module")
_SHOW = 5
# How torch's safe unpickler names a global it refuses ("... unsupported GLOBAL posix.system whose ...").
_BLOCKED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


class CheckpointError(LitesamError, RuntimeError):
    """A checkpoint file is unreadable or does not fit the model."""


def load_checkpoint(path: str | os.PathLike) -> Any:
    """Unpickle a checkpoint file safely (``torch.load(..., weights_only=True)``: tensors and plain
    containers only, no code runs) onto the CPU; every failure is a :class:`CheckpointError` saying what
    is wrong with the file."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): an interrupted download?")
    if is_safetensors(path):
        return read_safetensors(path)
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of garbage before failing
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror}") from e
    except pickle.UnpicklingError as e:
        blocked = _BLOCKED_GLOBAL.search(str(e))
        reader = _PICKLED_MODEL_READERS.get(blocked[1].split(".")[0]) if blocked else None
        if reader is not None:
            return reader(path)
        if is_plain_pickle(path):  # not a torch file: a pickled mapping of numpy arrays (TAP's .pkl)?
            return read_array_pickle(path)
        raise CheckpointError(_unreadable(path, e)) from e
    except Exception as e:  # the unpickler raises many types on garbage input
        raise CheckpointError(_unreadable(path, e)) from e


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def is_safetensors(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts like a safetensors file (8-byte little-endian header size, then JSON)."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file -> its tensors (on the CPU), read directly: a JSON table of dtypes, shapes
    and byte offsets, then raw little-endian data; nothing in it can run code."""
    path = Path(path)
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    try:
        table = json.loads(data[8 : 8 + size])
        body = memoryview(data)[8 + size :]
        out = {}
        for name, entry in table.items():
            if name == "__metadata__":
                continue
            start, end = entry["data_offsets"]
            dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
            if not 0 <= start <= end <= len(body):
                raise ValueError(f"tensor {name} lies outside the file")
            flat = (
                torch.frombuffer(bytearray(body[start:end]), dtype=dtype)
                if end > start
                else torch.empty(0, dtype=dtype)
            )
            out[name] = flat.reshape(entry["shape"])
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{path} is not a valid safetensors file (truncated or damaged?): {e}") from e
    return out


class _Inert:
    """Stand-in for a pickled module class: keeps the pickled attribute dict, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}


def _inert_getattr(*args: Any) -> None:
    """Stand-in for ``getattr`` (ultralytics pickles bound forward methods): yields nothing."""


class _ModuleUnpickler(pickle.Unpickler):
    """Unpickles a whole pickled model without its package and without running any of its code:
    tensors, storages and plain containers are rebuilt; every class of ``packages`` or ``torch.nn``
    becomes an inert attribute holder; any other global is refused."""

    packages: tuple[str, ...] = ()
    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("__builtin__", "set"): set,
        ("torch", "Size"): torch.Size,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("builtins", "getattr"): _inert_getattr,
        ("__builtin__", "getattr"): _inert_getattr,
        ("torch", "device"): _inert_getattr,  # DataParallel's device attributes
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module.split(".")[0] in self.packages or module.startswith(
            ("torch.nn.modules.", "torch.nn.parallel.")
        ):
            return _Inert
        raise pickle.UnpicklingError(f"refusing the global {module}.{name}")


def read_pickled_model(path: str | os.PathLike, packages: tuple[str, ...], what: str) -> Any:
    """``torch.load`` of a file holding pickled modules of ``packages``, through the restricted
    unpickler (module objects become :class:`_Inert`); CheckpointError naming ``what`` on failure."""
    unpickler = type("Unpickler", (_ModuleUnpickler,), {"packages": packages})
    restricted = types.ModuleType("litesam_restricted_pickle")
    restricted.Unpickler = unpickler  # type: ignore[attr-defined]
    try:  # weights_only=False only hands the choice of globals to the restricted unpickler
        return torch.load(path, map_location="cpu", pickle_module=restricted, weights_only=False)
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable {what}: {e}") from e


def read_ultralytics_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """An ultralytics checkpoint (``{'model': pickled YOLO model, ...}``, fp16, as FastSAM and MobileSAM-v2
    ship) -> ``{"model": float32 state_dict}`` with the model's ``model.<i>.*`` keys, read by a restricted
    unpickler (no ultralytics, no code from the file); CheckpointError when the file is anything else."""
    obj = read_pickled_model(path, ("ultralytics",), "ultralytics checkpoint")
    net = obj.get("ema") or obj.get("model") if isinstance(obj, dict) else None
    if not isinstance(net, _Inert):
        raise CheckpointError(f"{path} holds no pickled ultralytics model under 'model' or 'ema'")
    state = {k: v.float() if v.is_floating_point() else v for k, v in _module_tensors(net, "").items()}
    if not state:
        raise CheckpointError(f"{path} holds an ultralytics model without weights")
    return {"model": state}


def read_pickled_sam(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A whole pickled SAM module (``torch.save(model)`` of SlimSAM's ``segment_anything_kd`` classes, the
    image encoder possibly wrapped in DataParallel) -> its state_dict with ``image_encoder.*`` keys, read
    by the restricted unpickler (no SlimSAM classes imported, no code from the file)."""
    net = read_pickled_model(path, ("segment_anything_kd",), "pickled SAM model")
    if not isinstance(net, _Inert):
        raise CheckpointError(f"{path} holds no pickled SAM model")
    state = _module_tensors(net, "")
    state = {k.replace("image_encoder.module.", "image_encoder.", 1): v for k, v in state.items()}
    if not state:
        raise CheckpointError(f"{path} holds a SAM model without weights")
    return state


def is_plain_pickle(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a bare pickle (protocol 2+), not a torch zip file nor torch's legacy format
    (which starts with a pickled magic number, a LONG1 opcode)."""
    with open(path, "rb") as f:
        head = f.read(3)
    return len(head) == 3 and head[0] == 0x80 and head[2] != 0x8A


def _array_from_buffer(buffer: Any, dtype: Any, shape: tuple[int, ...], order: str) -> np.ndarray:
    """numpy's protocol-5 array constructor, for plain numeric buffers only."""
    return np.frombuffer(buffer, dtype=_numeric_dtype(dtype)).reshape(shape, order=order)


def _numeric_dtype(*args: Any) -> np.dtype:
    """``numpy.dtype(...)`` refusing anything that can hold Python objects."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"refusing an array of Python objects (dtype {dtype})")
    return dtype


def _empty_array(cls: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's protocol-2 array constructor (the data follow in ``__setstate__``), plain arrays only."""
    if cls is not np.ndarray:
        raise pickle.UnpicklingError(f"refusing the array subclass {cls!r}")
    return np.ndarray(shape, dtype=_numeric_dtype(dtype))


def _latin1(text: str, encoding: str) -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for raw bytes."""
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"refusing the encoding {encoding!r}")
    return text.encode("latin1")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles mappings of numpy arrays and nothing else: the globals numpy's array pickling uses (each
    replaced by a checked constructor) and OrderedDict; any other global is refused, nothing else runs."""

    _ALLOWED: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("numpy", "dtype"): _numeric_dtype,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy.core.multiarray", "_reconstruct"): _empty_array,
        ("numpy._core.multiarray", "_reconstruct"): _empty_array,
        ("numpy.core.numeric", "_frombuffer"): _array_from_buffer,
        ("numpy._core.numeric", "_frombuffer"): _array_from_buffer,
        ("_codecs", "encode"): _latin1,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"refusing the global {module}.{name}")


def read_array_pickle(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A pickled mapping name -> numpy array (TAP's released ``.pkl`` files) -> tensors, read by
    :class:`_ArrayUnpickler` (numbers only: no class is imported, no code from the file runs)."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f).load()
    except Exception as e:  # the unpickler raises many types on garbage input
        raise CheckpointError(f"{path} is not a pickle of numpy arrays: {e}") from e
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, np.ndarray) and v.dtype.kind in "biuf" for k, v in obj.items()
    ):
        raise CheckpointError(f"{path} is a pickle, but not a mapping of names to numeric arrays")
    return {k: torch.from_numpy(v if v.flags.writeable else v.copy()) for k, v in obj.items()}


_PICKLED_MODEL_READERS = {"ultralytics": read_ultralytics_checkpoint, "segment_anything_kd": read_pickled_sam}


def _module_tensors(module: _Inert, prefix: str) -> dict[str, torch.Tensor]:
    """The state_dict of a pickled module tree of stand-ins (parameters, persistent buffers, children)."""
    state = module.state
    skip = state.get("_non_persistent_buffers_set") or set()
    out = {}
    for group in ("_parameters", "_buffers"):
        for name, tensor in (state.get(group) or {}).items():
            if isinstance(tensor, torch.Tensor) and name not in skip:
                out[prefix + name] = tensor.detach()
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, _Inert):
            out.update(_module_tensors(child, f"{prefix}{name}."))
    return out


def _unreadable(path: Path, error: Exception) -> str:
    """Why ``torch.load`` failed on ``path``, in words for the user: a refused global is named; torch's
    advice to load with ``weights_only=False`` (which runs whatever the file holds) is left out."""
    text = str(error)
    blocked = _BLOCKED_GLOBAL.search(text)
    if isinstance(error, pickle.UnpicklingError) and blocked:
        return (
            f"{path} holds Python objects, not only tensors: litesam refuses to load the global"
            f" {blocked[1]} (loading it could run code; a model checkpoint holds tensors only)"
        )
    lines = [line.strip() for line in text.splitlines() if line.strip() and "weights_only" not in line]
    detail = next((line for line in lines if "Unsupported" in line), lines[0] if lines else "")
    detail = detail.split(". ")[0] or type(error).__name__
    return f"{path} is not a PyTorch checkpoint, or it is corrupt (truncated or damaged download?): {detail}"


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint file safely (:func:`load_checkpoint`) and return its plain state_dict.

    Accepts a bare state_dict and the usual wrappers (``{"model": ...}``, ``{"state_dict": ...}``,
    DataParallel/DDP ``module.`` prefixes).
    """
    return unwrap_state_dict(load_checkpoint(path), source=str(path))


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
