"""mIoU of a student against its teacher, as in the MobileSAM paper: how often the two give the same mask.

``evaluate_miou(teacher, student, images, num_points=10, boxes=True, seed=0, progress=False, log=None)
-> MiouReport`` (``log``: a :class:`~litesam.evaluation.resume.ResultLog` to resume from and append to)

- ``teacher``, ``student``: :class:`~litesam.modeling.Sam` models (any of the zoo, or a tiny test model).
- ``images``: image paths (or arrays / PIL images, anything :func:`~litesam.utils.image.load_image` reads).
- ``num_points``: single foreground-point prompts per image, drawn uniformly over the image from a generator
  seeded by ``(seed, image index)``: the same prompts for both models, and for every run with that seed.
- ``boxes``: also prompt with the bounding box of each (non-empty) teacher point mask.

Both models decode every prompt with one output mask (``multimask_output=False``); masks are compared in
the original image frame. The IoU of two empty masks counts as 1 (the models agree). An image's score is
the mean IoU over all its prompts; the report's ``miou`` is the mean over images.
``MiouReport.table()`` is the printable per-image table, ``MiouReport.to_dict()`` the JSON form.

The prompt helpers (:func:`sample_points`, :func:`boxes_from_masks`, and
:func:`litesam.utils.amg.mask_iou`) are shared with decoder fine-tuning (:mod:`litesam.distill.finetune`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from ..evaluation.resume import ResultLog
from ..modeling.sam import Sam
from ..predictor import Predictor
from ..utils.amg import mask_iou
from ..utils.image import ImageInput, load_image


def sample_points(rng: np.random.Generator, original_size: tuple[int, int], count: int) -> np.ndarray:
    """``count`` uniform random (x, y) points (float pixels) inside an HxW image -> count x 2."""
    h, w = original_size
    return rng.uniform((0.0, 0.0), (w, h), size=(count, 2))


def boxes_from_masks(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """KxHxW bool masks -> (XYXY pixel boxes Jx4 of the non-empty masks, their indices J).

    A box spans the mask's pixels edge to edge (a one-pixel mask at column x gives x0 = x, x1 = x + 1).
    """
    keep = np.flatnonzero(masks.reshape(len(masks), -1).any(axis=1))
    boxes = np.zeros((len(keep), 4))
    for row, k in enumerate(keep):
        ys = np.flatnonzero(masks[k].any(axis=1))
        xs = np.flatnonzero(masks[k].any(axis=0))
        boxes[row] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return boxes, keep


@dataclass(frozen=True)
class ImageScore:
    """Teacher-student IoUs of one image's prompts (point prompts first, then box prompts)."""

    image: str
    point_ious: tuple[float, ...]
    box_ious: tuple[float, ...]

    @property
    def miou(self) -> float:
        """Mean IoU over all prompts of the image."""
        return float(np.mean(self.point_ious + self.box_ious))


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


@dataclass(frozen=True)
class MiouReport:
    """Per-image teacher-student mIoU and the means over images."""

    images: tuple[ImageScore, ...]
    num_points: int
    boxes: bool
    seed: int

    @property
    def miou(self) -> float:
        """Mean over images of each image's mean IoU."""
        return float(np.mean([s.miou for s in self.images]))

    @property
    def point_miou(self) -> float:
        """Mean IoU over all point prompts of all images."""
        return float(np.mean([v for s in self.images for v in s.point_ious]))

    @property
    def box_miou(self) -> float | None:
        """Mean IoU over all box prompts (None without boxes)."""
        return _mean([v for s in self.images for v in s.box_ious])

    def table(self) -> str:
        """A fixed-width per-image table (point, box and overall mIoU) with a mean row."""
        width = max([len("image"), *(len(s.image) for s in self.images)])
        lines = [f"{'image':<{width}}  {'points':>6}  {'boxes':>6}  {'mIoU':>6}"]
        for s in self.images:
            lines.append(
                f"{s.image:<{width}}  {_cell(_mean(s.point_ious))}  {_cell(_mean(s.box_ious))}  "
                f"{_cell(s.miou)}"
            )
        lines.append(
            f"{'mean':<{width}}  {_cell(self.point_miou)}  {_cell(self.box_miou)}  {_cell(self.miou)}"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-serialisable summary with per-image rows."""
        return {
            "miou": self.miou,
            "point_miou": self.point_miou,
            "box_miou": self.box_miou,
            "num_points": self.num_points,
            "boxes": self.boxes,
            "seed": self.seed,
            "images": [
                {
                    "image": s.image,
                    "miou": s.miou,
                    "point_miou": _mean(s.point_ious),
                    "box_miou": _mean(s.box_ious),
                    "point_ious": list(s.point_ious),
                    "box_ious": list(s.box_ious),
                }
                for s in self.images
            ],
        }


def _cell(value: float | None) -> str:
    return f"{value:6.4f}" if value is not None else f"{'-':>6}"


def image_name(image: ImageInput, index: int) -> str:
    """How an image is named in reports: its path, or ``#index`` for in-memory images."""
    return str(image) if isinstance(image, (str, os.PathLike)) else f"#{index}"


@torch.inference_mode()
def evaluate_miou(
    teacher: Sam,
    student: Sam,
    images: Sequence[ImageInput],
    num_points: int = 10,
    boxes: bool = True,
    seed: int = 0,
    progress: bool = False,
    log: ResultLog | None = None,
) -> MiouReport:
    """Teacher-student mIoU over ``images`` for shared random point (and derived box) prompts.

    Images already in ``log`` (by :func:`image_name`) are not redone; each finished image is added to it.
    """
    if num_points < 1:
        raise ValueError(f"num_points must be at least 1, got {num_points}")
    if not images:
        raise ValueError("no images to evaluate")
    ref, pred = Predictor(teacher), Predictor(student)
    scores = []
    for index, image in enumerate(tqdm(images, desc="mIoU", unit="image", disable=not progress)):
        name = image_name(image, index)
        if log is not None and name in log:
            scores.append(ImageScore(name, *map(tuple, log.results[name])))
            continue
        rgb = load_image(image)
        ref.set_image(rgb)
        pred.set_image(rgb)
        points = sample_points(np.random.default_rng((seed, index)), rgb.shape[:2], num_points)[:, None]
        labels = np.ones(points.shape[:2], dtype=np.int64)
        ref_masks = ref.predict_batch(points, labels)[0][:, 0]
        point_ious = mask_iou(ref_masks, pred.predict_batch(points, labels)[0][:, 0])
        box_ious = np.zeros(0)
        box_prompts = boxes_from_masks(ref_masks)[0] if boxes else box_ious
        if len(box_prompts):
            box_ious = mask_iou(
                ref.predict_batch(boxes=box_prompts)[0][:, 0], pred.predict_batch(boxes=box_prompts)[0][:, 0]
            )
        scores.append(ImageScore(name, tuple(point_ious.tolist()), tuple(box_ious.tolist())))
        if log is not None:
            log.add(name, [scores[-1].point_ious, scores[-1].box_ious])
    return MiouReport(tuple(scores), num_points, boxes, seed)
