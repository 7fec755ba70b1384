"""Where segment-everything's prompts come from: a point grid (with crops) or boxes (e.g. a detector's).

A source says which crops of the image to encode and which prompts to decode on each; the mask
generator runs the same filter / NMS / record pipeline whatever the source.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from .candidates import CropFrame
from .errors import InputError
from .prompts import Prompts
from .utils.amg import build_layer_point_grids, generate_crop_boxes

Columns = dict[str, torch.Tensor]


class PromptSource(Protocol):
    """Prompts for segment-everything."""

    multimask_output: bool  # decode each prompt into 3 candidates (points) or 1 (boxes)

    def crops(self, image_size: tuple[int, int]) -> list[CropFrame]:
        """The crops of an (H, W) image to encode, the whole image first."""
        ...

    def prompts(self, frame: CropFrame) -> tuple[Prompts, Columns]:
        """K prompt sets in the crop's pixels, and per-prompt columns with K rows that every mask of the
        prompt inherits: ``points`` (Kx2 float64 crop pixels, the point its records show) and any other
        (e.g. a detector's ``det_score``), which the records carry as extra keys."""
        ...


class GridSource:
    """A grid of single foreground points per crop layer (the official generator's prompts).

    ``point_grids``: one Nx2 array of (x, y) in [0, 1] per crop layer; ``crop_n_layers`` extra layers cut
    the image into ``2**i x 2**i`` crops overlapping by ``crop_overlap_ratio`` (see
    :func:`~litesam.utils.amg.generate_crop_boxes`).
    """

    multimask_output = True

    def __init__(
        self,
        point_grids: Sequence[np.ndarray],
        crop_n_layers: int = 0,
        crop_overlap_ratio: float = 512 / 1500,
    ) -> None:
        if len(point_grids) != crop_n_layers + 1:
            raise InputError(
                f"point_grids needs one grid per crop layer ({crop_n_layers + 1}), got {len(point_grids)}"
            )
        if not 0.0 <= crop_overlap_ratio < 1.0:
            raise InputError(f"crop_overlap_ratio must be in [0, 1), got {crop_overlap_ratio!r}")
        for i, grid in enumerate(point_grids):
            if grid.ndim != 2 or grid.shape[1] != 2 or len(grid) == 0:
                raise InputError(f"point_grids[{i}] must be Nx2 (x, y) with N >= 1, got shape {grid.shape}")
            if not ((grid >= 0) & (grid <= 1)).all():
                raise InputError(f"point_grids[{i}] must hold coordinates in [0, 1] (fractions of the crop)")
        self.point_grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
        self.crop_n_layers = crop_n_layers
        self.crop_overlap_ratio = crop_overlap_ratio

    @classmethod
    def regular(
        cls, points_per_side: int, crop_n_layers: int = 0, downscale: int = 1, **kwargs: Any
    ) -> GridSource:
        """``points_per_side**2`` points on the whole image, ``int(points_per_side / downscale**i)`` per
        side in crop layer i."""
        if int(points_per_side / downscale**crop_n_layers) < 1:
            raise InputError(
                f"points_per_side={points_per_side} leaves no points in crop layer {crop_n_layers} "
                f"(downscaled by crop_n_points_downscale_factor={downscale} per layer)"
            )
        return cls(
            build_layer_point_grids(points_per_side, crop_n_layers, downscale), crop_n_layers, **kwargs
        )

    def crops(self, image_size: tuple[int, int]) -> list[CropFrame]:
        boxes, layers = generate_crop_boxes(image_size, self.crop_n_layers, self.crop_overlap_ratio)
        return [CropFrame(tuple(box), image_size, layer) for box, layer in zip(boxes, layers, strict=True)]

    def prompts(self, frame: CropFrame) -> tuple[Prompts, Columns]:
        h, w = frame.size
        points = torch.from_numpy(self.point_grids[frame.layer] * np.array([[w, h]]))
        labels = torch.ones(len(points), 1, dtype=torch.int64)
        return Prompts(points=points[:, None, :], labels=labels), {"points": points}


class BoxSource:
    """One box prompt per object (MobileSAM-v2's box-prompted everything): Kx4 XYXY image pixels, decoded
    into one mask each on the whole image; each record's point is its box centre.

    Boxes reaching past the border are clipped to it; a box wholly outside the image is an InputError.
    ``columns``: per-box values (K rows, e.g. a detector's ``det_score``) that the records carry.
    """

    multimask_output = False

    def __init__(self, boxes: Any, **columns: torch.Tensor) -> None:
        arr = np.asarray(boxes.detach().cpu() if isinstance(boxes, torch.Tensor) else boxes, dtype=np.float64)
        arr = arr.reshape(0, 4) if arr.size == 0 else arr
        if arr.ndim != 2 or arr.shape[1] != 4:
            raise InputError(f"boxes must be a Kx4 array of (x0, y0, x1, y1), got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise InputError("boxes contain NaN or infinite values")
        if ((arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1])).any():
            raise InputError("boxes must have x0 <= x1 and y0 <= y1")
        for name, column in columns.items():
            if len(column) != len(arr):
                raise InputError(f"column {name!r} has {len(column)} rows for {len(arr)} boxes")
        self.boxes, self.columns = arr, columns

    def crops(self, image_size: tuple[int, int]) -> list[CropFrame]:
        self._clipped(image_size)  # refuse boxes outside the image before anything is encoded
        return [CropFrame.whole(image_size)]

    def prompts(self, frame: CropFrame) -> tuple[Prompts, Columns]:
        boxes = self._clipped(frame.image_size)
        return Prompts(boxes=boxes), {"points": (boxes[:, :2] + boxes[:, 2:]) / 2, **self.columns}

    def _clipped(self, image_size: tuple[int, int]) -> torch.Tensor:
        """Kx4 float64 boxes clipped to an (H, W) image."""
        h, w = image_size
        b = self.boxes
        outside = (b[:, 0] > w) | (b[:, 1] > h) | (b[:, 2] < 0) | (b[:, 3] < 0)
        if outside.any():
            x0, y0, x1, y1 = b[np.argmax(outside)]
            raise InputError(
                f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the image (width {w}, height {h})"
            )
        return torch.from_numpy(np.clip(b, 0, [w, h, w, h]))
