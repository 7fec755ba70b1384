"""Decoder fine-tuning, the optional last stage of decoupled distillation: the student's mask decoder
learns to give the teacher's masks on top of the (frozen) distilled encoder.

``finetune_decoder(student, teacher, images, out, epochs=1, num_points=8, boxes=True, multimask=True,
lr=1e-5, weight_decay=0.1, max_grad_norm=1.0, mask_side=256, seed=0, progress=True, meta=None,
embeddings=None, resume=False, save_every=100) -> FinetuneResult``

- ``student``: an unfused :class:`~litesam.modeling.Sam` (``build_model(name, checkpoint, fuse=False)``) whose
  image encoder was distilled; ``teacher``: the SAM whose masks are the targets.
- ``images``: image paths (or arrays), visited once per epoch in an order drawn from ``(seed, epoch)``,
  one image per step (per process under torchrun).
- ``out``: the folder that receives ``finetuned.pt``.
- ``embeddings``: the teacher's stored embeddings of the images (``litesam distill embed``): then the
  teacher's encoder never runs, only its light decoder.

What trains: the mask decoder only. The image encoder (already distilled) and the prompt encoder (carried
over from the teacher, so prompts keep their meaning) are frozen.

Targets, per step: ``num_points`` single foreground-point prompts drawn uniformly over the image (from a
generator seeded by ``(seed, epoch, image)``, so a step's prompts do not depend on what ran before it) and,
with ``boxes``, the bounding boxes of the teacher's (non-empty) point masks; for each prompt the teacher's
single-mask output and, with ``multimask``, its three multimask outputs, thresholded to binary masks.
Student and teacher masks are compared in the image frame scaled to ``mask_side`` pixels on its longest
side (the same for any pair of models, whatever their input sizes).

Loss, as SAM's: 20 x sigmoid focal loss + 1 x dice loss on the mask logits, plus the MSE between the
decoder's predicted IoU and the IoU of its (thresholded) mask with the teacher's. AdamW, gradients clipped
to ``max_grad_norm``; no augmentation beyond the models' own resize and pad (the random prompts vary the
targets), and both models stay in eval mode (SAM's decoder has no dropout or batch norm). A progress bar
shows the loss, images/s and the ETA. The model state_dict, the optimizer and the position are written
atomically to ``out/finetuned.pt`` every ``save_every`` steps and at every epoch end (``{"model":
state_dict, "meta": {**meta, "stage", "epoch", "steps"}, ...}``; pass ``meta={"student": name}`` so the
file names its model): it loads with ``build_model(name, checkpoint=out / "finetuned.pt")``, and
``resume=True`` continues a killed run to the same weights as an uninterrupted one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from ..checkpoint import load_checkpoint
from ..errors import InputError
from ..modeling.sam import Sam
from ..predictor import ImageState, Prediction, Predictor
from ..prompts import Prompts
from ..utils.image import ImageInput, load_image
from ..utils.io import atomic_torch_save, writable_folder
from ..utils.transforms import resized_shape
from .embeddings import EmbeddingStore
from .evaluate import boxes_from_masks, sample_points

FOCAL_WEIGHT = 20.0  # SAM: focal and dice losses in a 20:1 ratio
DICE_WEIGHT = 1.0
IOU_WEIGHT = 1.0
CHECKPOINT_NAME = "finetuned.pt"


@dataclass(frozen=True)
class FinetuneResult:
    """Where the fine-tuned model was written, and the loss of every step."""

    checkpoint: Path
    losses: tuple[float, ...]


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Sigmoid focal loss, mean over masks and pixels; logits and 0/1 targets KxMxHxW -> scalar."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    weight = alpha * target + (1 - alpha) * (1 - target)
    return (weight * ce * (1 - p_t) ** gamma).mean()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft dice per mask, mean over masks; logits and 0/1 targets KxMxHxW -> scalar."""
    p = logits.sigmoid().flatten(2)
    target = target.flatten(2)
    dice = (2 * (p * target).sum(-1) + eps) / (p.sum(-1) + target.sum(-1) + eps)
    return (1 - dice).mean()


def decoder_loss(
    logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.0
) -> torch.Tensor:
    """SAM's loss of mask logits KxMxHxW and predicted IoUs KxM against 0/1 target masks KxMxHxW."""
    pred = (logits.detach() > threshold).flatten(2)
    truth = target.flatten(2) > 0.5
    union = (pred | truth).sum(-1)
    actual = torch.where(union > 0, (pred & truth).sum(-1) / union.clamp(min=1), 1.0)
    return (
        FOCAL_WEIGHT * focal_loss(logits, target)
        + DICE_WEIGHT * dice_loss(logits, target)
        + IOU_WEIGHT * F.mse_loss(iou_pred, actual.to(iou_pred.dtype))
    )


def _teacher_targets(
    teacher: Predictor,
    state: ImageState,
    rng: np.random.Generator,
    num_points: int,
    boxes: bool,
    outputs: tuple[bool, ...],
) -> list[tuple[Prompts, bool, Prediction]]:
    """(prompt sets, multimask flag, the teacher's prediction) for random single-point prompts and the
    boxes of the teacher's point masks."""
    points = sample_points(rng, state.original_size, num_points)[:, None]
    point_set = Prompts.batch(points, np.ones(points.shape[:2], dtype=np.int64))
    single = teacher.decode(state, point_set, multimask_output=False)
    sets = [point_set]
    if boxes:
        masks = (single.logits()[:, 0] > teacher.mask_threshold).cpu().numpy()
        box_prompts = boxes_from_masks(masks)[0]
        if len(box_prompts):
            sets.append(Prompts.batch(boxes=box_prompts))
    targets = []
    for prompts in sets:
        for multi in outputs:
            reuse = prompts is point_set and not multi  # already decoded above
            targets.append((prompts, multi, single if reuse else teacher.decode(state, prompts, multi)))
    return targets


def _image_loss(
    ref: Predictor,
    pred: Predictor,
    teacher_state: ImageState,
    rgb: np.ndarray,
    rng: np.random.Generator,
    num_points: int,
    boxes: bool,
    outputs: tuple[bool, ...],
    mask_side: int,
) -> torch.Tensor:
    """The student's decoder loss, summed over one image's sampled prompt sets and output kinds."""
    student_state = pred.encode(rgb).clone()  # ordinary tensors: inference tensors cannot enter autograd
    side = resized_shape(rgb.shape[0], rgb.shape[1], mask_side)
    loss = torch.zeros((), device=pred.device)
    for prompts, multi, target in _teacher_targets(ref, teacher_state, rng, num_points, boxes, outputs):
        with torch.no_grad():
            truth = teacher_state.upscale(target.low_res, side) > ref.mask_threshold
        student = pred.decode(student_state, prompts, multi, requires_grad=True)
        logits = student_state.upscale(student.low_res, side)
        loss = loss + decoder_loss(logits, student.scores, truth.float().to(pred.device), pred.mask_threshold)
    return loss


def finetune_decoder(
    student: Sam,
    teacher: Sam,
    images: Sequence[ImageInput],
    out: str | os.PathLike,
    epochs: int = 1,
    num_points: int = 8,
    boxes: bool = True,
    multimask: bool = True,
    lr: float = 1e-5,
    weight_decay: float = 0.1,
    max_grad_norm: float = 1.0,
    mask_side: int = 256,
    seed: int = 0,
    progress: bool = True,
    meta: dict[str, str] | None = None,
    embeddings: EmbeddingStore | str | os.PathLike | None = None,
    resume: bool = False,
    save_every: int = 100,
) -> FinetuneResult:
    """Train ``student.mask_decoder`` on ``teacher``'s masks for sampled prompts; see the module docstring.

    ``embeddings``: a store of the teacher's embeddings of these images (``distill embed``): the teacher's
    encoder then never runs. ``resume``: continue from ``out/finetuned.pt`` (same settings) exactly where
    it stopped; without it an existing file is an error. ``save_every``: steps between checkpoints (and
    at every epoch end). Under torchrun each process takes its own images of every step and the decoder
    gradients are averaged; rank 0 writes.
    """
    if not images:
        raise InputError("no images to fine-tune on")
    if epochs < 1 or num_points < 1:
        raise InputError(f"epochs and num_points must be at least 1, got {epochs} and {num_points}")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    steps_per_epoch = len(images) // world
    if steps_per_epoch == 0:
        raise InputError(f"{len(images)} image(s) are fewer than the {world} processes")
    out = writable_folder(out)
    path = out / CHECKPOINT_NAME
    settings = {"epochs": epochs, "num_points": num_points, "boxes": boxes, "multimask": multimask, "lr": lr,
                "weight_decay": weight_decay, "max_grad_norm": max_grad_norm, "mask_side": mask_side,
                "seed": seed, "images": len(images), "world_size": world}  # fmt: skip
    ref, pred = Predictor(teacher), Predictor(student)  # both in eval mode; encoders run without gradients
    teacher_states = _StoredStates(embeddings, images, teacher) if embeddings is not None else None
    trainable = {p: p.requires_grad for p in student.parameters()}
    student.requires_grad_(False)
    student.mask_decoder.requires_grad_(True)
    params = list(student.mask_decoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    outputs = (False, True) if multimask else (False,)
    losses: list[float] = []
    epoch = position = 0
    if resume:
        epoch, position, losses = _restore(path, student, optimizer, settings)
    elif path.exists():
        raise InputError(
            f"{path} exists: pass --resume (resume=True in Python) to continue, or another --out"
        )

    def save() -> None:
        if rank == 0:
            info = {**(meta or {}), "stage": "finetune-decoder", "epoch": epoch, "steps": len(losses)}
            state = {"model": student.state_dict(), "meta": info, "optimizer": optimizer.state_dict(),
                     "position": position, "losses": losses, "settings": settings}  # fmt: skip
            atomic_torch_save(state, path)

    total = epochs * steps_per_epoch
    bar = tqdm(total=total, initial=len(losses), desc="finetune decoder", unit="step",
               disable=not progress or rank > 0)  # fmt: skip
    start, done_before = time.perf_counter(), len(losses)
    try:
        while epoch < epochs:
            order = np.random.default_rng((seed, epoch)).permutation(len(images))
            index = int(order[position * world + rank])
            rgb = load_image(images[index])
            rng = np.random.default_rng((seed, epoch, index))  # this image's prompts, whoever draws them
            teacher_state = teacher_states.state(index, rgb) if teacher_states else ref.encode(rgb)
            loss = _image_loss(ref, pred, teacher_state, rgb, rng, num_points, boxes, outputs, mask_side)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            reported = loss.detach()
            if world > 1:
                for p in params:
                    dist.all_reduce(p.grad)
                    p.grad /= world
                dist.all_reduce(reported)
                reported /= world
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            losses.append(reported.item())
            position += 1
            if position == steps_per_epoch:
                epoch, position = epoch + 1, 0
                save()
            elif len(losses) % save_every == 0:
                save()
            bar.update()
            rate = (len(losses) - done_before) / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", img_s=f"{rate * world:.2f}")
    finally:
        bar.close()
        for p, flag in trainable.items():
            p.requires_grad_(flag)
    return FinetuneResult(path, tuple(losses))


class _StoredStates:
    """The teacher's image states read from an embedding store instead of running its encoder."""

    def __init__(self, store: EmbeddingStore | str | os.PathLike, images: Sequence[ImageInput], teacher: Sam):
        self.store = store if isinstance(store, EmbeddingStore) else EmbeddingStore(store)
        self.store.check_transform(teacher.transform, "the teacher")
        self.transform, self.device = teacher.transform, teacher.device
        where = {self.store.image_path(i).resolve(): i for i in range(len(self.store))}
        self.entries = []
        for image in images:
            if not isinstance(image, (str, os.PathLike)) or Path(image).resolve() not in where:
                raise InputError(
                    f"{image} has no embedding in {self.store.root} (run `litesam distill embed`)"
                )
            self.entries.append(where[Path(image).resolve()])

    def state(self, index: int, rgb: np.ndarray) -> ImageState:
        embedding = self.store.embedding(self.entries[index]).float()[None].to(self.device)
        size = (rgb.shape[0], rgb.shape[1])
        return ImageState(
            {"image_embeddings": embedding}, size, self.transform.input_size(size), self.transform
        )


def _restore(
    path: Path, student: Sam, optimizer: torch.optim.Optimizer, settings: dict[str, object]
) -> tuple[int, int, list[float]]:
    """Load a fine-tuning checkpoint; (epoch, position, losses so far) to continue from."""
    if not path.is_file():
        raise InputError(f"nothing to resume: {path} does not exist")
    state = load_checkpoint(path)
    if not isinstance(state, dict) or "settings" not in state:
        raise InputError(f"{path} is not a resumable fine-tuning checkpoint")
    changed = {k: (v, settings.get(k)) for k, v in state["settings"].items() if settings.get(k) != v}
    if changed:
        text = "; ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in changed.items())
        raise InputError(f"cannot resume {path} with other settings ({text})")
    student.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state["meta"]["epoch"], state["position"], list(state["losses"])
