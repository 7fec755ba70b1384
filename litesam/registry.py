"""The model zoo: one registry of name -> builder, official checkpoint, preprocessing and source.

Everything else (``build_model``, the CLI, benchmarks, the web app) asks this module. Entries live in
one module per model family under :mod:`litesam.zoo`; each exports ``MODELS: list[ModelSpec]``.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from .modeling.sam import SAM_PIXEL_MEAN, SAM_PIXEL_STD

# Family modules in litesam/zoo/, in the order `litesam models` lists them.
FAMILIES: tuple[str, ...] = (
    "sam",
    "mobile_sam",
    "repvit_sam",
    "edge_sam",
    "efficientvit_sam",
    "efficient_sam",
)


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the encoder's input: longest side resized to ``image_size`` (PIL bilinear on
    uint8), ``(x - pixel_mean) / pixel_std`` on 0-255 RGB, zero-padded bottom/right to a square."""

    image_size: int = 1024
    pixel_mean: tuple[float, float, float] = SAM_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = SAM_PIXEL_STD


@dataclass(frozen=True)
class ModelSpec:
    """One model of the zoo.

    ``build(preprocess)`` returns the architecture with no weights loaded; ``url``/``sha256`` name the
    official checkpoint file (``filename`` in the cache; ``member`` names the checkpoint inside a zip
    download), ``source`` the upstream repository.
    """

    name: str
    build: Callable[[Preprocess], nn.Module]
    source: str
    url: str | None = None
    sha256: str | None = None
    filename: str | None = None
    member: str | None = None
    preprocess: Preprocess = field(default_factory=Preprocess)
    description: str = ""

    @property
    def checkpoint_filename(self) -> str:
        if self.filename:
            return self.filename
        if self.url:
            return Path(self.url.split("?")[0]).name
        return f"{self.name}.pth"


_REGISTRY: dict[str, ModelSpec] | None = None


def _load() -> dict[str, ModelSpec]:
    global _REGISTRY
    if _REGISTRY is None:
        specs: dict[str, ModelSpec] = {}
        for family in FAMILIES:
            for spec in importlib.import_module(f"litesam.zoo.{family}").MODELS:
                if spec.name in specs:
                    raise RuntimeError(f"model {spec.name!r} is registered twice")
                specs[spec.name] = spec
        _REGISTRY = specs
    return _REGISTRY


def list_models() -> list[str]:
    """Names of all registered models."""
    return list(_load())


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; a ValueError with close matches if unknown."""
    specs = _load()
    if name not in specs:
        close = difflib.get_close_matches(name, specs, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} Known models: {', '.join(specs)}")
    return specs[name]
