"""litesam: fast, lightweight Segment Anything — one API over SAM and its light descendants."""

from .build import build_model
from .predictor import Predictor
from .registry import get_spec, list_models

__version__ = "0.1.0"
__all__ = ["Predictor", "build_model", "get_spec", "list_models", "__version__"]
