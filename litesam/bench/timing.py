"""Timing, peak memory and the machine's matmul peak: the measurements of ``litesam bench``."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of ``repeat`` runs after the warm-up."""

    runs: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def quartiles(self) -> tuple[float, float]:
        """(Q1, Q3) seconds; both the median for fewer than 2 runs."""
        if len(self.runs) < 2:
            return self.median, self.median
        q = statistics.quantiles(self.runs, n=4, method="inclusive")
        return q[0], q[2]

    def as_dict(self) -> dict[str, float | list[float]]:
        q1, q3 = self.quartiles
        return {"median_s": self.median, "min_s": min(self.runs), "max_s": max(self.runs), "q1_s": q1,
                "q3_s": q3, "runs_s": list(self.runs)}  # fmt: skip


def time_it(fn: Callable[[], object], warmup: int, repeat: int) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then ``repeat`` times timed."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(max(repeat, 1)):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return Timing(tuple(runs))


def reset_peak_rss() -> bool:
    """Reset the process's peak resident memory (Linux ``clear_refs``); False where that is impossible
    (the peak is then the process's since it started)."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mib() -> float:
    """Peak resident memory of this process, MiB (since the last :func:`reset_peak_rss`)."""
    if _STATUS.exists():
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def matmul_peak_gflops(dtype: torch.dtype = torch.float32, size: int = 4096, repeat: int = 3) -> float:
    """GFLOP/s of the best of ``repeat`` ``size`` x ``size`` matmuls in ``dtype`` on the CPU, with the
    current torch threads: the machine's practical peak for dense work."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    timing = time_it(lambda: torch.mm(a, b), warmup=1, repeat=repeat)
    return 2 * size**3 / min(timing.runs) / 1e9


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated, slower
    than fp32."""
    cpu = torch.cpu
    return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
