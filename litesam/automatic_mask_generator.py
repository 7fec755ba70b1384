"""Segment everything: a grid of point prompts -> filtered, de-duplicated masks for the whole image.

:class:`MaskGenerator` computes what the official ``SamAutomaticMaskGenerator`` computes (same settings,
same records), faster: masks are filtered by predicted IoU while still 256x256 logits (the official
upsamples every candidate to the original size first), only survivors are upsampled, a few at a time,
and the stability score, boxes and run-length codes are computed vectorised from those.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .modeling.sam import Sam
from .predictor import Predictor
from .utils.amg import (
    batched_nms,
    box_area,
    box_near_crop_edge,
    build_layer_point_grids,
    generate_crop_boxes,
    mask_to_rle,
    masks_to_boxes,
    remove_small_regions,
    rle_area,
    rle_to_coco,
    rle_to_mask,
    stability_score,
)
from .utils.image import ImageInput, load_image

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")

# Masks upsampled to the original size at once: bounds the 1024x1024 float temporaries (4 MiB each).
_UPSAMPLE_CHUNK = 16


@dataclass(frozen=True)
class CropFrame:
    """Where the current crop sits: ``box`` XYXY (exclusive max) in an image of ``image_size`` (H, W)."""

    box: tuple[int, int, int, int]
    image_size: tuple[int, int]

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the crop."""
        x0, y0, x1, y1 = self.box
        return y1 - y0, x1 - x0

    @property
    def offset(self) -> tuple[int, int]:
        """(x0, y0): add to crop pixel coordinates to get image coordinates."""
        return self.box[0], self.box[1]


@dataclass
class MaskCandidates:
    """K masks with their data, in the original image frame (the official generator's ``MaskData``).

    rles: K uncompressed RLE count arrays; boxes: Kx4 int64 XYXY (inclusive max); iou_preds and
    stability: K float32; points: Kx2 float64 (x, y) prompt pixels; crop_boxes: Kx4 int64 XYXY.
    """

    rles: list[np.ndarray]
    boxes: torch.Tensor
    iou_preds: torch.Tensor
    stability: torch.Tensor
    points: torch.Tensor
    crop_boxes: torch.Tensor

    @classmethod
    def empty(cls) -> MaskCandidates:
        return cls(
            [],
            torch.zeros(0, 4, dtype=torch.int64),
            torch.zeros(0),
            torch.zeros(0),
            torch.zeros(0, 2, dtype=torch.float64),
            torch.zeros(0, 4, dtype=torch.int64),
        )

    def __len__(self) -> int:
        return len(self.rles)

    def select(self, index: torch.Tensor) -> MaskCandidates:
        """The candidates at ``index`` (int64 indices, in that order, or a K bool mask)."""
        positions = torch.arange(len(self))[index].tolist()
        return MaskCandidates(
            [self.rles[i] for i in positions],
            self.boxes[index],
            self.iou_preds[index],
            self.stability[index],
            self.points[index],
            self.crop_boxes[index],
        )

    @classmethod
    def concat(cls, parts: Sequence[MaskCandidates]) -> MaskCandidates:
        parts = [cls.empty(), *parts]
        return cls(
            [rle for p in parts for rle in p.rles],
            torch.cat([p.boxes for p in parts]),
            torch.cat([p.iou_preds for p in parts]),
            torch.cat([p.stability for p in parts]),
            torch.cat([p.points for p in parts]),
            torch.cat([p.crop_boxes for p in parts]),
        )


class MaskGenerator:
    """Masks for everything in an image, from a grid of single-point prompts (optionally on crops too).

    Settings and defaults are the official ``SamAutomaticMaskGenerator``'s:

    - ``points_per_side``: grid points per image side (``points_per_side**2`` prompts), or None with
      explicit ``point_grids`` (one Nx2 array of (x, y) in [0, 1] per crop layer).
    - ``points_per_batch``: prompts decoded together (memory vs speed).
    - ``pred_iou_thresh``: keep masks whose predicted IoU is > this (0 or less: no filter).
    - ``stability_score_thresh``: keep masks whose stability score (IoU of the masks thresholded at
      ±``stability_score_offset`` logits around the mask threshold) is >= this (0 or less: no filter).
    - ``box_nms_thresh``: box IoU above which the lower-scored of two masks of one crop is dropped.
    - ``crop_n_layers``: extra crop layers; layer i cuts the image into ``2**i x 2**i`` overlapping crops
      (overlap ``crop_overlap_ratio`` of the short side in layer 1, halved per layer) and runs again on
      each with ``points_per_side / crop_n_points_downscale_factor**i`` points per side.
    - ``crop_nms_thresh``: box IoU above which duplicates across crops are dropped (smaller crops win).
    - ``min_mask_region_area``: if > 0, fill holes and delete islands smaller than this many pixels,
      then de-duplicate again.
    - ``output_mode``: ``"binary_mask"`` (HxW bool array), ``"uncompressed_rle"`` or ``"coco_rle"``.
    - ``progress``: show a progress bar over the decoded batches.

    ``generate(image)`` returns one dict per mask: ``segmentation``, ``area`` (pixels), ``bbox`` (XYWH
    ints), ``predicted_iou``, ``point_coords`` ([[x, y]] pixels), ``stability_score``, ``crop_box`` (XYWH).
    """

    def __init__(
        self,
        model: Sam,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Sequence[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        progress: bool = False,
    ) -> None:
        _check_int("points_per_batch", points_per_batch, 1)
        _check_int("crop_n_layers", crop_n_layers, 0)
        _check_int("crop_n_points_downscale_factor", crop_n_points_downscale_factor, 1)
        _check_int("min_mask_region_area", min_mask_region_area, 0)
        for name, value in (
            ("pred_iou_thresh", pred_iou_thresh),
            ("stability_score_thresh", stability_score_thresh),
            ("stability_score_offset", stability_score_offset),
        ):
            if not np.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        for name, value in (("box_nms_thresh", box_nms_thresh), ("crop_nms_thresh", crop_nms_thresh)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1] (1 keeps every mask), got {value!r}")
        if not 0.0 <= crop_overlap_ratio < 1.0:
            raise ValueError(f"crop_overlap_ratio must be in [0, 1), got {crop_overlap_ratio!r}")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}, got {output_mode!r}")
        self.point_grids = _point_grids(
            points_per_side, point_grids, crop_n_layers, crop_n_points_downscale_factor
        )
        self.predictor = Predictor(model)
        self.points_per_side = points_per_side
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.progress = progress

    @property
    def model(self) -> Sam:
        return self.predictor.model

    @torch.inference_mode()
    def generate(self, image: ImageInput, boxes: np.ndarray | None = None) -> list[dict[str, Any]]:
        """Masks for everything in ``image`` (a path, PIL image or HxWx3 array): records as documented
        on the class, in descending order of predicted IoU within each crop layer.

        ``boxes`` (Kx4 XYXY image pixels, e.g. from a detector) replaces the point grid and the crops:
        one mask per box (``multimask_output=False``), same filters and NMS, ``point_coords`` = the box
        centre (MobileSAM-v2's box-prompted segment everything).
        """
        rgb = load_image(image)
        if boxes is None:
            candidates = self.generate_candidates(rgb)
        else:
            h, w = rgb.shape[:2]
            frame = CropFrame((0, 0, w, h), (h, w))
            candidates = self._prompted_candidates(
                rgb, frame, boxes=_check_boxes(boxes, (h, w)), multimask_output=False
            )
        if self.min_mask_region_area > 0:
            candidates = self.remove_small_regions(candidates, (rgb.shape[0], rgb.shape[1]))
        return self.records(candidates, (rgb.shape[0], rgb.shape[1]))

    def generate_candidates(self, rgb: np.ndarray) -> MaskCandidates:
        """HxWx3 uint8 RGB -> the de-duplicated masks of all crops (before small-region removal)."""
        image_size = (rgb.shape[0], rgb.shape[1])
        boxes, layers = generate_crop_boxes(image_size, self.crop_n_layers, self.crop_overlap_ratio)
        n_batches = sum(-(-len(self.point_grids[layer]) // self.points_per_batch) for layer in layers)
        with tqdm(total=n_batches, disable=not self.progress, desc="masks", unit="batch") as bar:
            parts = [
                self._crop_candidates(rgb, CropFrame(tuple(box), image_size), layer, bar.update)
                for box, layer in zip(boxes, layers, strict=True)
            ]
        candidates = MaskCandidates.concat(parts)
        if len(boxes) > 1:  # duplicates between crops: prefer masks from smaller crops
            scores = 1 / box_area(candidates.crop_boxes)
            keep = batched_nms(
                candidates.boxes.float(), scores, torch.zeros(len(candidates)), self.crop_nms_thresh
            )
            candidates = candidates.select(keep)
        return candidates

    def set_crop(self, rgb: np.ndarray, frame: CropFrame) -> None:
        """Encode the crop ``frame.box`` of the HxWx3 image (the predictor then holds its embedding)."""
        x0, y0, x1, y1 = frame.box
        self.predictor.set_image(rgb[y0:y1, x0:x1])

    def _crop_candidates(
        self, rgb: np.ndarray, frame: CropFrame, layer: int, on_batch: Callable[[], Any]
    ) -> MaskCandidates:
        h, w = frame.size
        points = self.point_grids[layer] * np.array([[w, h]])
        return self._prompted_candidates(rgb, frame, points=points, on_batch=on_batch)

    def _prompted_candidates(self, rgb: np.ndarray, frame: CropFrame, **prompts: Any) -> MaskCandidates:
        """Encode the crop, decode ``prompts`` (keywords of :meth:`decode_prompts`), de-duplicate by NMS."""
        self.set_crop(rgb, frame)
        candidates = self.decode_prompts(frame, **prompts)
        self.predictor.reset_image()
        keep = batched_nms(
            candidates.boxes.float(), candidates.iou_preds, torch.zeros(len(candidates)), self.box_nms_thresh
        )
        return candidates.select(keep)

    def decode_prompts(
        self,
        frame: CropFrame,
        points: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        record_points: np.ndarray | None = None,
        multimask_output: bool = True,
        on_batch: Callable[[], Any] | None = None,
    ) -> MaskCandidates:
        """Decode K independent prompts on the encoded crop, ``points_per_batch`` at a time, and keep
        the masks that pass the IoU, stability and crop-edge filters.

        points: Kx2 single foreground points and/or boxes: Kx4 XYXY, both in crop pixels. The records'
        ``point_coords`` are ``record_points`` (Kx2 crop pixels; default: the points, else box centres).
        Points reach the prompt encoder in float64 (as in the official generator), boxes in float32 (as
        in the official predictor).
        """
        if points is None and boxes is None:
            raise ValueError("decode_prompts needs points and/or boxes")
        if record_points is None:
            record_points = points if points is not None else (boxes[:, :2] + boxes[:, 2:]) / 2
        transform, crop_size = self.predictor.transform, frame.size
        parts = []
        for start in range(0, len(record_points), self.points_per_batch):
            part = slice(start, start + self.points_per_batch)
            coords = labels = box_t = None
            if points is not None:
                coords = torch.as_tensor(transform.apply_coords(points[part], crop_size))[:, None, :]
                labels = torch.ones(coords.shape[0], 1, dtype=torch.int)
            if boxes is not None:
                box_t = torch.as_tensor(transform.apply_boxes(boxes[part], crop_size), dtype=torch.float)
            low_res, iou_preds = self.model.decode(
                self.predictor.features,
                None if coords is None else coords.to(self.model.device),
                None if labels is None else labels.to(self.model.device),
                None if box_t is None else box_t.to(self.model.device),
                None,
                multimask_output,
            )
            per_prompt = low_res.shape[1]
            parts.append(
                self.filter_masks(
                    low_res.flatten(0, 1),
                    iou_preds.flatten(0, 1),
                    torch.as_tensor(np.repeat(record_points[part], per_prompt, axis=0)),
                    frame,
                )
            )
            if on_batch is not None:
                on_batch()
        return MaskCandidates.concat(parts)

    def filter_masks(
        self, low_res: torch.Tensor, iou_preds: torch.Tensor, points: torch.Tensor, frame: CropFrame
    ) -> MaskCandidates:
        """Kx256x256 low-res logits with K predicted IoUs and Kx2 prompt points (crop pixels) -> the
        masks passing the filters, at the original image's size, run-length encoded.

        The IoU filter runs first, on the low-res logits; only survivors are upsampled (in chunks) for
        the stability score, the thresholded mask and its box.
        """
        iou_preds = iou_preds.cpu()
        if self.pred_iou_thresh > 0.0:
            keep = iou_preds > self.pred_iou_thresh
            low_res, iou_preds, points = low_res[keep.to(low_res.device)], iou_preds[keep], points[keep]
        if low_res.shape[0] == 0:
            return MaskCandidates.empty()
        input_size, crop_size = self.predictor.input_size, frame.size
        threshold = self.model.mask_threshold
        passed, masks, stability = [], [], []
        for chunk in low_res.split(_UPSAMPLE_CHUNK):
            logits = self.model.postprocess_masks(chunk[:, None], input_size, crop_size)[:, 0].cpu()
            score = stability_score(logits, threshold, self.stability_score_offset)
            if self.stability_score_thresh > 0.0:
                ok = score >= self.stability_score_thresh
                logits, score = logits[ok], score[ok]
            else:
                ok = torch.ones_like(score, dtype=torch.bool)
            passed.append(ok)
            masks.append(logits > threshold)
            stability.append(score)
        keep = torch.cat(passed)
        masks, stability = torch.cat(masks), torch.cat(stability)
        iou_preds, points = iou_preds[keep], points[keep]
        boxes = masks_to_boxes(masks)
        h, w = frame.image_size
        inside = ~box_near_crop_edge(boxes, list(frame.box), [0, 0, w, h])
        masks, boxes, iou_preds, stability, points = (
            t[inside] for t in (masks, boxes, iou_preds, stability, points)
        )
        x0, y0 = frame.offset
        count = len(boxes)
        return MaskCandidates(
            mask_to_rle(_uncrop_masks(masks, frame)),
            boxes + torch.tensor([x0, y0, x0, y0]),
            iou_preds,
            stability,
            points + torch.tensor([x0, y0], dtype=torch.float64),
            torch.tensor([list(frame.box)] * count, dtype=torch.int64).reshape(count, 4),
        )

    def remove_small_regions(self, candidates: MaskCandidates, image_size: tuple[int, int]) -> MaskCandidates:
        """Fill small holes and delete small islands (``min_mask_region_area``), then drop new duplicates
        by box NMS that prefers unchanged masks. Changed masks get new RLEs and boxes."""
        if len(candidates) == 0:
            return candidates
        masks, unchanged = [], []
        for counts in candidates.rles:
            mask = rle_to_mask({"size": list(image_size), "counts": counts})
            mask, holes_changed = remove_small_regions(mask, self.min_mask_region_area, "holes")
            mask, islands_changed = remove_small_regions(mask, self.min_mask_region_area, "islands")
            masks.append(torch.from_numpy(mask))
            unchanged.append(not (holes_changed or islands_changed))
        stacked = torch.stack(masks)
        boxes = masks_to_boxes(stacked)
        scores = torch.tensor(unchanged, dtype=torch.float)
        nms_thresh = max(self.box_nms_thresh, self.crop_nms_thresh)
        keep = batched_nms(boxes.float(), scores, torch.zeros(len(boxes)), nms_thresh)
        changed = [i for i in keep.tolist() if not unchanged[i]]
        rles = list(candidates.rles)
        for i, counts in zip(changed, mask_to_rle(stacked[changed]), strict=True):
            rles[i] = counts
        new_boxes = candidates.boxes.clone()
        new_boxes[changed] = boxes[changed]
        return MaskCandidates(
            rles,
            new_boxes,
            candidates.iou_preds,
            candidates.stability,
            candidates.points,
            candidates.crop_boxes,
        ).select(keep)

    def records(self, candidates: MaskCandidates, image_size: tuple[int, int]) -> list[dict[str, Any]]:
        """Candidates -> the official record dicts, segmentation in ``output_mode``."""
        size = list(image_size)
        records = []
        columns = zip(
            candidates.rles,
            candidates.boxes.tolist(),
            candidates.iou_preds.tolist(),
            candidates.points.tolist(),
            candidates.stability.tolist(),
            candidates.crop_boxes.tolist(),
            strict=True,
        )
        for counts, box, iou, point, stability, crop_box in columns:
            rle = {"size": size, "counts": counts.tolist()}
            if self.output_mode == "binary_mask":
                segmentation: Any = rle_to_mask(rle)
            elif self.output_mode == "coco_rle":
                segmentation = rle_to_coco(rle)
            else:
                segmentation = rle
            records.append(
                {
                    "segmentation": segmentation,
                    "area": rle_area(counts),
                    "bbox": _xyxy_to_xywh(box),
                    "predicted_iou": iou,
                    "point_coords": [point],
                    "stability_score": stability,
                    "crop_box": _xyxy_to_xywh(crop_box),
                }
            )
        return records


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_boxes(boxes: Any, image_size: tuple[int, int]) -> np.ndarray:
    """Box prompts -> Kx4 float64 XYXY clipped to the image (H, W); clear errors for malformed ones."""
    arr = np.asarray(boxes.detach().cpu() if isinstance(boxes, torch.Tensor) else boxes, dtype=np.float64)
    arr = arr.reshape(0, 4) if arr.size == 0 else arr
    if arr.ndim != 2 or arr.shape[1] != 4 or not np.isfinite(arr).all():
        raise ValueError(f"boxes must be a finite Kx4 array of (x0, y0, x1, y1), got shape {arr.shape}")
    if ((arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1])).any():
        raise ValueError("boxes must have x0 <= x1 and y0 <= y1")
    h, w = image_size
    return np.clip(arr, 0, [w, h, w, h])


def _point_grids(
    points_per_side: int | None,
    point_grids: Sequence[np.ndarray] | None,
    crop_n_layers: int,
    downscale: int,
) -> list[np.ndarray]:
    """The per-layer grids of (x, y) in [0, 1], from ``points_per_side`` or checked explicit grids."""
    if (points_per_side is None) == (point_grids is None):
        raise ValueError("give exactly one of points_per_side and point_grids")
    if points_per_side is not None:
        _check_int("points_per_side", points_per_side, 1)
        if int(points_per_side / downscale**crop_n_layers) < 1:
            raise ValueError(
                f"points_per_side={points_per_side} leaves no points in crop layer {crop_n_layers} "
                f"(downscaled by crop_n_points_downscale_factor={downscale} per layer)"
            )
        return build_layer_point_grids(points_per_side, crop_n_layers, downscale)
    grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
    if len(grids) != crop_n_layers + 1:
        raise ValueError(f"point_grids needs one grid per crop layer ({crop_n_layers + 1}), got {len(grids)}")
    for i, grid in enumerate(grids):
        if grid.ndim != 2 or grid.shape[1] != 2 or len(grid) == 0:
            raise ValueError(f"point_grids[{i}] must be Nx2 (x, y) with N >= 1, got shape {grid.shape}")
        if not ((grid >= 0) & (grid <= 1)).all():
            raise ValueError(f"point_grids[{i}] must hold coordinates in [0, 1] (fractions of the crop)")
    return grids


def _uncrop_masks(masks: torch.Tensor, frame: CropFrame) -> torch.Tensor:
    """Kxhxw masks of a crop -> KxHxW masks of the image (zeros outside the crop)."""
    h, w = frame.image_size
    if masks.shape[-2:] == (h, w):
        return masks
    x0, y0, x1, y1 = frame.box
    full = torch.zeros(masks.shape[0], h, w, dtype=torch.bool)
    full[:, y0:y1, x0:x1] = masks
    return full


def _xyxy_to_xywh(box: list[int]) -> list[int]:
    x0, y0, x1, y1 = box
    return [x0, y0, x1 - x0, y1 - y0]
