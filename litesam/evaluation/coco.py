"""Box-prompted instance segmentation AP on COCO, as in the RepViT-SAM and EfficientViT-SAM papers.

One box prompt per instance — the ground-truth boxes, or a detector's boxes (COCO results format, e.g.
ViTDet or YOLOv8 detections) with the detector's scores and categories — decoded with one output mask
(``multimask_output=False``). Each image is encoded once and its boxes decoded in batches. Masks are
RLE-encoded and scored by pycocotools' ``COCOeval`` (``segm``): AP, AP50, AP75, APs, APm, APl over the
evaluated images.

- Ground-truth prompts: every non-crowd annotation's box (crowd regions are ignore regions in COCOeval);
  the mask's score is the model's predicted IoU, its category the annotation's.
- Boxes are XYWH pixels, clipped to the image before prompting.

``evaluate_coco(predictor, coco, images, ...) -> dict`` is the whole protocol; ``load_coco`` and
``read_detections`` check their inputs and say in one line what is wrong.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..errors import InputError
from ..predictor import Predictor
from ..prompts import Prompts
from ..utils.amg import mask_to_rle, rle_to_coco
from ..utils.image import load_image
from ..utils.parallel import gather, rank_share
from .resume import ResultLog

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCOeval.stats[0:6]


def _coco_api() -> Any:
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise InputError("COCO evaluation needs pycocotools: pip install 'litesam[coco]'") from None
    return COCO, COCOeval


def _read_json(path: str | os.PathLike, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{what} {path} is not readable JSON: {e}") from None


def load_coco(annotations: str | os.PathLike) -> Any:
    """A COCO instances annotation file -> ``pycocotools.coco.COCO``; InputError if it is not one or has
    no annotations."""
    data = _read_json(annotations, "annotation file")
    keys = ("images", "annotations", "categories")
    missing = [k for k in keys if not isinstance(data, dict) or not isinstance(data.get(k), list)]
    if missing:
        raise InputError(f"{annotations} is not COCO instances annotations: no {' / '.join(missing)} list")
    if not data["annotations"]:
        raise InputError(f"{annotations} has no annotations: nothing to evaluate")
    for ann in data["annotations"]:
        if not {"image_id", "category_id", "bbox", "segmentation", "area"} <= set(ann):
            raise InputError(
                f"{annotations}: annotation {ann.get('id', '?')} lacks image_id, category_id, bbox,"
                " segmentation or area"
            )
    coco_cls, _ = _coco_api()
    coco = coco_cls()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def read_detections(path: str | os.PathLike, coco: Any) -> dict[int, list[dict[str, Any]]]:
    """Detections in COCO results format (``[{image_id, category_id, bbox: [x, y, w, h], score}, ...]``)
    -> per image id, the detections; checked against ``coco``'s images and categories."""
    data = _read_json(path, "detection file")
    if not isinstance(data, list):
        raise InputError(f"{path} is not COCO results: expected a list of detections")
    by_image: dict[int, list[dict[str, Any]]] = {}
    for i, det in enumerate(data):
        if not isinstance(det, dict) or not {"image_id", "category_id", "bbox", "score"} <= set(det):
            raise InputError(f"{path}: detection {i} lacks image_id, category_id, bbox or score")
        box = det["bbox"]
        if len(box) != 4 or not np.isfinite(box).all() or box[2] < 0 or box[3] < 0:
            raise InputError(f"{path}: detection {i} has bbox {box}, expected [x, y, w >= 0, h >= 0]")
        if det["image_id"] not in coco.imgs:
            raise InputError(f"{path}: detection {i} is for image_id {det['image_id']}, not annotated")
        if det["category_id"] not in coco.cats:
            raise InputError(f"{path}: detection {i} has category_id {det['category_id']}, not annotated")
        by_image.setdefault(det["image_id"], []).append(det)
    return by_image


def _prompts(coco: Any, image_id: int, detections: dict[int, list[dict]] | None) -> list[dict[str, Any]]:
    """The image's box prompts: ``{bbox, category_id, score (None: use the predicted IoU)}``."""
    if detections is not None:
        return [
            {"bbox": d["bbox"], "category_id": d["category_id"], "score": float(d["score"])}
            for d in detections.get(image_id, [])
        ]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=False))
    return [{"bbox": a["bbox"], "category_id": a["category_id"], "score": None} for a in anns]


def image_files(coco: Any, image_ids: Sequence[int], folder: str | os.PathLike) -> dict[int, Path]:
    """Image id -> its file in ``folder``; one InputError naming the missing files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"image folder not found: {folder}")
    files = {i: folder / coco.imgs[i]["file_name"] for i in image_ids}
    missing = [p.name for p in files.values() if not p.is_file()]
    if missing:
        raise InputError(
            f"{len(missing)} of {len(files)} annotated image(s) missing from {folder}, e.g. {missing[0]}"
        )
    return files


@torch.inference_mode()
def segment_image(
    predictor: Predictor, image: Any, prompts: list[dict[str, Any]], image_id: int, batch_size: int = 64
) -> tuple[list[dict[str, Any]], float]:
    """One image's box prompts -> (COCO results with RLE masks, milliseconds spent encoding)."""
    start = time.perf_counter()
    state = predictor.encode(image)
    encode_ms = 1000 * (time.perf_counter() - start)
    h, w = state.original_size
    results = []
    for first in range(0, len(prompts), batch_size):
        chunk = prompts[first : first + batch_size]
        xywh = np.array([p["bbox"] for p in chunk], dtype=np.float64)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1).clip(0, [w, h, w, h])
        pred = predictor.decode(state, Prompts.batch(boxes=boxes), multimask_output=False)
        masks = pred.logits()[:, 0] > predictor.mask_threshold
        scores = pred.scores[:, 0].tolist()
        for p, counts, iou in zip(chunk, mask_to_rle(masks), scores, strict=True):
            rle = rle_to_coco({"size": [h, w], "counts": counts})
            score = iou if p["score"] is None else p["score"]
            results.append(
                {"image_id": image_id, "category_id": p["category_id"], "segmentation": rle, "score": score}
            )
    return results, encode_ms


def coco_metrics(
    coco: Any, results: list[dict[str, Any]], image_ids: Sequence[int]
) -> dict[str, float | None]:
    """COCOeval ``segm`` over ``image_ids`` -> {AP, AP50, AP75, APs, APm, APl} in [0, 1]; None where
    COCOeval has nothing to measure (no ground truth of that size); 0 for every metric without results."""
    _, cocoeval_cls = _coco_api()
    if not results:
        return dict.fromkeys(METRICS, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = cocoeval_cls(coco, coco.loadRes(results), "segm")
        evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {k: (float(v) if v >= 0 else None) for k, v in zip(METRICS, evaluator.stats[:6], strict=True)}


def evaluate_coco(
    predictor: Predictor,
    coco: Any,
    images: str | os.PathLike,
    detections: dict[int, list[dict[str, Any]]] | None = None,
    limit: int | None = None,
    log: ResultLog | None = None,
    batch_size: int = 64,
    progress: bool = False,
    estimate_every: int = 200,
    known: dict[str, Any] | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, Any]:
    """The protocol of the module docstring over the first ``limit`` images (by id) of ``coco``.

    Images already in ``log`` (or in ``known``: results read from other processes' logs) are not redone;
    each finished image is added to ``log``. The progress bar shows the AP over the images done so far,
    recomputed every ``estimate_every`` images. Returns the report: ``{protocol, images, instances,
    metrics: {AP, ...}, encode_ms (median per image)}``. Many processes (``rank`` of ``world_size``,
    torchrun): each segments every ``world_size``-th image (each with its own ``log``), and the results
    are gathered so that every process returns the report of all images.
    """
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    image_ids = sorted(coco.getImgIds())[:limit]
    if not image_ids:
        raise InputError("the annotations list no images")
    files = image_files(coco, image_ids, images)
    done: dict[str, Any] = {**(known or {}), **({} if log is None else log.results)}
    bar = tqdm(rank_share(image_ids, rank, world_size), desc="COCO AP", unit="image", disable=not progress)
    for count, image_id in enumerate(bar, 1):
        key = str(image_id)
        if key not in done:
            prompts = _prompts(coco, image_id, detections)
            results, encode_ms = [], None
            if prompts:
                rgb = load_image(files[image_id])
                meta = coco.imgs[image_id]
                if "height" in meta and (meta["height"], meta["width"]) != rgb.shape[:2]:
                    raise InputError(
                        f"{files[image_id]} is {rgb.shape[1]}x{rgb.shape[0]} pixels, the annotations say"
                        f" {meta['width']}x{meta['height']}"
                    )
                results, encode_ms = segment_image(predictor, rgb, prompts, image_id, batch_size)
            done[key] = {"results": results, "encode_ms": encode_ms}
            if log is not None:
                log.add(key, done[key])
        if count % estimate_every == 0 and progress:
            ids = [i for i in image_ids if str(i) in done]
            bar.set_postfix(AP=f"{coco_metrics(coco, _results(done, ids), ids)['AP']:.3f}")
    for part in gather(done):
        done.update(part)
    image_ids = [i for i in image_ids if str(i) in done]  # all of them, unless a process is missing
    results = _results(done, image_ids)
    timings = [done[str(i)]["encode_ms"] for i in image_ids if done[str(i)]["encode_ms"] is not None]
    return {
        "protocol": "coco",
        "images": len(image_ids),
        "instances": len(results),
        "metrics": coco_metrics(coco, results, image_ids),
        "encode_ms": float(np.median(timings)) if timings else None,
    }


def _results(done: dict[str, Any], image_ids: Sequence[int]) -> list[dict[str, Any]]:
    return [r for i in image_ids for r in done[str(i)]["results"]]
