"""Many processes (``torchrun``, one node or many): joining the process group and splitting work by rank."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def join_process_group(device: str | torch.device | None) -> tuple[int, int, torch.device]:
    """(rank, world size, device); joins the torchrun process group (NCCL on GPUs, gloo on CPU) if any.

    ``device`` None: ``cuda:LOCAL_RANK`` where CUDA is available, else the CPU; ``"cuda"`` without an
    index also means this process's GPU, ``cuda:LOCAL_RANK``.
    """
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), device
    return 0, 1, device


def rank_share(items: Sequence[T], rank: int, world: int) -> list[T]:
    """Every ``world``-th item starting at ``rank``: a deterministic, balanced split of a sorted list (the
    same items for the same rank and world size on every run)."""
    return list(items[rank::world])


def gather(obj: T) -> list[T]:
    """Every process's ``obj``, in rank order (``[obj]`` without a process group)."""
    if not dist.is_initialized():
        return [obj]
    objects: list[T] = [obj] * dist.get_world_size()
    dist.all_gather_object(objects, obj)
    return objects


def barrier() -> None:
    """Wait for every process of the group (no-op without one)."""
    if dist.is_initialized():
        dist.barrier()
