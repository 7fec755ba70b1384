"""``Prompts``: a batch of B prompt sets for one image (points, boxes, a previous mask), checked once.

The same type travels in two frames: users and :meth:`litesam.Predictor.decode` take pixels of the
original image; :meth:`litesam.utils.transforms.ImageTransform.apply_prompts` (called by the predictor,
the one place prompts change frames) turns them into the model's prompt frame for ``model.decode``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from .errors import InputError


@dataclass(frozen=True)
class Prompts:
    """B prompt sets; every given field has the same leading B.

    - ``points``: BxNx2 float64 (x, y) pixels, with ``labels`` BxN int64: 1 foreground, 0 background
      (models may use other labels internally, e.g. -1 for padding).
    - ``boxes``: Bx4 float64 (x0, y0, x1, y1) pixels, one box per prompt set.
    - ``mask``: Bx1xSxS float32 low-res logits of a previous prediction (S = 256 for SAM).
    """

    points: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.points is None) != (self.labels is None):
            raise InputError("point coordinates and point labels must be given together")
        sizes = {f.name: len(v) for f in fields(self) if (v := getattr(self, f.name)) is not None}
        if not sizes:
            raise InputError("no prompt given: pass points with labels, a box, or a mask input")
        if len(set(sizes.values())) > 1:
            raise InputError(f"prompt fields must pair up one to one, got batch sizes {sizes}")

    @classmethod
    def single(
        cls,
        point_coords: Any = None,
        point_labels: Any = None,
        box: Any = None,
        mask_input: Any = None,
    ) -> Prompts:
        """One prompt set as the official predictor takes it: point_coords Nx2 with point_labels N, box
        4 numbers (x0, y0, x1, y1), mask_input 1xSxS (or SxS) low-res logits."""
        points = labels = boxes = mask = None
        if point_coords is not None or point_labels is not None:
            points, labels = _points(point_coords, point_labels, batched=False)
        if box is not None:
            boxes = _float_array(box, "box")
            if boxes.shape != (4,) and boxes.shape != (1, 4):
                raise InputError(f"box must be 4 numbers (x0, y0, x1, y1), got shape {boxes.shape}")
            boxes = boxes.reshape(1, 4)
        if mask_input is not None:
            mask = _float_array(mask_input, "mask_input", np.float32)
            mask = mask[None] if mask.ndim == 2 else mask
            if mask.ndim != 3 or mask.shape[0] != 1:
                raise InputError(f"mask_input must be 1xSxS low-res logits, got shape {mask.shape}")
            mask = mask[None]
        return cls._of(points, labels, boxes, mask)

    @classmethod
    def batch(cls, point_coords: Any = None, point_labels: Any = None, boxes: Any = None) -> Prompts:
        """K independent prompt sets: point_coords KxNx2 with point_labels KxN and/or boxes Kx4."""
        points = labels = box_arr = None
        if point_coords is not None or point_labels is not None:
            points, labels = _points(point_coords, point_labels, batched=True)
        if boxes is not None:
            box_arr = _float_array(boxes, "boxes")
            if box_arr.ndim != 2 or box_arr.shape[1] != 4 or len(box_arr) == 0:
                raise InputError(f"boxes must be Kx4 (x0, y0, x1, y1) with K >= 1, got shape {box_arr.shape}")
        return cls._of(points, labels, box_arr, None)

    @classmethod
    def _of(cls, points: Any, labels: Any, boxes: Any, mask: Any) -> Prompts:
        def tensor(a: np.ndarray | None) -> torch.Tensor | None:
            return None if a is None else torch.from_numpy(np.ascontiguousarray(a))

        prompts = cls(tensor(points), tensor(labels), tensor(boxes), tensor(mask))
        if boxes is not None and ((boxes[:, 0] > boxes[:, 2]) | (boxes[:, 1] > boxes[:, 3])).any():
            x0, y0, x1, y1 = boxes[np.argmax((boxes[:, 0] > boxes[:, 2]) | (boxes[:, 1] > boxes[:, 3]))]
            raise InputError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) must have x0 <= x1 and y0 <= y1")
        return prompts

    def __len__(self) -> int:
        return len(next(v for f in fields(self) if (v := getattr(self, f.name)) is not None))

    def __getitem__(self, index: slice) -> Prompts:
        """The prompt sets at ``index`` (a slice or an index tensor)."""
        return self._map(lambda t: t[index])

    def split(self, size: int) -> Iterator[Prompts]:
        """Consecutive chunks of at most ``size`` prompt sets."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise InputError(f"batch size must be a positive integer, got {size!r}")
        for start in range(0, len(self), size):
            yield self[start : start + size]

    def to(self, device: torch.device | str) -> Prompts:
        return self._map(lambda t: t.to(device))

    def check_inside(self, size: tuple[int, int]) -> None:
        """InputError if a point or box reaches outside an image of ``size`` (H, W) pixels."""
        h, w = size
        limits = torch.tensor([w, h], dtype=torch.float64)
        if self.points is not None:
            pts = self.points.reshape(-1, 2).cpu().to(torch.float64)
            outside = ((pts < 0) | (pts > limits)).any(dim=1)
            if outside.any():
                x, y = pts[int(outside.nonzero()[0])].tolist()
                raise InputError(f"point ({x:g}, {y:g}) is outside the image (width {w}, height {h})")
        if self.boxes is not None:
            boxes = self.boxes.cpu().to(torch.float64)
            outside = ((boxes < 0) | (boxes > limits.repeat(2))).any(dim=1)
            if outside.any():
                x0, y0, x1, y1 = boxes[int(outside.nonzero()[0])].tolist()
                raise InputError(
                    f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) reaches outside the image (width {w}, height {h})"
                )

    def _map(self, fn: Any) -> Prompts:
        return replace(
            self, **{f.name: fn(v) for f in fields(self) if (v := getattr(self, f.name)) is not None}
        )


def _points(coords: Any, labels: Any, batched: bool) -> tuple[np.ndarray, np.ndarray]:
    """Checked (B)xNx2 float64 coordinates and (B)xN int64 labels (1 or 0), with a batch axis added."""
    if coords is None or labels is None:
        raise InputError("point_coords and point_labels must be given together")
    coords = _float_array(coords, "point_coords")
    labels = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    want = 3 if batched else 2
    if (
        coords.ndim != want
        or coords.shape[-1] != 2
        or coords.shape[-2] == 0
        or (batched and len(coords) == 0)
    ):
        form = "KxNx2" if batched else "Nx2"
        raise InputError(f"point_coords must be {form} (x, y) with N >= 1, got shape {coords.shape}")
    if labels.shape != coords.shape[:-1]:
        raise InputError(f"point_labels must have shape {coords.shape[:-1]}, got {labels.shape}")
    if labels.dtype.kind not in "iubf" or not np.isin(labels, (0, 1)).all():
        raise InputError(f"point_labels must be 1 (foreground) or 0 (background), got {labels.tolist()}")
    if not batched:
        coords, labels = coords[None], labels[None]
    return coords, labels.astype(np.int64)


def _float_array(value: Any, name: str, dtype: type = np.float64) -> np.ndarray:
    """``value`` as a finite float array; InputError naming ``name`` otherwise."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise InputError(f"{name} must be numeric, got {value!r}") from e
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return arr
