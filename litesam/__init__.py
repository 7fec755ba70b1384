"""litesam: fast, lightweight Segment Anything — one API over SAM and its light descendants."""

from .automatic_mask_generator import MaskGenerator
from .build import build_model
from .edges import EdgeDetector
from .errors import InputError, LitesamError
from .predictor import ImageState, Prediction, Predictor
from .prompts import Prompts
from .registry import ModelSpec, get_spec, list_models, register_model
from .utils.transforms import ImageTransform

__version__ = "0.1.0"
__all__ = [
    "EdgeDetector",
    "ImageState",
    "ImageTransform",
    "InputError",
    "LitesamError",
    "MaskGenerator",
    "ModelSpec",
    "Prediction",
    "Predictor",
    "Prompts",
    "build_model",
    "get_spec",
    "list_models",
    "register_model",
    "__version__",
]
