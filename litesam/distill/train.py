"""Decoupled distillation, stage 1: train a student image encoder to reproduce stored teacher embeddings.

MSE between the student's Bx256x64x64 output and the teacher's stored embedding, AdamW, linear warm-up then
cosine decay to 0, gradient-norm clipping, bf16 autocast on CUDA GPUs that support it. No augmentation
beyond resize + pad (as MobileSAM and RepViT-SAM): the targets are precomputed per image, so a flipped or
cropped input would no longer match its target.

The data order is a permutation drawn from ``(seed, epoch)`` alone, so a run is a pure function of its
config and store. The store is verified (every entry's CRC32) before step 1 unless ``verify=False``.
Checkpoints (``run/last.pt``, atomic) hold the full SAM state_dict under ``"model"`` (the
student encoder + the teacher's prompt encoder and mask decoder, loadable by ``litesam.build_model``) plus
optimizer, scheduler, step, epoch, position in the epoch and every rank's RNG state, so a killed run resumed
with ``resume=True`` ends with the same weights as an uninterrupted one.

Many processes (``torchrun``): ``torch.distributed`` with NCCL on GPUs, gloo on CPU; each global batch is
split into equal consecutive slices, one per rank, and DistributedDataParallel averages the gradients, so
the result matches one process with the same global batch.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..checkpoint import CheckpointError, load_checkpoint
from ..errors import InputError
from ..modeling.sam import Sam
from ..utils.io import atomic_torch_save, atomic_write_png, atomic_write_text, writable_folder
from ..utils.parallel import join_process_group
from ..utils.transforms import ImageTransform
from .embeddings import EmbeddingStore, prepare_image

CHECKPOINT = "last.pt"
LOG = "log.jsonl"
CURVE = "loss_curve.png"
# Settings that may change between a run and its resumption without changing the result.
_FREE_ON_RESUME = ("save_every", "num_workers")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of a distillation run; ``batch_size`` is global (summed over processes)."""

    epochs: int = 8
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 250
    clip_grad: float = 1.0
    seed: int = 0
    save_every: int = 1000
    amp: bool = True
    num_workers: int = 0
    accumulate: int = (
        1  # micro-batches per step: each process runs batch_size / processes / accumulate at once
    )
    sync_bn: bool = False  # BatchNorm statistics over all processes (SyncBatchNorm; GPUs only)


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Multiplier of the base learning rate at ``step``: linear warm-up over ``warmup`` steps, then a
    cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def epoch_order(n: int, batch_size: int, seed: int, epoch: int) -> torch.Tensor:
    """The global batches of one epoch: (n // batch_size) x batch_size entry indices (last partial batch
    dropped), from a permutation that depends on (seed, epoch) only."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    steps = n // batch_size
    return torch.randperm(n, generator=generator)[: steps * batch_size].view(steps, batch_size)


class _Pairs(Dataset):
    """Store entry i -> (3xSxS student input, float16 teacher embedding)."""

    def __init__(
        self, store: EmbeddingStore, transform: ImageTransform, images_root: str | os.PathLike | None
    ) -> None:
        self.store, self.transform, self.images_root = store, transform, images_root

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return prepare_image(
            self.store.image_path(i, self.images_root), self.transform
        ), self.store.embedding(i)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _verify(store: EmbeddingStore, rank: int, world: int, device: torch.device, progress: bool) -> None:
    """Every process checks its share of the store's shards before step 1; all stop if one found damage."""
    error = None
    try:
        store.verify(store.shards[rank::world], progress=progress and rank == 0)
    except InputError as e:
        error = e
    if world > 1:
        damaged = torch.tensor([float(error is not None)], device=device)
        dist.all_reduce(damaged)
        if damaged.item() and error is None:
            error = InputError(f"corrupt embedding store {store.root} (found by another process)")
    if error is not None:
        raise error


def plot_loss_curve(records: list[dict[str, Any]], path: Path) -> None:
    """Loss (log scale) against step as a PNG, drawn with PIL."""
    width, height, margin = 640, 360, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    points = [(r["step"], math.log10(max(r["loss"], 1e-12))) for r in records]
    if points:
        (s0, s1), (l0, l1) = ((min(p[i] for p in points), max(p[i] for p in points)) for i in (0, 1))
        sx = (width - 2 * margin) / max(s1 - s0, 1)
        sy = (height - 2 * margin) / max(l1 - l0, 1e-9)
        xy = [(margin + (s - s0) * sx, height - margin - (v - l0) * sy) for s, v in points]
        draw.line(xy if len(xy) > 1 else xy * 2, fill=(31, 119, 180), width=2)
        draw.text((margin, 10), f"MSE loss (log10 {l0:.2f} .. {l1:.2f}) vs step {s0}..{s1}", fill="black")
    draw.rectangle((margin, margin, width - margin, height - margin), outline="black")
    atomic_write_png(path, image)


class _Logs:
    """Per-step records, kept in memory until a checkpoint writes them to log.jsonl (so a resumed run
    neither repeats nor loses lines), redrawn as loss_curve.png, and sent to TensorBoard if installed."""

    def __init__(self, out: Path, step: int, enabled: bool) -> None:
        self.out, self.enabled, self.pending = out, enabled, []
        self.records: list[dict[str, Any]] = []
        self.board = None
        if not enabled:
            return
        if (out / LOG).exists():
            lines = (out / LOG).read_text().splitlines()
            self.records = [r for r in map(json.loads, lines) if r["step"] <= step]
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.board = SummaryWriter(str(out / "tensorboard"), purge_step=step + 1)
        except ImportError:
            pass

    def add(self, record: dict[str, Any]) -> None:
        if self.enabled:
            self.pending.append(record)
            if self.board is not None:
                for key in ("loss", "lr", "images_per_s"):
                    self.board.add_scalar(f"train/{key}", record[key], record["step"])

    def flush(self) -> None:
        if self.enabled:
            self.records += self.pending
            self.pending = []
            atomic_write_text(self.out / LOG, "".join(json.dumps(r) + "\n" for r in self.records))
            plot_loss_curve(self.records, self.out / CURVE)
            if self.board is not None:
                self.board.flush()


def train_student(
    student: Sam,
    embeddings: str | os.PathLike,
    out: str | os.PathLike,
    config: TrainConfig = TrainConfig(),
    decoder_state: Mapping[str, torch.Tensor] | None = None,
    resume: bool = False,
    images: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    meta: Mapping[str, Any] | None = None,
    verify: bool = True,
) -> Path:
    """Train ``student.image_encoder`` on the store ``embeddings``; returns the path of ``out/last.pt``.

    ``decoder_state``: the teacher's state_dict, whose ``prompt_encoder.*`` and ``mask_decoder.*`` weights
    are loaded into the student (and so into every checkpoint). ``meta``: saved as is in the checkpoints
    (the CLI records the student's registry name there). ``images``: the images folder if it moved since
    embedding. ``resume``: continue from ``out/last.pt`` (the config must match the saved one except
    ``save_every``/``num_workers``); without it an existing ``out/last.pt`` is an error. ``verify``: check
    the store's entries against their CRC32s before step 1 (reads the whole store once). Under torchrun
    every process calls this; rank 0 writes.
    """
    rank, world, device = join_process_group(device)
    out = writable_folder(out)
    store = EmbeddingStore(embeddings)
    store.check_transform(student.transform, "the student")
    if config.accumulate < 1 or config.batch_size % (world * config.accumulate):
        raise InputError(
            f"batch size {config.batch_size} is not a multiple of {world} process(es) x {config.accumulate}"
            " accumulation step(s)"
        )
    if config.sync_bn and world > 1 and device.type == "cpu":
        raise InputError("--sync-bn needs GPUs (PyTorch's SyncBatchNorm does not run on the CPU)")
    steps_per_epoch = len(store) // config.batch_size
    if steps_per_epoch == 0:
        raise InputError(f"{len(store)} embeddings are fewer than one batch of {config.batch_size}")
    total = steps_per_epoch * config.epochs

    if decoder_state is not None:
        for name in ("prompt_encoder", "mask_decoder"):
            prefix = name + "."
            part = {k[len(prefix) :]: v for k, v in decoder_state.items() if k.startswith(prefix)}
            getattr(student, name).load_state_dict(part)
    if config.sync_bn and world > 1:
        student.image_encoder = torch.nn.SyncBatchNorm.convert_sync_batchnorm(student.image_encoder)
    student.to(device).train()
    encoder = student.image_encoder
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.warmup_steps, total)
    )
    step = epoch = position = 0
    path = out / CHECKPOINT
    if resume:
        step, epoch, position = _restore(path, student, optimizer, scheduler, config, rank, world)
    elif path.exists():
        raise InputError(
            f"{path} exists: pass --resume (resume=True in Python) to continue that run, or choose another"
            " output folder"
        )
    else:
        torch.manual_seed(config.seed + rank)
    if verify:
        _verify(store, rank, world, device, progress)
    model = DistributedDataParallel(encoder) if world > 1 else encoder
    amp = config.amp and device.type == "cuda" and torch.cuda.is_bf16_supported()
    local = config.batch_size // world
    logs = _Logs(out, step, enabled=rank == 0)
    dataset = _Pairs(store, student.transform, images)

    def checkpoint(next_epoch: int, next_position: int) -> None:
        states: list[Any] = [_rng_state()]
        if world > 1:
            states = [None] * world
            dist.all_gather_object(states, _rng_state())
        if rank == 0:
            state = {
                "model": student.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "epoch": next_epoch,
                "position": next_position,
                "rng": states,
                "world_size": world,
                "config": asdict(config),
                "teacher": store.teacher,
                "meta": dict(meta or {}),
            }
            atomic_torch_save(state, path)
            logs.flush()

    bar = tqdm(total=total, initial=step, desc="distill", unit="step", disable=not progress or rank > 0,
               file=sys.stderr)  # fmt: skip
    while epoch < config.epochs:
        batches = epoch_order(len(store), config.batch_size, config.seed, epoch)[position:]
        mine = batches[:, rank * local : (rank + 1) * local].tolist()
        loader = DataLoader(
            dataset,
            batch_sampler=mine,
            num_workers=config.num_workers,
            generator=torch.Generator(),  # the loader must not draw from the global RNG
        )
        tic = time.perf_counter()
        for x, target in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = _accumulate_gradients(model, x, target, config.accumulate, device, amp)
            torch.nn.utils.clip_grad_norm_(encoder.parameters(), config.clip_grad)
            optimizer.step()
            scheduler.step()
            step, position = step + 1, position + 1
            reported = loss.detach()
            if world > 1:
                dist.all_reduce(reported)
                reported /= world
            toc = time.perf_counter()
            speed = config.batch_size / max(toc - tic, 1e-9)
            tic = toc
            logs.add({"step": step, "epoch": epoch, "loss": reported.item(), "lr": scheduler.get_last_lr()[0],
                      "images_per_s": speed})  # fmt: skip
            bar.set_postfix(epoch=epoch + 1, loss=f"{reported.item():.4g}", img_s=f"{speed:.1f}")
            bar.update()
            if position == steps_per_epoch:
                epoch, position = epoch + 1, 0
                checkpoint(epoch, 0)
            elif step % config.save_every == 0:
                checkpoint(epoch, position)
    bar.close()
    student.eval()
    return path


def _accumulate_gradients(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    chunks: int,
    device: torch.device,
    amp: bool,
) -> torch.Tensor:
    """Backward the MSE of this process's batch (Bx3xSxS inputs, Bx256x64x64 targets) in ``chunks`` equal
    micro-batches (bounded activation memory, same gradient); DDP synchronises on the last one only.
    Returns the batch's mean loss."""
    total = torch.zeros((), device=device)
    for i, (xs, ts) in enumerate(zip(x.chunk(chunks), target.chunk(chunks), strict=True)):
        last = i == chunks - 1
        sync = model.no_sync() if isinstance(model, DistributedDataParallel) and not last else nullcontext()
        with sync:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                pred = model(xs.to(device, non_blocking=True))
            loss = F.mse_loss(pred.float(), ts.to(device, non_blocking=True).float()) / chunks
            loss.backward()
        total += loss.detach()
    return total


def _restore(
    path: Path,
    student: Sam,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: TrainConfig,
    rank: int,
    world: int,
) -> tuple[int, int, int]:
    """Load a checkpoint into the run's objects; (step, epoch, position) to continue from."""
    if not path.is_file():
        raise InputError(f"nothing to resume: {path} does not exist")
    state = load_checkpoint(path)
    if not isinstance(state, dict) or "config" not in state:
        raise CheckpointError(f"{path} is not a checkpoint written by `litesam distill train`")
    saved = {k: v for k, v in state["config"].items() if k not in _FREE_ON_RESUME}
    now = {k: v for k, v in asdict(config).items() if k not in _FREE_ON_RESUME}
    if saved != now or state["world_size"] != world:
        diff = {k: (saved.get(k), now.get(k)) for k in now if saved.get(k) != now.get(k)}
        if state["world_size"] != world:
            diff["processes"] = (state["world_size"], world)
        raise InputError(f"cannot resume {path} exactly with changed settings (saved, now): {diff}")
    student.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"][rank])
    return state["step"], state["epoch"], state["position"]
