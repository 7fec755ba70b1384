"""The SAM model: image encoder + prompt encoder + mask decoder, with its pre- and post-processing.

Every model in the zoo exposes this interface, so the predictor and the mask generator never ask which
model they drive: ``image_size``, ``transform``, ``preprocess``, ``image_encoder``, ``decode``,
``postprocess_masks``, ``mask_threshold``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.transforms import ResizeLongestSide, normalize_and_pad, resized_shape

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


class Sam(nn.Module):
    """Segment Anything with any image encoder that maps Bx3xSxS to Bx256x64x64."""

    mask_threshold: float = 0.0
    image_format: str = "RGB"
    channels_last: bool = False  # feed the encoder NHWC-strided input (set with NHWC conv weights)

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: nn.Module,
        mask_decoder: nn.Module,
        pixel_mean: Sequence[float] = SAM_PIXEL_MEAN,
        pixel_std: Sequence[float] = SAM_PIXEL_STD,
        image_size: int = 1024,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.image_size = image_size
        self.register_buffer(
            "pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False
        )
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def transform(self) -> ResizeLongestSide:
        """Maps images and prompts from the original frame into the encoder's input frame."""
        return ResizeLongestSide(self.image_size)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Bx3xhxw float pixels (0-255, longest side = image_size) -> normalized, padded Bx3xSxS."""
        x = normalize_and_pad(x, self.pixel_mean, self.pixel_std, self.image_size)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def decode(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (low-res mask logits BxMx256x256, predicted IoU BxM), M = 3 or 1.

        image_embeddings: 1x256x64x64 (shared) or Bx256x64x64; point_coords: BxNx2 and boxes: Bx4 in
        the encoder-input pixel frame; point_labels: BxN (1 fg, 0 bg, -1 ignore); mask_input: Bx1x256x256.
        """
        points = (point_coords, point_labels) if point_coords is not None else None
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        return self.mask_decoder.predict_masks(
            image_embeddings,
            self.prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            self.mask_tokens(multimask_output),
        )

    def mask_tokens(self, multimask_output: bool) -> slice:
        """Which of the decoder's mask tokens are returned: 1..3 for several masks, 0 for one (SAM)."""
        return slice(1, None) if multimask_output else slice(0, 1)

    def postprocess_masks(
        self, masks: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> torch.Tensor:
        """BxMx256x256 logits -> BxMxHxW logits in the original image frame (bilinear, unpadded).

        The logits cover the prompt encoder's square frame (1024): upsample to it, crop the image's extent
        there, resize to ``original_size``. For SAM that frame is the encoder's, and the extent is
        ``input_size``; models whose encoder sees a smaller frame (EfficientViT-SAM L: 512) still map masks
        through 1024, with the extent computed from ``original_size``.
        """
        frame = self.prompt_encoder.input_image_size[0]
        if frame != self.image_size:
            input_size = resized_shape(original_size[0], original_size[1], frame)
        masks = F.interpolate(masks, (frame, frame), mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)
