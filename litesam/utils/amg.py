"""Building blocks of automatic mask generation, vectorised in plain torch / numpy.

Point grids and crop boxes, mask -> box, stability score, greedy batched NMS, run-length encoding
(uncompressed and COCO's compressed string form) and removal of small islands and holes (8-connected
components labelled over runs, no OpenCV). Every function reproduces the number the official SAM
generator computes for the same input.

Conventions: masks are bool ``KxHxW``; boxes are XYXY with *inclusive* maximum pixel indices (a one-pixel
mask at (x, y) has box ``[x, y, x, y]``); RLE counts run over the mask in column-major (Fortran) order
and alternate starting with a run of zeros (the first count may be 0), as pycocotools expects.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

# Boxes per block of the blockwise greedy NMS: bounds its memory to BLOCK x N IoUs.
_NMS_BLOCK = 512


def build_point_grid(n_per_side: int) -> np.ndarray:
    """``n_per_side**2 x 2`` (x, y) cell centres of an n x n grid over [0, 1]^2, x varying fastest."""
    side = np.linspace(0.5 / n_per_side, 1 - 0.5 / n_per_side, n_per_side)
    xs, ys = np.meshgrid(side, side)
    return np.stack([xs.ravel(), ys.ravel()], axis=-1)


def build_layer_point_grids(n_per_side: int, n_layers: int, downscale: int) -> list[np.ndarray]:
    """One grid per crop layer: layer i has ``int(n_per_side / downscale**i)`` points per side."""
    return [build_point_grid(int(n_per_side / downscale**i)) for i in range(n_layers + 1)]


def generate_crop_boxes(
    image_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """Crop boxes (XYXY pixels, exclusive max) and their layer index: the whole image (layer 0), then
    layer i (1-based) tiles the image with ``2**i x 2**i`` crops overlapping by
    ``int(overlap_ratio * short_side * 2 / 2**i)`` pixels. Within a layer crops go column by column."""
    h, w = image_size
    boxes, layers = [[0, 0, w, h]], [0]
    for layer in range(1, n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * min(h, w) * (2 / per_side))
        crop_w = math.ceil((overlap * (per_side - 1) + w) / per_side)
        crop_h = math.ceil((overlap * (per_side - 1) + h) / per_side)
        for i in range(per_side):
            x0 = int((crop_w - overlap) * i)
            for j in range(per_side):
                y0 = int((crop_h - overlap) * j)
                boxes.append([x0, y0, min(x0 + crop_w, w), min(y0 + crop_h, h)])
                layers.append(layer)
    return boxes, layers


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Bool ``...xHxW`` masks -> int64 ``...x4`` XYXY boxes with inclusive max; ``[0, 0, 0, 0]`` if empty."""
    *lead, h, w = masks.shape
    if masks.numel() == 0:
        return torch.zeros(*lead, 4, dtype=torch.int64, device=masks.device)
    as_bytes = masks.view(torch.uint8)  # max over uint8 vectorises where bool any() does not (10x)
    rows = as_bytes.amax(dim=-1)  # ... x H, 1 where the row has a pixel
    cols = as_bytes.amax(dim=-2)  # ... x W
    top = rows.argmax(dim=-1)
    bottom = h - 1 - rows.flip(-1).argmax(dim=-1)
    left = cols.argmax(dim=-1)
    right = w - 1 - cols.flip(-1).argmax(dim=-1)
    boxes = torch.stack([left, top, right, bottom], dim=-1)
    return boxes * rows.any(dim=-1, keepdim=True)


def box_near_crop_edge(
    boxes: torch.Tensor, crop_box: list[int], image_box: list[int], atol: float = 20.0
) -> torch.Tensor:
    """Kx4 XYXY boxes in the crop's frame -> K bool: some side lies within ``atol`` pixels of the crop's
    edge where that edge is not also the image's edge (such masks are likely cut off by the crop)."""
    x0, y0 = crop_box[:2]
    boxes = (boxes + torch.tensor([x0, y0, x0, y0], device=boxes.device)).float()
    crop = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
    image = torch.as_tensor(image_box, dtype=torch.float, device=boxes.device)
    near_crop = (boxes - crop).abs() <= atol
    near_image = (boxes - image).abs() <= atol
    return (near_crop & ~near_image).any(dim=1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Kx4 XYXY -> K areas ``(x1 - x0) * (y1 - y0)`` (no +1, as torchvision)."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _pairwise_iou(
    a: torch.Tensor, area_a: torch.Tensor, b: torch.Tensor, area_b: torch.Tensor
) -> torch.Tensor:
    """IoU of every box of ``a`` (Ax4) with every box of ``b`` (Bx4): AxB, torchvision's formula."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, categories: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Greedy non-maximum suppression within each category.

    Boxes (Kx4 XYXY float) are visited in descending score order (stable, so ties keep input order); a box
    is dropped when its IoU with an already kept box of its category exceeds ``iou_threshold``. Returns
    the int64 indices of the kept boxes in visiting order. Works block by block: IoUs of a block of boxes
    with the boxes after it, the greedy pass within the block, then one vectorised suppression of the
    later boxes by the block's survivors.
    """
    n = boxes.shape[0]
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes, categories = boxes[order].float(), categories[order]
    areas = box_area(boxes)
    removed = np.zeros(n, dtype=bool)
    for start in range(0, n, _NMS_BLOCK):
        stop = min(start + _NMS_BLOCK, n)
        iou = _pairwise_iou(boxes[start:stop], areas[start:stop], boxes[start:], areas[start:])
        over = ((iou > iou_threshold) & (categories[start:stop, None] == categories[None, start:])).numpy()
        block = removed[start:stop]  # a view: the greedy pass writes through
        for i in range(stop - start):
            if not block[i]:
                block[i + 1 :] |= over[i, i + 1 : stop - start]
        removed[stop:] |= over[~block, stop - start :].any(axis=0)
    return order[torch.from_numpy(~removed)]


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of paired bool masks KxHxW -> K floats; two empty masks agree perfectly (IoU 1)."""
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    inter = (a & b).sum(axis=1)
    union = (a | b).sum(axis=1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def mask_to_rle(masks: torch.Tensor) -> list[np.ndarray]:
    """Bool KxHxW masks -> K int64 arrays of uncompressed RLE counts (column-major, zeros first).

    The column-major pixel streams and the positions where they change value are computed for all
    masks at once; each mask's run lengths are then the gaps between its change positions.
    """
    k, h, w = masks.shape
    size = h * w
    # no copy when the masks are transposed views of KxWxH tensors (column-major already)
    stream = np.ascontiguousarray(masks.cpu().numpy().transpose(0, 2, 1)).reshape(k, size)
    changes = stream[:, 1:] != stream[:, :-1]
    out = []
    for first, change in zip(stream[:, 0], changes, strict=True):
        runs = np.diff(np.concatenate([[0], np.flatnonzero(change) + 1, [size]]))
        out.append(np.concatenate([[0], runs]) if first else runs)
    return out


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Uncompressed RLE ``{'size': [H, W], 'counts': [...]}`` -> HxW bool mask."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.sum() != h * w or (counts < 0).any():
        raise ValueError(f"RLE counts must be non-negative and sum to H*W = {h * w}, got {counts.sum()}")
    values = (np.arange(len(counts)) % 2).astype(bool)
    return np.repeat(values, counts).reshape(w, h).T


def rle_area(counts: Any) -> int:
    """Number of foreground pixels of RLE counts (every second run)."""
    return int(np.asarray(counts, dtype=np.int64)[1::2].sum())


def rle_to_coco(rle: dict[str, Any]) -> dict[str, Any]:
    """Uncompressed RLE -> COCO compressed RLE ``{'size': [H, W], 'counts': str}`` (pycocotools' format).

    Each count (from the fourth on, minus the count two before it) is written as little-endian 5-bit
    groups with a continuation bit, each group as the character ``48 + group``, as in pycocotools'
    ``rleToString``.
    """
    counts = np.asarray(rle["counts"], dtype=np.int64)
    values = counts.copy()
    values[3:] -= counts[1:-2]
    groups = (values[:, None] >> (5 * np.arange(8))) & 0x1F  # 8 groups hold any 32-bit count
    rest = values[:, None] >> (5 * np.arange(1, 9))
    more = np.where(groups & 0x10, rest != -1, rest != 0)
    n_groups = np.argmin(more, axis=1) + 1  # groups up to the first that needs no continuation
    used = np.arange(8) < n_groups[:, None]
    chars = 48 + (groups | np.where(more, 0x20, 0))
    return {"size": list(rle["size"]), "counts": chars[used].astype(np.uint8).tobytes().decode("ascii")}


def coco_to_rle(coco: dict[str, Any]) -> dict[str, Any]:
    """COCO compressed RLE (``counts`` a str or bytes) -> uncompressed RLE with a list of counts."""
    text = coco["counts"]
    chars = np.frombuffer(text.encode("ascii") if isinstance(text, str) else text, dtype=np.uint8)
    groups = chars.astype(np.int64) - 48
    last = (groups & 0x20) == 0  # a group without the continuation bit ends a value
    value_id = np.concatenate([[0], np.cumsum(last)[:-1]])
    first = np.concatenate([[0], np.flatnonzero(last)[:-1] + 1])
    shift = 5 * (np.arange(len(groups)) - first[value_id])
    values = np.zeros(int(last.sum()), dtype=np.int64)
    np.add.at(values, value_id, (groups & 0x1F) << shift)
    ends = np.flatnonzero(last)
    negative = (groups[ends] & 0x10) != 0
    values[negative] -= 1 << (shift[ends[negative]] + 5)  # sign-extend the last group
    values[1::2] = np.cumsum(values[1::2])  # counts from the fourth on were stored as differences
    values[2::2] = np.cumsum(values[2::2])
    return {"size": list(coco["size"]), "counts": values.tolist()}


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of True in an HxW bool mask: (row, start, stop) int64 arrays, raster order."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)  # +1 where a run starts, -1 one past its end
    row, start = np.nonzero(edges == 1)
    _, stop = np.nonzero(edges == -1)
    return row, start, stop


def label_runs(mask: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """8-connected components of an HxW bool mask, labelled per run.

    Returns the runs (row, start, stop) and each run's component id. Ids number the components in
    raster order of their first pixel (0, 1, ...), as OpenCV's labelling does (offset by its background).
    Runs in consecutive rows touch when their column spans overlap or meet diagonally; components are
    merged by vectorised union-find (hook roots to the smaller root, then pointer jumping).
    """
    row, start, stop = _runs(mask)
    n = len(row)
    if n == 0:
        return (row, start, stop), np.zeros(0, dtype=np.int64)
    stride = mask.shape[1] + 2  # row keys never collide, even with the -1/+1 diagonal reach
    first_key, last_key = row * stride + start, row * stride + stop - 1
    # runs b of the next row touching run a: last_b >= start_a - 1 and first_b <= (stop_a - 1) + 1
    lo = np.searchsorted(last_key, (row + 1) * stride + start - 1, side="left")
    hi = np.searchsorted(first_key, (row + 1) * stride + stop, side="right")
    count = np.maximum(hi - lo, 0)
    a = np.repeat(np.arange(n), count)
    b = np.arange(count.sum()) + np.repeat(lo - (np.cumsum(count) - count), count)
    parent = np.arange(n)
    while True:
        ra, rb = parent[a], parent[b]
        differ = ra != rb
        if not differ.any():
            break
        np.minimum.at(parent, np.maximum(ra, rb)[differ], np.minimum(ra, rb)[differ])
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    _, component = np.unique(parent, return_inverse=True)
    return (row, start, stop), component


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or delete islands (``"islands"``) smaller than ``area_thresh`` pixels.

    mask: HxW bool. Holes are 8-connected components of the complement (including ones touching the
    border); islands are 8-connected components of the mask. If every island is small, the largest (the
    first in raster order on ties) is kept. Returns the new mask and whether any region was small.
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    fill_holes = mode == "holes"
    work = ~mask if fill_holes else mask
    (row, start, stop), component = label_runs(work)
    sizes = np.bincount(component, weights=stop - start).astype(np.int64)
    small = sizes < area_thresh
    if not small.any():
        return mask, False
    if fill_holes:
        flip = small[component]  # runs of small holes become foreground
    else:
        drop = small if not small.all() else np.arange(len(sizes)) != np.argmax(sizes)
        flip = drop[component]  # runs of small islands become background
    h, w = mask.shape
    delta = np.zeros((h, w + 1), dtype=np.int32)
    delta[row[flip], start[flip]] = 1  # maximal runs: starts and stops of one row are all distinct
    delta[row[flip], stop[flip]] = -1
    flipped = np.cumsum(delta, axis=1)[:, :w].astype(bool)
    return mask ^ flipped, True
