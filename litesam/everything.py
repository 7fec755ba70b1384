"""Segment everything in many images: one COCO-style JSON and one overlay picture per image, a summary,
resume, a progress bar, and corrupt images reported and skipped.

Output layout in ``out_dir`` for an image ``<name>`` (its path relative to the folder given, without the
suffix; subfolders are mirrored):

- ``<name>.json`` — SA-1B-style record: ``image`` (file_name, path, height, width), ``annotations``
  (one per mask: id, segmentation as RLE, bbox XYWH, area, predicted_iou, stability_score, point_coords
  — the box centre for box prompts — and crop_box) and ``info`` (model and settings). Written last and
  atomically, so its presence means the image is done: a later run skips it unless ``overwrite``.
- ``<name>_overlay.png`` — the image with every mask coloured and outlined.
- ``summary.json`` — counts, timings, one entry per image (done / skipped / failed) and the failures with
  their reasons. Rewritten after every image, so an interrupted run still leaves an accurate summary.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from tqdm import tqdm

from .utils.amg import coco_to_rle, rle_to_mask
from .utils.image import load_image
from .utils.visualize import overlay

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)

BoxPrompts = np.ndarray | dict[str, np.ndarray]


@dataclass(frozen=True)
class ImageJob:
    """One input image: its ``path`` and the output ``name`` (posix path relative to the output folder,
    without suffix)."""

    path: Path
    name: str


def find_images(
    paths: Sequence[str | os.PathLike], recursive: bool = False, exclude: str | os.PathLike | None = None
) -> list[ImageJob]:
    """Files and folders -> the images to process, in a stable order.

    A file is taken as given (even a corrupt one: it is reported when processed); a folder contributes its
    files with an image suffix (``IMAGE_SUFFIXES``), with subfolders when ``recursive``, except those
    inside ``exclude`` (the output folder, whose overlays are no inputs). Output names are
    the paths relative to the folder, without suffix; where two images would share a name (``a.jpg``,
    ``a.png``), or an image is called ``summary``, the suffix is kept in it (``a_jpg``, ``a_png``).
    """
    found: list[tuple[Path, Path]] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            pattern = entry.rglob("*") if recursive else entry.glob("*")
            files = sorted(
                p
                for p in pattern
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not _inside(p, exclude)
            )
            found.extend((p, p.relative_to(entry)) for p in files)
        elif entry.is_file():
            found.append((entry, Path(entry.name)))
        else:
            raise FileNotFoundError(f"no such file or folder: {entry}")
    stems = [rel.with_suffix("").as_posix() for _, rel in found]
    clash = {s for s in stems if stems.count(s) > 1} | {"summary"}  # summary.json is the run's own file
    return [
        ImageJob(path, f"{stem}_{rel.suffix.lstrip('.').lower()}" if stem in clash else stem)
        for (path, rel), stem in zip(found, stems, strict=True)
    ]


def _inside(path: Path, folder: str | os.PathLike | None) -> bool:
    return folder is not None and Path(folder).resolve() in path.resolve().parents


def read_boxes(path: str | os.PathLike) -> BoxPrompts:
    """A JSON file of box prompts -> Kx4 XYXY array, or a dict image name -> Kx4 array.

    Accepted: a list of ``[x0, y0, x1, y1]``; a list of COCO-style detections (objects with ``"bbox"``:
    ``[x, y, width, height]``); or an object mapping image file names (or stems) to either list.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read boxes from {path}: {e}") from e
    if isinstance(data, dict):
        return {str(name): _parse_boxes(value, f"{path}: {name!r}") for name, value in data.items()}
    return _parse_boxes(data, str(path))


def _parse_boxes(data: Any, where: str) -> np.ndarray:
    expected = (
        'a list of [x0, y0, x1, y1] boxes, a list of COCO detections with "bbox": [x, y, w, h], '
        "or an object mapping image names to such lists"
    )
    if not isinstance(data, list):
        raise ValueError(f"{where}: expected {expected}, got {type(data).__name__}")
    boxes = []
    for i, item in enumerate(data):
        coco = isinstance(item, dict)
        values = item.get("bbox") if coco else item
        if (
            not isinstance(values, list | tuple)
            or len(values) != 4
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        ):
            raise ValueError(f"{where}: item {i} is {item!r}; expected {expected}")
        x, y, a, b = map(float, values)
        box = [x, y, x + a, y + b] if coco else [x, y, a, b]
        if box[2] < box[0] or box[3] < box[1]:
            raise ValueError(f"{where}: item {i} ({item!r}) has a negative width or height")
        boxes.append(box)
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def boxes_for(prompts: BoxPrompts, image: Path) -> np.ndarray:
    """The Kx4 boxes meant for ``image``: all of them, or its entry (by file name, else stem)."""
    if isinstance(prompts, np.ndarray):
        return prompts
    for key in (image.name, image.stem):
        if key in prompts:
            return prompts[key]
    raise ValueError(f"the boxes file has no entry for {image.name} (keys are image file names or stems)")


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` through a temporary sibling and ``os.replace``: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    write_atomic(path, lambda p: p.write_text(json.dumps(data, indent=1)))


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


def segment_everything(
    generator: Any,
    jobs: Iterable[ImageJob],
    out_dir: str | os.PathLike,
    boxes: BoxPrompts | None = None,
    overwrite: bool = False,
    info: dict[str, Any] | None = None,
    progress: bool = True,
    log: TextIO | None = None,
) -> dict[str, Any]:
    """Run ``generator.generate`` on every image and write the outputs described in the module docstring.

    ``generator`` is a :class:`~litesam.MaskGenerator` with an RLE ``output_mode``. ``boxes`` switches
    to box-prompted segmentation (``generate(image, boxes=...)``). An image that cannot be read or
    segmented is reported on ``log`` (default stderr) and in the summary, and the run goes on. Returns the
    summary (also written to ``summary.json``).
    """
    out = Path(out_dir)
    jobs = list(jobs)
    log = sys.stderr if log is None else log
    summary: dict[str, Any] = {
        "info": info or {},
        "images": len(jobs),
        "done": 0,
        "skipped": 0,
        "failed": 0,
        "masks": 0,
        "seconds": 0.0,
        "results": [],
        "failures": [],
    }
    for job in tqdm(jobs, desc="segment everything", unit="image", disable=not progress, file=log):
        target = out / f"{job.name}.json"
        if target.exists() and not overwrite:
            summary["skipped"] += 1
            entry = {"image": str(job.path), "json": f"{job.name}.json", "status": "skipped"}
            summary["results"].append(entry)
            continue
        start = time.perf_counter()
        try:
            image = load_image(job.path)
            kwargs = {} if boxes is None else {"boxes": boxes_for(boxes, job.path)}
            records = generator.generate(image, **kwargs)
            overlay_path = out / f"{job.name}_overlay.png"
            masks = [segmentation_mask(r["segmentation"]) for r in records]
            picture = overlay(image, masks, boxes=kwargs.get("boxes"))
            write_atomic(overlay_path, lambda p, pic=picture: pic.save(p, format="PNG"))
            write_json(target, image_record(job, image.shape[:2], records, info or {}))
        except Exception as e:  # one bad image must not end a folder run
            reason = f"{type(e).__name__}: {e}"
            tqdm.write(f"litesam everything: cannot segment {job.path}: {reason}", file=log)
            summary["failed"] += 1
            summary["failures"].append({"image": str(job.path), "error": reason})
            summary["results"].append({"image": str(job.path), "status": "failed", "error": reason})
        else:
            seconds = time.perf_counter() - start
            summary["done"] += 1
            summary["masks"] += len(records)
            summary["seconds"] += seconds
            summary["results"].append(
                {
                    "image": str(job.path),
                    "json": f"{job.name}.json",
                    "status": "done",
                    "masks": len(records),
                    "seconds": round(seconds, 3),
                }
            )
        finally:
            write_json(out / "summary.json", summary)
    summary["seconds"] = round(summary["seconds"], 3)
    write_json(out / "summary.json", summary)
    return summary
