"""FastSAM: a one-class YOLOv8-seg trained on SA-1B that segments everything in one pass; prompts select
among its masks (official ``FastSAMPredictor`` + ``FastSAMPrompt`` behaviour, quirks included).

As a :class:`~litesam.modeling.sam.PromptableModel` of kind ``"instance"``: ``encode`` runs the network
(features ``pred`` and ``protos``), ``decode`` assembles the everything masks at the original resolution
(the letterbox transform's prompt frame is the original image) and returns the prompt-selected mask,
and :meth:`FastSAM.everything_source` gives the mask generator its one-pass source.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..candidates import CropFrame, MaskCandidates
from ..errors import InputError
from ..prompts import Prompts
from ..utils.amg import batched_nms
from ..utils.transforms import ImageTransform
from .clip_text import ClipRanker, select_by_text
from .sam import Features
from .yolo import YOLOv8

BORDER_SNAP_PX = 20  # FastSAM snaps box sides closer than this to the input border onto it
FULL_BOX_IOU = 0.9  # boxes overlapping the whole input more than this become the whole input


@dataclass(frozen=True)
class Instances:
    """K masks of one image: ``boxes`` Kx4 float XYXY original pixels, ``scores`` K, ``masks`` KxHxW bool,
    in descending score order (NMS keep order)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    masks: torch.Tensor


class FastSAM(YOLOv8):
    """YOLOv8-seg of one scale with FastSAM's post-processing; ``conf``, ``iou``, ``max_det`` are the
    everything thresholds used by prompt selection (the mask generator may override them)."""

    kind = "instance"
    mask_threshold = 0.0

    def __init__(
        self,
        transform: ImageTransform,
        scale: str = "s",
        conf: float = 0.4,
        iou: float = 0.9,
        max_det: int = 300,
    ) -> None:
        super().__init__(scale, nc=1, nm=32)
        self.transform = transform
        self.conf, self.iou, self.max_det = conf, iou, max_det

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, x: torch.Tensor) -> Features:
        """1x3xHxW letterboxed RGB in [0, 1] -> ``pred`` 1x37xN (xywh, score, 32 mask coefficients) and
        ``protos`` 1x32xH/4xW/4."""
        out = self(x)
        return {"pred": out["pred"], "protos": out["protos"]}

    def instances(
        self,
        features: Features,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
    ) -> Instances:
        """Everything masks of the image (``features`` from the predictor, with ``original_size``):
        score > conf, class-aware greedy NMS at ``iou`` (first ``max_det``), FastSAM's border snap and
        full-box replacement in the input frame, boxes scaled to the original image, masks assembled
        from the prototypes at the original resolution (``retina_masks``)."""
        conf = self.conf if conf is None else conf
        iou = self.iou if iou is None else iou
        max_det = self.max_det if max_det is None else max_det
        pred, protos = features["pred"][0].T, features["protos"][0]
        in_h, in_w = 4 * protos.shape[-2], 4 * protos.shape[-1]
        h, w = (int(v) for v in features["original_size"])
        boxes, rows = detections(pred, conf, iou, max_det)
        scores, coefs = rows[:, 4], rows[:, 5:]
        boxes = snap_to_full_input(boxes, in_h, in_w)
        boxes = scale_boxes(boxes, (in_h, in_w), (h, w))
        return Instances(boxes, scores, assemble_masks(protos, coefs, boxes, (h, w)))

    def decode(
        self,
        features: Features,
        prompts: Prompts,
        multimask_output: bool = True,
        min_score: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """B prompt sets in original pixels -> (Bx1xHxW logits over the original image: +1 in the selected
        mask, -1 elsewhere; Bx1 scores). A box selects the everything mask of highest box/mask IoU (score:
        that IoU); points unite, largest first, the masks that contain a foreground point and cut out
        those containing a background point (score: the best detector score among the masks used).
        ``multimask_output`` and ``min_score`` are ignored (one mask per prompt, selected, not decoded)."""
        if prompts.mask is not None:
            raise InputError("FastSAM takes points or a box, not a mask input")
        if prompts.boxes is not None and prompts.points is not None:
            raise InputError("FastSAM takes points or a box, not both in one prompt")
        found = self.instances(features)
        masks, scores = [], []
        for b in range(len(prompts)):
            if prompts.boxes is not None:
                mask, score = select_by_box(found.masks, prompts.boxes[b])
            else:
                mask, score = select_by_points(found, prompts.points[b], prompts.labels[b])
            masks.append(mask)
            scores.append(score)
        logits = torch.stack(masks)[:, None].float() * 2 - 1
        return logits, torch.stack(scores)[:, None].float()

    def text_prompt(
        self, features: Features, image: np.ndarray, text: str, clip: ClipRanker
    ) -> tuple[torch.Tensor, float]:
        """The everything mask (HxW bool) that ``text`` describes, chosen by CLIP as the official
        ``FastSAMPrompt.text_prompt`` does (see :mod:`litesam.modeling.clip_text`), and its probability.
        ``features``: ``Predictor(model).encode(image).features``; ``image``: the same HxWx3 uint8 RGB."""
        found = self.instances(features)
        index, score = select_by_text(image, found.masks, text, clip)
        return found.masks[index], score

    def everything_source(self, conf: float = 0.4, iou: float = 0.9, max_det: int = 300) -> InstanceSource:
        """The mask generator's source for this model (official defaults conf 0.4, iou 0.9, max_det 300)."""
        return InstanceSource(self, conf, iou, max_det)


class InstanceSource:
    """Segment everything with an instance segmenter: the whole image, its masks as they come (no
    prompts, no IoU/stability filters or NMS beyond the model's own)."""

    def __init__(self, model: FastSAM, conf: float, iou: float, max_det: int) -> None:
        if not 0.0 <= conf <= 1.0 or not 0.0 <= iou <= 1.0:
            raise InputError(f"conf and iou must be in [0, 1], got conf={conf!r}, iou={iou!r}")
        if isinstance(max_det, bool) or not isinstance(max_det, int) or max_det < 1:
            raise InputError(f"max_det must be a positive integer, got {max_det!r}")
        self.model, self.conf, self.iou, self.max_det = model, conf, iou, max_det

    def crops(self, image_size: tuple[int, int]) -> list[CropFrame]:
        return [CropFrame.whole(image_size)]

    def segment(self, features: Features, frame: CropFrame) -> MaskCandidates:
        """The crop's encoded features -> its masks with ``iou_preds`` = detector scores."""
        found = self.model.instances(features, self.conf, self.iou, self.max_det)
        return MaskCandidates.from_masks(found.masks.cpu(), frame, iou_preds=found.scores.float().cpu())


def detections(
    pred: torch.Tensor, conf: float, iou: float, max_det: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One image's NxC head rows (xywh, one class score, extras) -> Kx4 XYXY boxes and their K rows:
    score > ``conf`` (strictly), greedy NMS at ``iou`` in descending score order, the first ``max_det``
    (ultralytics ``non_max_suppression`` for one class)."""
    rows = pred[pred[:, 4] > conf]
    boxes = torch.cat((rows[:, :2] - rows[:, 2:4] / 2, rows[:, :2] + rows[:, 2:4] / 2), 1)
    keep = batched_nms(boxes.cpu(), rows[:, 4].cpu(), torch.zeros(len(rows)), iou)[:max_det]
    keep = keep.to(boxes.device)
    return boxes[keep], rows[keep]


def snap_to_border(boxes: torch.Tensor, in_h: int, in_w: int) -> torch.Tensor:
    """Ultralytics' ``adjust_bboxes_to_image_border`` on Kx4 XYXY input-frame boxes (a new tensor): sides
    within 20 px of the input border (strictly) move onto it."""
    x0, y0, x1, y1 = boxes.unbind(1)
    return torch.stack(
        (
            torch.where(x0 < BORDER_SNAP_PX, 0.0, x0),
            torch.where(y0 < BORDER_SNAP_PX, 0.0, y0),
            torch.where(x1 > in_w - BORDER_SNAP_PX, float(in_w), x1),
            torch.where(y1 > in_h - BORDER_SNAP_PX, float(in_h), y1),
        ),
        1,
    )


def snap_to_full_input(boxes: torch.Tensor, in_h: int, in_w: int) -> torch.Tensor:
    """FastSAM's border snap (:func:`snap_to_border`) + full-box rule on Kx4 XYXY input-frame boxes: a
    box whose IoU with the whole input exceeds 0.9 becomes the whole input."""
    snapped = snap_to_border(boxes, in_h, in_w)
    inter = (snapped[:, 2].clamp(max=in_w) - snapped[:, 0].clamp(min=0)).clamp(min=0) * (
        snapped[:, 3].clamp(max=in_h) - snapped[:, 1].clamp(min=0)
    ).clamp(min=0)
    area = (snapped[:, 2] - snapped[:, 0]) * (snapped[:, 3] - snapped[:, 1])
    full = inter / (in_w * in_h + area - inter) > FULL_BOX_IOU
    snapped[full] = torch.tensor([0.0, 0.0, in_w, in_h], dtype=snapped.dtype, device=snapped.device)
    return snapped


def scale_boxes(
    boxes: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
) -> torch.Tensor:
    """Kx4 XYXY letterboxed-input pixels -> original pixels, clipped (ultralytics ``scale_boxes``)."""
    (in_h, in_w), (h, w) = input_size, original_size
    gain = min(in_h / h, in_w / w)
    pad_x, pad_y = round((in_w - w * gain) / 2 - 0.1), round((in_h - h * gain) / 2 - 0.1)
    out = (boxes - torch.tensor([pad_x, pad_y, pad_x, pad_y], dtype=boxes.dtype, device=boxes.device)) / gain
    x0, y0, x1, y1 = out.unbind(1)
    return torch.stack((x0.clamp(0, w), y0.clamp(0, h), x1.clamp(0, w), y1.clamp(0, h)), 1)


def assemble_masks(
    protos: torch.Tensor, coefs: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """32xhpxwp prototypes, Kx32 coefficients, Kx4 boxes (original pixels) -> KxHxW bool masks: logits
    over the prototype frame, cropped to the image's part of the letterbox, bilinearly resized to the
    original size, zeroed outside the box (half-open pixel ranges), > 0 (ultralytics
    ``process_mask_native`` as FastSAM's copy thresholds it)."""
    h, w = size
    if len(coefs) == 0:
        return torch.zeros(0, h, w, dtype=torch.bool, device=protos.device)
    c, ph, pw = protos.shape
    logits = (coefs @ protos.float().view(c, -1)).view(-1, ph, pw)
    gain = min(ph / h, pw / w)
    pad_x, pad_y = (pw - w * gain) / 2, (ph - h * gain) / 2
    logits = logits[:, int(pad_y) : int(ph - pad_y), int(pad_x) : int(pw - pad_x)]
    logits = F.interpolate(logits[None], size, mode="bilinear", align_corners=False)[0]
    cols = torch.arange(w, device=logits.device, dtype=boxes.dtype)[None, None, :]
    rows = torch.arange(h, device=logits.device, dtype=boxes.dtype)[None, :, None]
    x0, y0, x1, y1 = (v[:, None, None] for v in boxes.unbind(1))
    inside = (cols >= x0) & (cols < x1) & (rows >= y0) & (rows < y1)
    return (logits * inside) > 0


def select_by_box(masks: torch.Tensor, box: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mask of highest IoU with an XYXY box (rounded, clamped to the image; first on ties) and that
    IoU (``FastSAMPrompt.box_prompt``); an empty mask and 0 when there are no masks."""
    k, h, w = masks.shape
    if k == 0:
        return torch.zeros(h, w, dtype=torch.bool, device=masks.device), torch.tensor(0.0)
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    inside = masks[:, y0:y1, x0:x1].sum((1, 2)).float()
    ious = inside / ((y1 - y0) * (x1 - x0) + masks.sum((1, 2)).float() - inside)
    best = int(torch.argmax(ious))
    return masks[best], ious[best].cpu()


def select_by_points(
    found: Instances, points: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``FastSAMPrompt.point_prompt``: masks by descending area (stable); each mask containing a point
    is added (label 1) or cut out (label 0), in that order. Points index pixels as ints. Returns the
    HxW mask and the best detector score among the masks used (0 if none)."""
    masks = found.masks
    h, w = masks.shape[-2:]
    result = torch.zeros(h, w, dtype=torch.bool, device=masks.device)
    best = torch.tensor(0.0)
    order = torch.sort(masks.sum((1, 2)), descending=True, stable=True).indices
    pixels = [(min(int(y), h - 1), min(int(x), w - 1)) for x, y in points.tolist()]
    for i in order.tolist():
        for (y, x), label in zip(pixels, labels.tolist(), strict=True):
            if masks[i, y, x]:
                result[masks[i]] = bool(label)
                best = torch.maximum(best, found.scores[i].cpu())
    return result, best
