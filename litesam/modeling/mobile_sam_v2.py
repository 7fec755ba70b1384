"""MobileSAM-v2: segment everything from an object-aware detector's boxes instead of a point grid.

The official ``Inference.py`` pipeline: a one-class YOLOv8x-seg (26 box-regression bins, no prototype
net) finds object boxes; each box prompts SAM's prompt encoder and a prompt-guided mask decoder (SAM's
architecture, its own weights) on the embedding of a chosen image encoder (TinyViT, EfficientViT-L2 or
SAM ViT-H), one mask per box, thresholded at 0.

:class:`MobileSAMv2` is a :class:`~litesam.modeling.sam.Sam` (points and boxes work as with any SAM)
with the detector as an extra module; :meth:`MobileSAMv2.everything_source` gives the mask generator a
source that runs the detector on the image and yields its boxes as prompts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..prompt_sources import BoxSource
from ..utils.transforms import ImageTransform
from .efficientvit import EfficientViTSamImageEncoder
from .fastsam import detections, scale_boxes, snap_to_border
from .sam import Sam
from .yolo import YOLOv8

DETECTOR_BINS = 26  # box-regression bins per side of the object-aware model (16 in stock YOLOv8)
# ultralytics' letterbox to 1024 px, pixels / 255, no mean/std
DETECTOR_TRANSFORM = ImageTransform(
    1024, resize="letterbox", pixel_scale=255.0, pixel_mean=(0.0, 0.0, 0.0), pixel_std=(1.0, 1.0, 1.0)
)


class ObjectAwareModel(YOLOv8):
    """The object-aware detector: YOLOv8x-seg, one class, ``reg_max`` 26, mask coefficients computed but
    unused, no prototype net (keys ``model.<i>.*`` as in ``ObjectAwareModel.pt``)."""

    def __init__(self, scale: str = "x") -> None:
        super().__init__(scale, nc=1, nm=32, reg_max=DETECTOR_BINS, protos=False)
        self.transform = DETECTOR_TRANSFORM

    @torch.inference_mode()
    def detect(
        self, rgb: np.ndarray, conf: float = 0.4, iou: float = 0.9, max_det: int = 300
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """HxWx3 uint8 RGB -> (Kx4 float32 XYXY boxes in original pixels, K scores), descending score.

        As upstream: the network sees the channels in B, G, R order (``Inference.py`` hands ultralytics
        an RGB array where it expects BGR); score > ``conf``, NMS at ``iou``, the first ``max_det``;
        sides within 20 px of the letterboxed input's border snap onto it; boxes are scaled back and
        clipped to the image.
        """
        device = next(self.parameters()).device
        x = self.transform.to_input(np.ascontiguousarray(rgb[..., ::-1]), device)
        pred = self(x)["pred"][0].T
        boxes, rows = detections(pred, conf, iou, max_det)
        in_h, in_w = x.shape[-2:]
        boxes = scale_boxes(snap_to_border(boxes, in_h, in_w), (in_h, in_w), rgb.shape[:2])
        return boxes.float(), rows[:, 4].float()


class ResizingEfficientViTEncoder(EfficientViTSamImageEncoder):
    """EfficientViT-SAM encoder as MobileSAM-v2 runs it: the normalised, padded 1024x1024 input is
    resized bilinearly to ``size`` (512 for L2) inside the forward, then encoded (official keys)."""

    def __init__(self, cfg: Any, size: int = 512) -> None:
        super().__init__(cfg)
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Bx3x1024x1024 -> Bx256x64x64."""
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return super().forward(x)


class MobileSAMv2(Sam):
    """SAM (chosen image encoder, SAM prompt encoder, prompt-guided mask decoder) + the object-aware
    ``detector``. ``box_batch``: detector boxes decoded together in segment-everything (320 upstream)."""

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: nn.Module,
        mask_decoder: nn.Module,
        detector: ObjectAwareModel,
        transform: ImageTransform,
        box_batch: int = 320,
    ) -> None:
        super().__init__(image_encoder, prompt_encoder, mask_decoder, transform)
        self.detector = detector
        self.box_batch = box_batch

    def everything_source(self, conf: float = 0.4, iou: float = 0.9, max_det: int = 300) -> DetectorSource:
        """The mask generator's source for this model (official ``Inference.py`` defaults)."""
        return DetectorSource(self.detector, conf, iou, max_det, self.box_batch)


class DetectorSource:
    """Segment everything with detector boxes: :meth:`for_image` runs the detector and returns a
    :class:`~litesam.prompt_sources.BoxSource` of its boxes (records get a ``det_score``).

    ``generator_defaults``: MobileSAM-v2 keeps every decoded mask (no IoU / stability filter, no NMS)
    and decodes ``box_batch`` boxes at a time, unless the generator is given other settings;
    ``sort_by_area``: records come largest mask first, as upstream displays them.
    """

    sort_by_area = True

    def __init__(
        self, detector: ObjectAwareModel, conf: float, iou: float, max_det: int, box_batch: int
    ) -> None:
        if not 0.0 <= conf <= 1.0 or not 0.0 <= iou <= 1.0:
            raise InputError(f"conf and iou must be in [0, 1], got conf={conf!r}, iou={iou!r}")
        for name, value in (("max_det", max_det), ("box_batch", box_batch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        self.detector, self.conf, self.iou, self.max_det = detector, conf, iou, max_det
        self.generator_defaults = {
            "points_per_batch": box_batch,
            "pred_iou_thresh": 0.0,
            "stability_score_thresh": 0.0,
            "box_nms_thresh": 1.0,
        }

    def for_image(self, rgb: np.ndarray) -> BoxSource:
        """HxWx3 uint8 RGB -> the box prompts of this image."""
        boxes, scores = self.detector.detect(rgb, self.conf, self.iou, self.max_det)
        return BoxSource(boxes.cpu(), det_score=scores.cpu())
