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


def resized_shape(old_h: int, old_w: int, target_length: int) -> tuple[int, int]:
    """(H, W) after scaling so the longest side is ``target_length`` (rounded half up, as official SAM)."""
    scale = target_length / max(old_h, old_w)
    return int(old_h * scale + 0.5), int(old_w * scale + 0.5)


@dataclass(frozen=True)
class ImageTransform:
    """How one model takes images and prompts and gives back masks.

    - ``image_size``: side of the encoder's square input, pixels.
    - ``prompt_size``: side of the square prompt frame (None: ``image_size``). EfficientViT-SAM L encodes
      512 px but takes prompts and returns logits in SAM's 1024 frame.
    - ``resize``: ``"longest"``: the longest side is scaled to the frame with PIL's bilinear filter on
      uint8 pixels and the rest padded with zeros bottom/right after normalising (official SAM);
      ``"stretch"``: each axis is scaled to the frame on its own, bilinearly on float pixels, no padding
      (EfficientSAM).
    - ``pixel_scale``: RGB values (0-255) are divided by this before normalising: 1 when ``pixel_mean`` /
      ``pixel_std`` are on the 0-255 scale (SAM), 255 when they are on the 0-1 scale (EfficientSAM).
    - ``pixel_mean``, ``pixel_std``: per-channel RGB statistics, in the units ``pixel_scale`` gives.
    - ``mask_interpolation``: ``"bilinear"`` or ``"bicubic"`` upsampling of logits to the original size.
    """

    image_size: int = 1024
    prompt_size: int | None = None
    resize: Literal["longest", "stretch"] = "longest"
    pixel_scale: float = 1.0
    pixel_mean: tuple[float, float, float] = SAM_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = SAM_PIXEL_STD
    mask_interpolation: Literal["bilinear", "bicubic"] = "bilinear"

    def __post_init__(self) -> None:
        if self.resize not in ("longest", "stretch"):
            raise ValueError(f"resize must be 'longest' or 'stretch', got {self.resize!r}")
        if self.mask_interpolation not in ("bilinear", "bicubic"):
            raise ValueError(
                f"mask_interpolation must be 'bilinear' or 'bicubic', got {self.mask_interpolation!r}"
            )

    @property
    def frame_size(self) -> int:
        """Side of the prompt frame, pixels."""
        return self.prompt_size or self.image_size

    # -- images -------------------------------------------------------------------------------------

    def input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) that the image covers in the encoder input (the rest is padding)."""
        if self.resize == "stretch":
            return self.image_size, self.image_size
        return resized_shape(*original_size, self.image_size)

    def resize_image(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 -> the uint8 pixels the encoder input is made of (``"longest"``: resized with PIL
        bilinear; ``"stretch"`` resizes later, in float, so this is a copy of the image)."""
        if self.resize == "stretch":
            return np.array(image)
        h, w = self.input_size(image.shape[:2])
        return np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))

    def to_input(self, image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """HxWx3 uint8 RGB -> the 1x3xSxS float32 encoder input (resized, scaled, normalised, padded)."""
        pixels = torch.as_tensor(self.resize_image(image), device=device).permute(2, 0, 1)[None].float()
        if self.pixel_scale != 1.0:
            pixels = pixels.contiguous() / self.pixel_scale
        if self.resize == "stretch" and pixels.shape[-2:] != (self.image_size, self.image_size):
            pixels = F.interpolate(pixels, size=(self.image_size,) * 2, mode="bilinear", align_corners=False)
        mean = torch.tensor(self.pixel_mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.pixel_std, device=device).view(1, -1, 1, 1)
        x = (pixels - mean) / std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.image_size - w, 0, self.image_size - h))

    # -- prompts ------------------------------------------------------------------------------------

    def apply_coords(self, coords: Coords, original_size: tuple[int, int]) -> Coords:
        """(..., 2) (x, y) original pixels -> prompt-frame pixels, computed in float64 (an array or a
        tensor comes back as the same kind, float64)."""
        old_h, old_w = original_size
        if self.resize == "stretch":
            new_h = new_w = self.frame_size
        else:
            new_h, new_w = resized_shape(old_h, old_w, self.frame_size)
        if isinstance(coords, torch.Tensor):
            scale = torch.tensor([new_w / old_w, new_h / old_h], dtype=torch.float64, device=coords.device)
            return coords.to(torch.float64) * scale
        return np.asarray(coords, dtype=np.float64) * np.array([new_w / old_w, new_h / old_h])

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
        upsampled straight to the original size.
        """
        size = tuple(output_size or original_size)
        if self.resize == "stretch":
            return F.interpolate(masks, size=size, mode=self.mask_interpolation, align_corners=False)
        frame = self.frame_size
        h, w = resized_shape(*original_size, frame)
        masks = F.interpolate(masks, (frame, frame), mode=self.mask_interpolation, align_corners=False)
        return F.interpolate(masks[..., :h, :w], size, mode=self.mask_interpolation, align_corners=False)
