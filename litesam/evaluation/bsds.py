"""The BSDS500 boundary benchmark: ODS, OIS, AP and R50 of soft edge maps against human boundaries.

As the BSDS ``correspondPixels`` benchmark (and Dollár's ``edgesEvalImg``, which the SAM paper used):

- 99 thresholds ``t_k = k / 100``; the edge map (already thinned, as ``litesam edges`` gives it) is
  binarised as ``edges >= t_k``.
- Matching: a predicted and a human boundary pixel may match when their Euclidean distance is at most
  ``0.0075`` of the image diagonal (4.3 px on 481x321). Each pixel matches at most one pixel of the other
  map: a *maximum bipartite matching* (Hopcroft-Karp, ``scipy.sparse.csgraph.maximum_bipartite_matching``)
  on the graph of all pairs within that distance. This is exact, where ``correspondPixels`` solves a
  min-cost assignment on a sparsified graph (same matched count up to its approximation). A dilation
  shortcut (predicted pixels within the distance of *any* human pixel) would match a double edge twice
  against one human edge; the matching does not (``tests/test_eval_bsds.py`` shows the difference).
- Per threshold, over the human annotations of an image: a predicted pixel is correct if it matches a
  pixel of any annotation (precision = correct / predicted); recall = matched human pixels / human pixels,
  summed over all annotations.
- ODS: F of the counts summed over all images at the best single threshold, with the standard linear
  interpolation between neighbouring thresholds (100 steps). OIS: F of the counts summed over images,
  each at its own best threshold (no interpolation). AP: precision averaged over recall 0, 0.01, ..., 1,
  linearly interpolated between the curve's distinct recalls and 0 outside them; a curve with a single
  recall (a binary edge map) has the area precision x recall. R50: recall at precision 0.5 (at the lowest
  precision if all are above it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching
from scipy.spatial import cKDTree

from ..errors import InputError

THRESHOLDS = np.arange(1, 100) / 100.0  # 99 thresholds, as linspace(1/100, 99/100, 99)
MAX_DIST = 0.0075  # matching tolerance, fraction of the image diagonal


def match_boundaries(
    pred: np.ndarray, gt: np.ndarray, max_dist: float = MAX_DIST
) -> tuple[np.ndarray, np.ndarray]:
    """HxW bool predicted and human boundaries -> (HxW bool predicted pixels matched, HxW bool human pixels
    matched) by a maximum bipartite matching of pixels at most ``max_dist`` x diagonal apart."""
    radius = max_dist * float(np.hypot(*pred.shape))
    p, g = np.argwhere(pred), np.argwhere(gt)
    matched_p, matched_g = np.zeros_like(pred, bool), np.zeros_like(gt, bool)
    if len(p) and len(g):
        pairs = cKDTree(p).sparse_distance_matrix(cKDTree(g), radius, output_type="coo_matrix")
        graph = csr_matrix((np.ones(pairs.nnz, np.int8), (pairs.row, pairs.col)), shape=(len(p), len(g)))
        partner = maximum_bipartite_matching(graph, perm_type="column")  # per predicted pixel, -1: none
        hit = partner >= 0
        matched_p[tuple(p[hit].T)] = True
        matched_g[tuple(g[partner[hit]].T)] = True
    return matched_p, matched_g


@dataclass(frozen=True)
class EdgeCounts:
    """One image's counts per threshold (arrays of 99): matched human pixels ``cnt_r`` of ``sum_r``, and
    correct predicted pixels ``cnt_p`` of ``sum_p``."""

    cnt_r: np.ndarray
    sum_r: np.ndarray
    cnt_p: np.ndarray
    sum_p: np.ndarray

    def to_dict(self) -> dict[str, list[int]]:
        return {k: v.astype(int).tolist() for k, v in vars(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, list[int]]) -> EdgeCounts:
        return cls(**{k: np.asarray(v, dtype=np.int64) for k, v in data.items()})


def image_counts(edges: np.ndarray, boundaries: list[np.ndarray], max_dist: float = MAX_DIST) -> EdgeCounts:
    """HxW edge map in [0, 1] and the image's human boundaries (HxW bool each) -> its EdgeCounts."""
    for gt in boundaries:
        if gt.shape != edges.shape:
            raise InputError(f"edge map is {edges.shape[1]}x{edges.shape[0]}, its ground truth"
                             f" {gt.shape[1]}x{gt.shape[0]}")  # fmt: skip
    counts = np.zeros((4, len(THRESHOLDS)), np.int64)
    for k, t in enumerate(THRESHOLDS):
        pred = edges >= t
        correct = np.zeros_like(pred)
        for gt in boundaries:
            matched_p, matched_g = match_boundaries(pred, gt, max_dist)
            correct |= matched_p
            counts[0, k] += matched_g.sum()
            counts[1, k] += gt.sum()
        counts[2, k], counts[3, k] = correct.sum(), pred.sum()
    return EdgeCounts(*counts)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return num / np.where(den > 0, den, 1)


def f_measure(recall: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Harmonic mean of recall and precision (0 where both are 0)."""
    return _ratio(2 * precision * recall, precision + recall)


def _best_interpolated(recall: np.ndarray, precision: np.ndarray) -> tuple[float, float, float]:
    """(R, P, F) of the best F along the curve, interpolating linearly between neighbouring thresholds."""
    d = np.linspace(0, 1, 100)[:, None]
    r = recall[:-1] * (1 - d) + recall[1:] * d if len(recall) > 1 else recall[None]
    p = precision[:-1] * (1 - d) + precision[1:] * d if len(recall) > 1 else precision[None]
    f = f_measure(r, p)
    best = np.unravel_index(np.argmax(f), f.shape)
    return float(r[best]), float(p[best]), float(f[best])


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Precision averaged over recall 0, 0.01, ..., 1 (see the module docstring)."""
    r, first = np.unique(recall, return_index=True)
    p = precision[first]
    keep = r > 0
    r, p = r[keep], p[keep]
    if len(r) == 0:
        return 0.0
    if len(r) == 1:
        return float(r[0] * p[0])
    grid = np.linspace(0, 1, 101)
    values = np.interp(grid, r, p, left=np.nan, right=np.nan)
    return float(np.nansum(values) / 100)


def recall_at_half_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """R50: recall where precision is 0.5 (at the lowest precision if every precision exceeds it)."""
    p, first = np.unique(precision, return_index=True)
    r = recall[first]
    return float(np.interp(max(p[0], 0.5), p, r))


def summarize(counts: list[EdgeCounts]) -> dict[str, object]:
    """Per-image counts -> {ODS, OIS, AP, R50, best threshold, curve: thresholds, recall, precision}."""
    if not counts:
        raise InputError("no images to score")
    stacked = np.stack([[c.cnt_r, c.sum_r, c.cnt_p, c.sum_p] for c in counts])  # images x 4 x thresholds
    total = stacked.sum(axis=0)
    recall, precision = _ratio(total[0], total[1]), _ratio(total[2], total[3])
    _, _, ods = _best_interpolated(recall, precision)
    per_image_f = f_measure(_ratio(stacked[:, 0], stacked[:, 1]), _ratio(stacked[:, 2], stacked[:, 3]))
    at_best = stacked[np.arange(len(counts)), :, per_image_f.argmax(axis=1)].sum(axis=0)  # 4 counts
    return {
        "ODS": ods,
        "OIS": float(f_measure(_ratio(at_best[0], at_best[1]), _ratio(at_best[2], at_best[3]))),
        "AP": average_precision(recall, precision),
        "R50": recall_at_half_precision(recall, precision),
        "ods_threshold": float(THRESHOLDS[int(np.argmax(f_measure(recall, precision)))]),
        "curve": {
            "threshold": THRESHOLDS.tolist(),
            "recall": recall.tolist(),
            "precision": precision.tolist(),
        },
    }


def read_boundaries(folder: str | os.PathLike, stem: str) -> list[np.ndarray]:
    """The human boundaries of image ``stem`` in ``folder``: ``stem.mat`` (BSDS ``groundTruth`` cell of
    structs with ``Boundaries``), or PNGs ``stem.png`` / ``stem_<k>.png`` (non-zero pixels = boundary)."""
    folder = Path(folder)
    mat = folder / f"{stem}.mat"
    if mat.is_file():
        return _read_mat(mat)
    pngs = sorted([*folder.glob(f"{stem}.png"), *folder.glob(f"{stem}_*.png")])
    if not pngs:
        raise InputError(f"no ground truth for {stem} in {folder} ({stem}.mat or {stem}.png)")
    out = []
    for png in pngs:
        try:
            out.append(np.asarray(Image.open(png).convert("L")) > 0)
        except OSError as e:
            raise InputError(f"cannot read ground truth {png}: {e}") from None
    return out


def _read_mat(path: Path) -> list[np.ndarray]:
    from scipy.io import loadmat

    try:
        cells = loadmat(str(path), simplify_cells=True)["groundTruth"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path} is not BSDS ground truth (a groundTruth cell of Boundaries): {e}") from None
    cells = cells if isinstance(cells, list) else [cells]
    try:
        return [np.asarray(c["Boundaries"]).astype(bool) for c in cells]
    except (KeyError, TypeError, IndexError):
        raise InputError(f"{path}: groundTruth entries lack Boundaries") from None
