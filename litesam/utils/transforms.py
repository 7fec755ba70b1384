"""Resizing of images and prompts to the encoder's input frame (longest side to ``target_length``)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def resized_shape(old_h: int, old_w: int, target_length: int) -> tuple[int, int]:
    """(H, W) after scaling so the longest side is ``target_length`` (rounded half up, as official SAM)."""
    scale = target_length / max(old_h, old_w)
    return int(old_h * scale + 0.5), int(old_w * scale + 0.5)


class ResizeLongestSide:
    """Scale images, points and boxes so the image's longest side is ``target_length`` pixels.

    Images are resized with PIL's bilinear filter on uint8 data (what the official SAM predictor does);
    coordinates are (x, y) pixels and are scaled per axis.
    """

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 -> H'xW'x3 uint8."""
        h, w = resized_shape(image.shape[0], image.shape[1], self.target_length)
        return np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """(..., 2) float (x, y) in the original frame -> the resized frame (float64 math, like numpy SAM)."""
        old_h, old_w = original_size
        new_h, new_w = resized_shape(old_h, old_w, self.target_length)
        coords = np.array(coords, dtype=np.float64, copy=True)
        coords[..., 0] *= new_w / old_w
        coords[..., 1] *= new_h / old_h
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """(..., 4) XYXY boxes -> the resized frame."""
        return self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_coords_torch(self, coords: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """Like :meth:`apply_coords` for float tensors (math in the tensor's dtype)."""
        old_h, old_w = original_size
        new_h, new_w = resized_shape(old_h, old_w, self.target_length)
        coords = coords.clone().to(torch.float)
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes_torch(self, boxes: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)


def normalize_and_pad(
    image: torch.Tensor, pixel_mean: torch.Tensor, pixel_std: torch.Tensor, size: int
) -> torch.Tensor:
    """Bx3xhxw float pixels (0-255) -> Bx3xSxS: ``(x - mean) / std``, zero-padded bottom/right to ``size``."""
    x = (image - pixel_mean.view(1, -1, 1, 1)) / pixel_std.view(1, -1, 1, 1)
    h, w = x.shape[-2:]
    return F.pad(x, (0, size - w, 0, size - h))
