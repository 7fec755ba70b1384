"""Reading images from paths, PIL images or arrays into HxWx3 uint8 RGB."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError

ImageInput = str | os.PathLike | Image.Image | np.ndarray


class ImageError(InputError):
    """An image could not be read or has an unsupported layout."""


def load_image(image: ImageInput) -> np.ndarray:
    """Path, PIL image or array -> HxWx3 uint8 RGB.

    Paths honour EXIF orientation. Grayscale (HxW, HxWx1) is replicated to 3 channels, alpha
    (HxWx4, LA, RGBA, palette) is dropped, 16-bit data is scaled to 8 bits, float arrays are read as
    0-1 (or 0-255 when their maximum exceeds 1).
    """
    if isinstance(image, (str, os.PathLike)):
        return _from_pil(_open(Path(image)))
    if isinstance(image, Image.Image):
        return _from_pil(image)
    if isinstance(image, np.ndarray):
        return _from_array(image)
    raise ImageError(f"expected an image path, PIL image or numpy array, got {type(image).__name__}")


def _open(path: Path) -> Image.Image:
    if path.is_dir():
        raise ImageError(f"{path} is a folder, not an image file")
    if not path.is_file():
        raise ImageError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            img.load()
            return img
    except Image.DecompressionBombError as e:
        raise ImageError(
            f"{path}: image is too large to open safely ({e}). "
            "Raise PIL.Image.MAX_IMAGE_PIXELS if you trust it."
        ) from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"cannot read image {path}: {e} (corrupt, truncated or not an image?)") from e


def _from_pil(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _from_array(np.asarray(img))
    return np.asarray(img.convert("RGB"))


def _from_array(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image array, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"image has no pixels (shape {arr.shape})")
    arr = arr[..., :3]
    return np.ascontiguousarray(_to_uint8(arr))


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageError("image array contains NaN or infinite values")
        scale = 255.0 if arr.max(initial=0.0) <= 1.0 else 1.0
        return np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.min(initial=0) < 0:
            raise ImageError(f"image array of {arr.dtype} has negative values")
        top = int(arr.max(initial=0))
        bits = 16 if arr.dtype == np.uint16 else 8 if top <= 255 else 16 if top <= 65535 else 32
        return np.rint(arr.astype(np.float64) * (255.0 / (2**bits - 1))).astype(np.uint8)
    raise ImageError(f"unsupported image dtype {arr.dtype}")
