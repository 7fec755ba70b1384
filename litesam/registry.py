"""The model zoo: one open registry of model specs (builder, official checkpoint, transform, options).

Everything else (``build_model``, the CLI, benchmarks, evaluation, the web app) asks this module.
Built-in entries live in one module per family under :mod:`litesam.zoo` (each exports
``MODELS: list[ModelSpec]``; a new file there is found without editing anything else). Third-party
packages add models with :func:`register_model`, or declare an entry point in the ``litesam.models``
group that names a ``ModelSpec``, a list of them, or a module with ``MODELS``.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any, Literal

import torch
from torch import nn

from .errors import InputError
from .utils.stats import ModelStats, model_stats
from .utils.transforms import ImageTransform

ENTRY_POINT_GROUP = "litesam.models"

Kind = Literal["promptable", "instance", "detector"]
StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ModelSpec:
    """One model of the zoo.

    - ``build(transform, **options)`` returns the architecture with no weights loaded.
    - ``url`` / ``sha256`` name the official checkpoint (``filename`` in the cache; ``member`` names the
      checkpoint inside a zip download), ``source`` the upstream repository.
    - ``transform``: the model's image transform (resize policy, pixel units, frames).
    - ``kind``: ``"promptable"`` (points/boxes -> masks, SAM-like), ``"instance"`` (all masks in one pass,
      prompts select among them) or ``"detector"`` (boxes for a promptable model).
    - ``options``: the builder's keyword options with their defaults (``build_model(name, **options)``).
    - ``convert_state_dict``: maps another official layout of the same weights (renamed keys, extra
      wrappers) to the model's keys before the strict load; never a way around strictness.
    - ``read_checkpoint(checkpoint, **options)``: for models whose official weights are several files
      (MobileSAM-v2): reads ``checkpoint`` (a folder, a mapping of role -> file, or ``"auto"``) into
      one state_dict with the model's keys, for the options the model was built with; ``url``,
      ``sha256`` and ``filename`` are then unused.
    - ``build_from_state_dict(state, transform, **options)``: for architectures whose widths only the
      checkpoint knows (pruned models): the unloaded model sized from the (converted) state_dict's
      shapes; a ValueError when the state_dict is not of this family. ``build_model`` uses it whenever a
      checkpoint is given; ``build`` (with the published widths) serves everything else.
    - ``official``: ``"package:builder"`` of the official PyTorch implementation, e.g.
      ``"segment_anything:build_sam_vit_b"``: a package with ``SamPredictor`` and
      ``SamAutomaticMaskGenerator`` whose ``builder()`` returns the model that strictly loads the unfused
      model's state_dict (``litesam bench --peers`` times it side by side on the same weights).
    """

    name: str
    build: Callable[..., nn.Module]
    source: str
    url: str | None = None
    sha256: str | None = None
    filename: str | None = None
    member: str | None = None
    transform: ImageTransform = field(default_factory=ImageTransform)
    description: str = ""
    kind: Kind = "promptable"
    options: Mapping[str, Any] = field(default_factory=dict)
    convert_state_dict: Callable[[StateDict], StateDict] | None = None
    read_checkpoint: Callable[..., StateDict] | None = None
    build_from_state_dict: Callable[..., nn.Module] | None = None
    official: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    @property
    def checkpoint_filename(self) -> str:
        if self.filename:
            return self.filename
        if self.url:
            return Path(self.url.split("?")[0]).name
        return f"{self.name}.pth"

    def instantiate(self, state: StateDict | None = None, **options: Any) -> nn.Module:
        """The unloaded model with ``options`` (InputError naming the known ones for any other); sized
        from ``state`` (already converted) by ``build_from_state_dict`` where the spec has one."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            known = ", ".join(f"{k}={v!r}" for k, v in self.options.items()) or "none"
            raise InputError(f"model {self.name!r} has no option {', '.join(unknown)} (options: {known})")
        options = {**self.options, **options}
        if state is not None and self.build_from_state_dict is not None:
            return self.build_from_state_dict(state, self.transform, **options)
        return self.build(self.transform, **options)

    def convert(self, state: StateDict) -> StateDict:
        """``state`` in the model's keys (``convert_state_dict`` applied where the spec has one)."""
        return dict(state) if self.convert_state_dict is None else self.convert_state_dict(dict(state))

    def stats(self) -> ModelStats:
        """Parameters and encoder GFLOPs at the input size, counted on the meta device (no weights)."""
        with torch.device("meta"):
            model = self.instantiate()
        return model_stats(model, self.transform.image_size)


_REGISTRY: dict[str, ModelSpec] | None = None


def register_model(spec: ModelSpec, replace: bool = False) -> ModelSpec:
    """Add ``spec`` to the zoo (``replace=True`` to redefine a name); returns it."""
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"register_model takes a ModelSpec, got {type(spec).__name__}")
    specs = _load()
    if spec.name in specs and not replace:
        raise ValueError(f"model {spec.name!r} is registered twice")
    specs[spec.name] = spec
    return spec


def _specs_of(obj: Any) -> Iterable[ModelSpec]:
    if isinstance(obj, ModuleType):
        obj = obj.MODELS
    return [obj] if isinstance(obj, ModelSpec) else list(obj)


def _load() -> dict[str, ModelSpec]:
    """Fill the registry once: the built-in zoo modules, then the ``litesam.models`` entry points."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = {}
        from . import zoo

        sources: list[Any] = [
            importlib.import_module(f"{zoo.__name__}.{m.name}") for m in pkgutil.iter_modules(zoo.__path__)
        ]
        sources += [ep.load() for ep in entry_points(group=ENTRY_POINT_GROUP)]
        for source in sources:
            for spec in _specs_of(source):
                register_model(spec)
    return _REGISTRY


def list_models(kind: Kind | None = None) -> list[str]:
    """Names of all registered models (of one ``kind`` if given)."""
    return [name for name, spec in _load().items() if kind is None or spec.kind == kind]


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; an InputError with close matches if unknown."""
    specs = _load()
    if name not in specs:
        close = difflib.get_close_matches(name, specs, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise InputError(f"unknown model {name!r}.{hint} Known models: {', '.join(specs)}")
    return specs[name]
