"""``evaluate_edges``: edge maps of every image in a folder scored with the BSDS benchmark (:mod:`.bsds`).

The edge maps come from a callable (image path -> HxW float map in [0, 1]): the model's
:class:`~litesam.EdgeDetector` for ``litesam eval edges --model``, or :func:`saved_edge_maps` for maps
written earlier (``litesam edges`` writes ``<name>.npy``; an 8-bit PNG is read as value / 255).
Each image's per-threshold counts go to the :class:`~.resume.ResultLog`, so a rerun continues.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..errors import InputError
from ..utils.io import find_images
from .bsds import EdgeCounts, image_counts, read_boundaries, summarize
from .resume import ResultLog

EdgeSource = Callable[[Path], np.ndarray]  # image path -> HxW edge map in [0, 1]


def saved_edge_maps(folder: str | os.PathLike) -> EdgeSource:
    """Edge maps stored in ``folder`` as ``<image stem>.npy`` (float in [0, 1]) or ``<stem>.png``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"edge map folder not found: {folder}")

    def read(image: Path) -> np.ndarray:
        npy, png = folder / f"{image.stem}.npy", folder / f"{image.stem}.png"
        try:
            if npy.is_file():
                return np.load(npy).astype(np.float64)
            if png.is_file():
                return np.asarray(Image.open(png).convert("L"), dtype=np.float64) / 255.0
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read the edge map of {image.name} in {folder}: {e}") from None
        raise InputError(f"no edge map for {image.name} in {folder} ({npy.name} or {png.name})")

    return read


def evaluate_edges(
    edges: EdgeSource,
    images: str | os.PathLike,
    ground_truth: str | os.PathLike,
    log: ResultLog | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """BSDS scores of ``edges`` over the images of folder ``images`` against the human boundaries in
    ``ground_truth`` (``.mat`` or PNG, see :func:`.bsds.read_boundaries`, all read before any edge map).
    Returns ``{protocol, images, metrics: {ODS, OIS, AP, R50}, ods_threshold, curve}``."""
    if not Path(images).is_dir():
        raise InputError(f"image folder not found: {images}")
    if not Path(ground_truth).is_dir():
        raise InputError(f"ground truth folder not found: {ground_truth}")
    paths = [job.path for job in find_images([images])]
    if not paths:
        raise InputError(f"no images in {images}")
    truth = {p.name: read_boundaries(ground_truth, p.stem) for p in paths}
    done = {} if log is None else dict(log.results)
    bar = tqdm(paths, desc="BSDS edges", unit="image", disable=not progress)
    for path in bar:
        if path.name not in done:
            edge_map = edges(path)
            done[path.name] = image_counts(edge_map, truth[path.name]).to_dict()
            if log is not None:
                log.add(path.name, done[path.name])
    scores = summarize([EdgeCounts.from_dict(done[p.name]) for p in paths])
    metrics = {k: scores.pop(k) for k in ("ODS", "OIS", "AP", "R50")}
    return {"protocol": "edges", "images": len(paths), "metrics": metrics, **scores}
