"""``MaskCandidates``: masks for a whole image with per-mask columns, the common currency of every
segment-everything source (point grids, detector boxes, instance segmenters).

Masks are kept run-length encoded; every other per-mask value is a tensor column whose first axis is the
mask index. ``select`` / ``concat`` treat all columns alike, so a source may add columns of its own
(a class id, a detector score): they flow through filtering, NMS and into the records unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .utils.amg import mask_to_rle, masks_to_boxes, rle_area, rle_to_coco, rle_to_mask

# Columns every source provides, and the record keys they become (in this order).
STANDARD_COLUMNS = ("boxes", "iou_preds", "points", "stability", "crop_boxes")
OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


@dataclass(frozen=True)
class CropFrame:
    """Where a crop sits: ``box`` XYXY (exclusive max) in an image of ``image_size`` (H, W)."""

    box: tuple[int, int, int, int]
    image_size: tuple[int, int]
    layer: int = 0

    @classmethod
    def whole(cls, image_size: tuple[int, int]) -> CropFrame:
        h, w = image_size
        return cls((0, 0, w, h), (h, w))

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the crop."""
        x0, y0, x1, y1 = self.box
        return y1 - y0, x1 - x0

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The crop's pixels of an HxWx... image."""
        x0, y0, x1, y1 = self.box
        return image[y0:y1, x0:x1]

    def uncrop_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """Kxhxw masks of the crop -> KxHxW masks of the image (zeros outside the crop)."""
        h, w = self.image_size
        if masks.shape[-2:] == (h, w):
            return masks
        x0, y0, x1, y1 = self.box
        full = torch.zeros(masks.shape[0], h, w, dtype=torch.bool)
        full[:, y0:y1, x0:x1] = masks
        return full

    def uncrop_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """Kx4 XYXY crop pixels -> image pixels."""
        x0, y0 = self.box[:2]
        return boxes + torch.tensor([x0, y0, x0, y0], dtype=boxes.dtype)

    def uncrop_points(self, points: torch.Tensor) -> torch.Tensor:
        """Kx2 (x, y) crop pixels -> image pixels."""
        return points + torch.tensor(self.box[:2], dtype=points.dtype)


@dataclass
class MaskCandidates:
    """K masks of one image (the official generator's ``MaskData``).

    ``rles``: K uncompressed RLE count arrays (column-major, as SAM); ``columns``: name -> tensor with K
    rows. Sources give the standard columns ``boxes`` (Kx4 int64 XYXY, inclusive max), ``iou_preds`` (K
    float32), ``points`` (Kx2 float64 prompt pixels), ``stability`` (K float32) and ``crop_boxes`` (Kx4
    int64 XYXY), and may add their own.
    """

    rles: list[np.ndarray] = field(default_factory=list)
    columns: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = {k: len(v) for k, v in self.columns.items() if len(v) != len(self.rles)}
        if bad:
            raise ValueError(f"columns {bad} do not have one row per mask ({len(self.rles)})")

    @classmethod
    def from_masks(
        cls, masks: torch.Tensor, frame: CropFrame, boxes: torch.Tensor | None = None, **columns: torch.Tensor
    ) -> MaskCandidates:
        """Kxhxw bool masks of ``frame``'s crop, their ``boxes`` (crop pixels; computed if None) and other
        columns (``points`` in crop pixels) -> candidates in the image frame, with ``crop_boxes`` added."""
        count = len(masks)
        boxes = masks_to_boxes(masks) if boxes is None else boxes
        if "points" in columns:
            columns["points"] = frame.uncrop_points(columns["points"])
        return cls(
            mask_to_rle(frame.uncrop_masks(masks)),
            {
                "boxes": frame.uncrop_boxes(boxes),
                **columns,
                "crop_boxes": torch.tensor([list(frame.box)] * count, dtype=torch.int64).reshape(count, 4),
            },
        )

    def __len__(self) -> int:
        return len(self.rles)

    def __getitem__(self, column: str) -> torch.Tensor:
        return self.columns[column]

    def areas(self) -> torch.Tensor:
        """K int64 mask areas, pixels."""
        return torch.tensor([rle_area(counts) for counts in self.rles], dtype=torch.int64)

    def select(self, index: torch.Tensor) -> MaskCandidates:
        """The candidates at ``index`` (int64 indices, in that order, or a K bool mask)."""
        positions = torch.arange(len(self))[index].tolist()
        return MaskCandidates(
            [self.rles[i] for i in positions], {k: v[index] for k, v in self.columns.items()}
        )

    def replace_masks(
        self, index: Sequence[int], rles: Sequence[np.ndarray], boxes: torch.Tensor
    ) -> MaskCandidates:
        """A copy where the masks at ``index`` get new RLEs and boxes (Kx4, one per index)."""
        new_rles = list(self.rles)
        for i, counts in zip(index, rles, strict=True):
            new_rles[i] = counts
        columns = dict(self.columns)
        columns["boxes"] = columns["boxes"].clone()
        columns["boxes"][list(index)] = boxes
        return MaskCandidates(new_rles, columns)

    @classmethod
    def concat(cls, parts: Sequence[MaskCandidates]) -> MaskCandidates:
        """All masks of ``parts`` in order; empty parts may lack columns, the others must agree."""
        full = [p for p in parts if len(p)]
        if not full:
            return cls()
        names = list(full[0].columns)
        if any(list(p.columns) != names for p in full):
            raise ValueError(
                f"cannot concatenate candidates with different columns: {[list(p.columns) for p in full]}"
            )
        return cls(
            [rle for p in full for rle in p.rles],
            {name: torch.cat([p.columns[name] for p in full]) for name in names},
        )

    def records(self, image_size: tuple[int, int], output_mode: str = "binary_mask") -> list[dict[str, Any]]:
        """One official record per mask: ``segmentation`` (in ``output_mode``), ``area``, ``bbox`` (XYWH),
        ``predicted_iou``, ``point_coords`` ([[x, y]]), ``stability_score``, ``crop_box`` (XYWH), plus one
        key per extra column."""
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}, got {output_mode!r}")
        size = list(image_size)
        extra = {k: v.tolist() for k, v in self.columns.items() if k not in STANDARD_COLUMNS}
        standard = {
            k: self.columns[k].tolist() if k in self.columns else [None] * len(self) for k in STANDARD_COLUMNS
        }
        records = []
        for i, counts in enumerate(self.rles):
            rle = {"size": size, "counts": counts.tolist()}
            if output_mode == "binary_mask":
                segmentation: Any = rle_to_mask(rle)
            elif output_mode == "coco_rle":
                segmentation = rle_to_coco(rle)
            else:
                segmentation = rle
            point = standard["points"][i]
            records.append(
                {
                    "segmentation": segmentation,
                    "area": rle_area(counts),
                    "bbox": _xyxy_to_xywh(standard["boxes"][i]),
                    "predicted_iou": standard["iou_preds"][i],
                    "point_coords": None if point is None else [point],
                    "stability_score": standard["stability"][i],
                    "crop_box": _xyxy_to_xywh(standard["crop_boxes"][i]),
                    **{k: v[i] for k, v in extra.items()},
                }
            )
        return records


def _xyxy_to_xywh(box: list[int]) -> list[int]:
    x0, y0, x1, y1 = box
    return [x0, y0, x1 - x0, y1 - y0]
