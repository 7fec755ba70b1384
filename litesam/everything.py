"""Segment everything in many images: one COCO-style JSON and one overlay picture per image, a summary,
resume, a progress bar, corrupt images reported and skipped, and several runs sharing one output folder.

Output layout in ``out_dir`` for an image ``<name>`` (its path relative to the folder given, without the
suffix; subfolders are mirrored):

- ``<name>.json`` — SA-1B-style record: ``image`` (file_name, path, height, width), ``annotations``
  (one per mask: id, segmentation as RLE, bbox XYWH, area, predicted_iou, stability_score, point_coords
  — the box centre for box prompts — and crop_box) and ``info`` (model and settings). Written last and
  atomically, so its presence means the image is done: a later run skips it unless ``overwrite``.
- ``<name>_overlay.png`` — the image with every mask coloured and outlined.
- ``<name>.json.lock`` — only while a run works on the image: another run on the same folder leaves the
  image to it ("in progress elsewhere") instead of computing it twice. A lock left by a killed run is
  taken over (see :func:`litesam.utils.io.try_lock`).
- ``summary.json`` — this run's counts, timings, one entry per image (done / skipped / done elsewhere /
  in progress elsewhere / failed), the failures with their reasons, and ``in_folder``: every image whose
  outputs are in the folder, whichever run made them. Rewritten after every image, so an interrupted run
  still leaves an accurate summary, and the run that ends last leaves the complete one.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from tqdm import tqdm

from .errors import InputError, OutputError
from .utils.amg import coco_to_rle, rle_to_mask
from .utils.image import load_image
from .utils.io import (
    ImageJob,
    atomic_write_json,
    atomic_write_png,
    release_lock,
    try_lock,
    writable_folder,
)
from .utils.parallel import gather, rank_share
from .utils.visualize import overlay

BoxPrompts = np.ndarray | dict[str, np.ndarray]
SUMMARY = "summary.json"
# Per-image statuses in the summary; each also has a count, under its name with "_" for " ".
DONE = "done"
SKIPPED = "skipped"  # done by an earlier run
DONE_ELSEWHERE = "done elsewhere"  # by another run working on the same folder at the same time
BUSY = "in progress elsewhere"
FAILED = "failed"
STATUSES = (DONE, SKIPPED, DONE_ELSEWHERE, BUSY, FAILED)


def read_boxes(path: str | os.PathLike) -> BoxPrompts:
    """A JSON file of box prompts -> Kx4 XYXY array, or a dict image name -> Kx4 array.

    Accepted: a list of ``[x0, y0, x1, y1]``; a list of COCO-style detections (objects with ``"bbox"``:
    ``[x, y, width, height]``); or an object mapping image file names (or stems) to either list. An empty
    file-wide list or mapping is an :class:`InputError` (nothing to segment); an image mapped to an empty
    list gets an empty result.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read boxes from {path}: {e}") from e
    if isinstance(data, dict | list) and not data:
        raise InputError(f"{path} holds no boxes: nothing to segment")
    if isinstance(data, dict):
        return {str(name): _parse_boxes(value, f"{path}: {name!r}") for name, value in data.items()}
    return _parse_boxes(data, str(path))


def _parse_boxes(data: Any, where: str) -> np.ndarray:
    expected = (
        'a list of [x0, y0, x1, y1] boxes, a list of COCO detections with "bbox": [x, y, w, h], '
        "or an object mapping image names to such lists"
    )
    if not isinstance(data, list):
        raise InputError(f"{where}: expected {expected}, got {type(data).__name__}")
    boxes = []
    for i, item in enumerate(data):
        coco = isinstance(item, dict)
        values = item.get("bbox") if coco else item
        if (
            not isinstance(values, list | tuple)
            or len(values) != 4
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        ):
            raise InputError(f"{where}: item {i} is {item!r}; expected {expected}")
        if not np.isfinite(values).all():
            raise InputError(f"{where}: item {i} ({item!r}) has a NaN or infinite coordinate")
        x, y, a, b = map(float, values)
        box = [x, y, x + a, y + b] if coco else [x, y, a, b]
        if box[2] < box[0] or box[3] < box[1]:
            raise InputError(f"{where}: item {i} ({item!r}) has a negative width or height")
        boxes.append(box)
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def boxes_for(prompts: BoxPrompts, image: Path) -> np.ndarray:
    """The Kx4 boxes meant for ``image``: all of them, or its entry (by file name, else stem)."""
    if isinstance(prompts, np.ndarray):
        return prompts
    for key in (image.name, image.stem):
        if key in prompts:
            return prompts[key]
    raise InputError(f"the boxes file has no entry for {image.name} (keys are image file names or stems)")


def segmentation_mask(rle: dict[str, Any]) -> np.ndarray:
    """A record's RLE segmentation (COCO compressed or uncompressed) -> HxW bool mask."""
    if not isinstance(rle, dict) or "counts" not in rle:
        raise TypeError("expected an RLE segmentation: use output_mode 'coco_rle' or 'uncompressed_rle'")
    return rle_to_mask(coco_to_rle(rle) if isinstance(rle["counts"], str | bytes) else rle)


def image_record(
    job: ImageJob, size_hw: tuple[int, int], records: list[dict[str, Any]], info: dict[str, Any]
) -> dict[str, Any]:
    """Generator records of one image -> its SA-1B-style JSON document (RLE segmentations kept as is)."""
    annotations = [{"id": i, **_jsonable(r)} for i, r in enumerate(records)]
    h, w = size_hw
    image = {"file_name": job.path.name, "path": str(job.path), "height": h, "width": w}
    return {"image": image, "annotations": annotations, "info": info}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def images_in(out_dir: str | os.PathLike) -> list[str]:
    """Names of the images whose JSON and overlay are in ``out_dir``, whichever run wrote them."""
    out = Path(out_dir)
    return sorted(
        p.relative_to(out).with_suffix("").as_posix()
        for p in out.rglob("*.json")
        if p.with_name(f"{p.stem}_overlay.png").is_file()
    )


def segment_everything(
    generator: Any,
    jobs: Iterable[ImageJob],
    out_dir: str | os.PathLike,
    boxes: BoxPrompts | None = None,
    overwrite: bool = False,
    info: dict[str, Any] | None = None,
    progress: bool = True,
    log: TextIO | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, Any]:
    """Run ``generator.generate`` on every image and write the outputs described in the module docstring.

    ``generator`` is a :class:`~litesam.MaskGenerator` with an RLE ``output_mode``. ``boxes`` switches
    to box-prompted segmentation (``generate(image, boxes=...)``). An image that cannot be read or
    segmented is reported on ``log`` (default stderr) and in the summary, and the run goes on; an output
    that cannot be written stops it with an :class:`OutputError`. Returns the summary (also written to
    ``summary.json``).

    Many processes (``rank`` of ``world_size``, e.g. torchrun): each takes every ``world_size``-th image of
    ``jobs``; rank 0 writes the summary of them all at the end (gathered over the process group).
    """
    out = writable_folder(out_dir)
    jobs, info = list(jobs), info or {}  # in find_images' order: the same on every run, so the same shares
    log = sys.stderr if log is None else log
    mine = rank_share(jobs, rank, world_size)
    results: list[dict[str, Any]] = []
    for job in tqdm(mine, desc="segment everything", unit="image", disable=not progress, file=log):
        results.append(_process(generator, job, out, boxes, overwrite, info, log))
        if world_size == 1:
            atomic_write_json(out / SUMMARY, _summary(out, len(jobs), results, info))
    everyone = [r for part in gather(results) for r in part]
    order = {str(job.path): i for i, job in enumerate(jobs)}
    everyone.sort(key=lambda r: order.get(r["image"], len(order)))
    summary = _summary(out, len(jobs), everyone, info)
    if rank == 0:
        atomic_write_json(out / SUMMARY, summary)
    return summary


def _process(
    generator: Any,
    job: ImageJob,
    out: Path,
    boxes: BoxPrompts | None,
    overwrite: bool,
    info: dict[str, Any],
    log: TextIO,
) -> dict[str, Any]:
    """One image's summary entry: skipped when done, left to the run that holds its lock, else segmented
    under its lock."""
    entry = {"image": str(job.path), "json": f"{job.name}.json"}
    target = out / entry["json"]
    if target.exists() and not overwrite:
        return {**entry, "status": SKIPPED}
    lock = writable_folder(target.parent) / f"{target.name}.lock"
    if not try_lock(lock):
        return {**entry, "status": BUSY}
    try:
        if target.exists() and not overwrite:  # another run finished it since the check above
            return {**entry, "status": DONE_ELSEWHERE}
        return {**entry, **_segment(generator, job, target, boxes, info, log)}
    finally:
        release_lock(lock)


def _segment(
    generator: Any, job: ImageJob, target: Path, boxes: BoxPrompts | None, info: dict[str, Any], log: TextIO
) -> dict[str, Any]:
    """Segment one image, write its overlay and then its JSON ``target``; a failure is reported and
    returned, except an unwritable output (which would fail for every image)."""
    start = time.perf_counter()
    try:
        image = load_image(job.path)
        records, shown = _generate(generator, image, job, boxes, log)
        masks = [segmentation_mask(r["segmentation"]) for r in records]
        picture = overlay(image, masks, boxes=shown)
        atomic_write_png(target.with_name(f"{target.stem}_overlay.png"), picture)
        atomic_write_json(target, image_record(job, image.shape[:2], records, info))
    except OutputError:
        raise
    except Exception as e:  # one bad image must not end a folder run
        reason = f"{type(e).__name__}: {e}"
        tqdm.write(f"litesam everything: cannot segment {job.path}: {reason}", file=log)
        return {"status": FAILED, "error": reason}
    return {"status": DONE, "masks": len(records), "seconds": round(time.perf_counter() - start, 3)}


def _generate(
    generator: Any, image: np.ndarray, job: ImageJob, boxes: BoxPrompts | None, log: TextIO
) -> tuple[list[dict[str, Any]], np.ndarray | None]:
    """(records, box prompts used) for one image; no boxes for it gives no records and a note."""
    if boxes is None:
        return generator.generate(image), None
    mine = boxes_for(boxes, job.path)
    if len(mine) == 0:
        tqdm.write(f"litesam everything: note: no boxes for {job.path}, empty result written", file=log)
        return [], mine
    return generator.generate(image, boxes=mine), mine


def _summary(out: Path, images: int, results: list[dict[str, Any]], info: dict[str, Any]) -> dict[str, Any]:
    """The summary document: counts of this run's ``images`` by status, masks and seconds of those it
    segmented, its ``results`` (images left to another run that has finished them since are marked done
    elsewhere), its failures, and every image done in the folder."""
    results = [
        {**r, "status": DONE_ELSEWHERE} if r["status"] == BUSY and (out / r["json"]).exists() else r
        for r in results
    ]
    counts = {s.replace(" ", "_"): sum(r["status"] == s for r in results) for s in STATUSES}
    done = [r for r in results if r["status"] == DONE]
    return {
        "info": info,
        "images": images,
        **counts,
        "masks": sum(r["masks"] for r in done),
        "seconds": round(sum(r["seconds"] for r in done), 3),
        "results": results,
        "failures": [{"image": r["image"], "error": r["error"]} for r in results if r["status"] == FAILED],
        "in_folder": images_in(out),
    }
