"""Shared helpers for benchmark scripts: official packages as oracles, timing, the machine's matmul peak."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_IMAGE = REPO.parent / "shared" / "fixtures" / "images" / "picture1.jpg"


def import_official(package: str):
    """Import an official PyPI package (segment_anything / mobile_sam) with the test stand-ins for
    torchvision and timm."""
    sys.path.insert(0, str(REPO / "tests"))
    import official_stubs

    official_stubs.install()
    return __import__(package)


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each function, runs interleaved (A B A B ...) so machine drift hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def matmul_gflops(n: int = 4096, repeats: int = 5) -> float:
    """Achieved GFLOP/s of an n x n float32 matmul with the current thread count (the machine's peak)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / median_time(lambda: a @ b, repeats) / 1e9
