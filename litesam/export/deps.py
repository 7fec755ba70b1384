"""Optional packages of the export and the backends, with a one-line error naming the extra."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from ..errors import MissingDependency


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``; MissingDependency naming ``pip install litesam[extra]`` if it is not installed."""
    if importlib.util.find_spec(module) is None:
        raise MissingDependency(f"{module} is not installed: pip install 'litesam[{extra}]'")
    return importlib.import_module(module)
