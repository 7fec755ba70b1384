"""litesam: fast, lightweight Segment Anything — one API over SAM and its light descendants."""

from .automatic_mask_generator import MaskGenerator
from .build import build_model
from .edges import EdgeDetector
from .predictor import Predictor
from .registry import get_spec, list_models

__version__ = "0.1.0"
__all__ = [
    "EdgeDetector",
    "MaskGenerator",
    "Predictor",
    "build_model",
    "get_spec",
    "list_models",
    "__version__",
]
