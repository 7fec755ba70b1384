"""One image transform per model: every step between the user's image and prompts and the model's frames.

A model sees three frames: the **original** image (H x W pixels, where users give points and boxes and
want masks), the **encoder input** (a square of ``image_size`` pixels) and the **prompt frame** (a
square of ``prompt_size`` pixels, where the prompt encoder takes coordinates and where the decoder's
low-res logits lie). :class:`ImageTransform` maps between them; the predictor, the mask generator,
distillation and the web server all go through it, so no consumer re-implements a resize.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

if TYPE_CHECKING:
    from ..prompts import Prompts

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)  # ImageNet statistics on the 0-255 scale
SAM_PIXEL_STD = (58.395, 57.12, 57.375)

Coords = TypeVar("Coords", np.ndarray, torch.Tensor)


def letterbox_shape(old_h: int, old_w: int, target_length: int, stride: int) -> tuple[int, int, int, int]:
    """Ultralytics' ``LetterBox(auto=True)``: (h, w) of the resized image (scale min(S/H, S/W), Python
    rounding) and its (top, left) offset in the smallest stride-multiple rectangle around it (centred,
    ``round(pad / 2 -+ 0.1)`` split)."""
    scale = min(target_length / old_h, target_length / old_w)
    h, w = int(round(old_h * scale)), int(round(old_w * scale))
    pad_h, pad_w = (target_length - h) % stride / 2, (target_length - w) % stride / 2
    return h, w, int(round(pad_h - 0.1)), int(round(pad_w - 0.1))


def resized_shape(old_h: int, old_w: int, target_length: int) -> tuple[int, int]:
    """(H, W) after scaling so the longest side is ``target_length`` (rounded half up, as official SAM)."""
    scale = target_length / max(old_h, old_w)
    return int(old_h * scale + 0.5), int(old_w * scale + 0.5)


def _linear_taps(dst: int, src: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's INTER_LINEAR taps along one axis: source indices (i0, i1) and 11-bit fixed-point weights
    (w0, w1) per output pixel (half-pixel centres, float32 positions, clamped at the borders)."""
    pos = ((np.arange(dst) + 0.5) * (src / dst) - 0.5).astype(np.float32)
    i0 = np.floor(pos).astype(np.int64)
    frac = pos - i0
    frac[i0 < 0], i0[i0 < 0] = 0, 0
    edge = i0 >= src - 1
    frac[edge], i0[edge] = 0, src - 1
    w0 = np.round((1 - frac) * 2048).astype(np.int64)
    w1 = np.round(frac * 2048).astype(np.int64)
    return i0, np.minimum(i0 + 1, src - 1), w0, w1


def resize_linear_uint8(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """HxWxC uint8 -> hxwxC uint8 as ``cv2.resize(..., INTER_LINEAR)`` computes it (fixed-point taps,
    its vectorised rounding; within 1 level of OpenCV on a few pixels in 10,000)."""
    xi0, xi1, xw0, xw1 = _linear_taps(w, image.shape[1])
    yi0, yi1, yw0, yw1 = _linear_taps(h, image.shape[0])
    src = image.astype(np.int64)
    rows = (src[:, xi0] * xw0[None, :, None] + src[:, xi1] * xw1[None, :, None]) >> 4
    top = (rows[yi0] * yw0[:, None, None]) >> 16
    bottom = (rows[yi1] * yw1[:, None, None]) >> 16
    return ((top + bottom + 2) >> 2).clip(0, 255).astype(np.uint8)


@dataclass(frozen=True)
class ImageTransform:
    """How one model takes images and prompts and gives back masks.

    - ``image_size``: side of the encoder's square input, pixels.
    - ``prompt_size``: side of the square prompt frame (None: ``image_size``). EfficientViT-SAM L encodes
      512 px but takes prompts and returns logits in SAM's 1024 frame.
    - ``resize``: ``"longest"``: the longest side is scaled to the frame with PIL's bilinear filter on
      uint8 pixels and the rest padded with zeros bottom/right after normalising (official SAM);
      ``"stretch"``: each axis is scaled to the frame on its own, bilinearly on float pixels, no padding
      (EfficientSAM); ``"letterbox"``: ultralytics' letterbox (YOLO models): scaled so the image fits
      ``image_size``, bilinear on uint8 as OpenCV computes it, centred in the smallest
      rectangle of multiples of ``stride`` and padded with ``pad_value`` (0-255 units) before scaling.
      Its prompt frame is the original image (the model assembles masks at the original resolution).
    - ``pixel_scale``: RGB values (0-255) are divided by this before normalising: 1 when ``pixel_mean`` /
      ``pixel_std`` are on the 0-255 scale (SAM), 255 when they are on the 0-1 scale (EfficientSAM).
    - ``pixel_mean``, ``pixel_std``: per-channel RGB statistics, in the units ``pixel_scale`` gives.
    - ``mask_interpolation``: ``"bilinear"`` or ``"bicubic"`` upsampling of logits to the original size.
    - ``stride``, ``pad_value``: the letterbox's size multiple and padding pixel value (``"letterbox"`` only).
    - ``pad_pixel``: ``"longest"`` only: an RGB pixel (0-255) that fills the padding before normalising,
      like the image (TAP pads with its uint8 mean pixel); None: zeros after normalising (SAM).
    - ``prompt_scale``: how original pixels map to the prompt frame: ``"per_axis"``, each axis by the
      resized over the original size (SAM); ``"uniform"``, both by the resize factor frame / longest side
      (TAP, whose resize keeps that factor; ``"longest"`` only).
    """

    image_size: int = 1024
    prompt_size: int | None = None
    resize: Literal["longest", "stretch", "letterbox"] = "longest"
    pixel_scale: float = 1.0
    pixel_mean: tuple[float, float, float] = SAM_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = SAM_PIXEL_STD
    mask_interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    stride: int = 32
    pad_value: float = 114.0
    pad_pixel: tuple[float, float, float] | None = None
    prompt_scale: Literal["per_axis", "uniform"] = "per_axis"

    def __post_init__(self) -> None:
        if self.resize not in ("longest", "stretch", "letterbox"):
            raise ValueError(f"resize must be 'longest', 'stretch' or 'letterbox', got {self.resize!r}")
        if self.mask_interpolation not in ("bilinear", "bicubic"):
            raise ValueError(
                f"mask_interpolation must be 'bilinear' or 'bicubic', got {self.mask_interpolation!r}"
            )
        if self.prompt_scale not in ("per_axis", "uniform"):
            raise ValueError(f"prompt_scale must be 'per_axis' or 'uniform', got {self.prompt_scale!r}")

    @property
    def frame_size(self) -> int:
        """Side of the prompt frame, pixels."""
        return self.prompt_size or self.image_size

    # -- images -------------------------------------------------------------------------------------

    def input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) that the image covers in the encoder input (the rest is padding)."""
        if self.resize == "stretch":
            return self.image_size, self.image_size
        if self.resize == "letterbox":
            return letterbox_shape(*original_size, self.image_size, self.stride)[:2]
        return resized_shape(*original_size, self.image_size)

    def resize_image(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 -> the uint8 pixels the encoder input is made of (``"longest"``: resized with PIL
        bilinear; ``"stretch"`` resizes later, in float, so this is a copy of the image)."""
        if self.resize == "stretch":
            return np.array(image)
        h, w = self.input_size(image.shape[:2])
        return np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))

    def to_input(self, image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """HxWx3 uint8 RGB -> the 1x3xSxS float32 encoder input (resized, scaled, normalised, padded);
        ``"letterbox"``: 1x3xH'xW' with H', W' multiples of ``stride``."""
        if self.resize == "letterbox":
            return self._letterbox(image, device)
        pixels = torch.as_tensor(self.resize_image(image), device=device).permute(2, 0, 1)[None].float()
        if self.pixel_scale != 1.0:
            pixels = pixels.contiguous() / self.pixel_scale
        if self.resize == "stretch" and pixels.shape[-2:] != (self.image_size, self.image_size):
            pixels = F.interpolate(pixels, size=(self.image_size,) * 2, mode="bilinear", align_corners=False)
        mean = torch.tensor(self.pixel_mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.pixel_std, device=device).view(1, -1, 1, 1)
        x = (pixels - mean) / std
        h, w = x.shape[-2:]
        if self.pad_pixel is None:
            return F.pad(x, (0, self.image_size - w, 0, self.image_size - h))
        pad = torch.tensor(self.pad_pixel, device=device).view(1, -1, 1, 1) / self.pixel_scale
        out = ((pad - mean) / std).repeat(1, 1, self.image_size, self.image_size)
        out[..., :h, :w] = x
        return out

    def _letterbox(self, image: np.ndarray, device: torch.device | str) -> torch.Tensor:
        h, w, top, left = letterbox_shape(image.shape[0], image.shape[1], self.image_size, self.stride)
        if (h, w) != image.shape[:2]:
            image = resize_linear_uint8(image, h, w)
        pixels = torch.as_tensor(np.ascontiguousarray(image), device=device).permute(2, 0, 1)[None].float()
        pad_h, pad_w = (self.image_size - h) % self.stride, (self.image_size - w) % self.stride
        pixels = F.pad(pixels, (left, pad_w - left, top, pad_h - top), value=self.pad_value)
        mean = torch.tensor(self.pixel_mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.pixel_std, device=device).view(1, -1, 1, 1)
        return (pixels / self.pixel_scale - mean) / std

    # -- prompts ------------------------------------------------------------------------------------

    def apply_coords(self, coords: Coords, original_size: tuple[int, int]) -> Coords:
        """(..., 2) (x, y) original pixels -> prompt-frame pixels, computed in float64 (an array or a
        tensor comes back as the same kind, float64)."""
        if self.resize == "letterbox":  # the prompt frame is the original image
            if isinstance(coords, torch.Tensor):
                return coords.to(torch.float64)
            return np.asarray(coords, dtype=np.float64)
        old_h, old_w = original_size
        if self.resize == "stretch":
            sx, sy = self.frame_size / old_w, self.frame_size / old_h
        elif self.prompt_scale == "uniform":
            sx = sy = self.frame_size / max(old_h, old_w)
        else:
            new_h, new_w = resized_shape(old_h, old_w, self.frame_size)
            sx, sy = new_w / old_w, new_h / old_h
        if isinstance(coords, torch.Tensor):
            scale = torch.tensor([sx, sy], dtype=torch.float64, device=coords.device)
            return coords.to(torch.float64) * scale
        return np.asarray(coords, dtype=np.float64) * np.array([sx, sy])

    def apply_boxes(self, boxes: Coords, original_size: tuple[int, int]) -> Coords:
        """(..., 4) XYXY original pixels -> prompt-frame pixels, float64."""
        shape = boxes.shape
        return self.apply_coords(boxes.reshape(*shape[:-1], 2, 2), original_size).reshape(shape)

    def apply_prompts(self, prompts: Prompts, original_size: tuple[int, int]) -> Prompts:
        """Prompts in original pixels -> the same prompts in the prompt frame (points and boxes float64;
        labels and mask unchanged). The one place where prompts change frames."""
        return replace(
            prompts,
            points=None if prompts.points is None else self.apply_coords(prompts.points, original_size),
            boxes=None if prompts.boxes is None else self.apply_boxes(prompts.boxes, original_size),
        )

    # -- masks --------------------------------------------------------------------------------------

    def postprocess_masks(
        self, masks: torch.Tensor, original_size: tuple[int, int], output_size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """BxMxhxw low-res logits over the prompt frame -> BxMxHxW logits over the original image (or
        scaled to ``output_size``).

        ``"longest"``: upsampled to the prompt frame, cropped to the image's extent there, resized to the
        original size (bilinear, as official SAM). ``"stretch"``: the frame is the whole image, so it is
        upsampled straight to the original size. ``"letterbox"``: the logits are over the original image
        already (returned as they are, or resized to ``output_size``).
        """
        size = tuple(output_size or original_size)
        if self.resize == "letterbox" and masks.shape[-2:] == size:  # already over the original image
            return masks
        if self.resize in ("stretch", "letterbox"):
            return F.interpolate(masks, size=size, mode=self.mask_interpolation, align_corners=False)
        frame = self.frame_size
        h, w = resized_shape(*original_size, frame)
        masks = F.interpolate(masks, (frame, frame), mode=self.mask_interpolation, align_corners=False)
        return F.interpolate(masks[..., :h, :w], size, mode=self.mask_interpolation, align_corners=False)
