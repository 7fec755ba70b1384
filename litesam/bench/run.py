"""``litesam bench``'s measurement: every setting on the same weights in one process, as a JSON-ready
dict (see :func:`benchmark`)."""

from __future__ import annotations

import gc
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from .. import __version__
from ..prompts import Prompts
from ..registry import get_spec
from ..utils.stats import reference_formulation
from .subjects import Models, Skip, Subject, bench_image, litesam_subject, official_subject
from .timing import matmul_peak_gflops, native_bf16, peak_rss_mib, reset_peak_rss, time_it

TASKS = ("encoder", "decode", "everything")
PEERS = (("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "bf16"))


def count_flops(model: Any, points_per_side: int, points_per_batch: int = 64) -> dict[str, float]:
    """FLOPs of the three tasks, counted once on the torch model (matmul/conv/attention, multiply-add =
    2, as ``litesam models``): the encoder, one point decode, and everything = the encoder + the grid's
    decodes."""
    size = model.transform.image_size
    with torch.inference_mode(), reference_formulation(model), FlopCounterMode(display=False) as counter:
        features = dict(model.encode(torch.zeros(1, 3, size, size, device=model.device)))
    encoder = float(counter.get_total_flops())

    def decode_flops(batch: int) -> float:
        points = torch.rand(batch, 1, 2, dtype=torch.float64) * model.transform.frame_size
        prompts = Prompts.batch(points, torch.ones(batch, 1)).to(model.device)
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model.decode(features, prompts, True)
        return float(counter.get_total_flops())

    grid = points_per_side**2
    batch = min(points_per_batch, grid)
    return {
        "encoder": encoder,
        "decode": decode_flops(1),
        "everything": encoder + decode_flops(batch) * grid / batch,
    }


def benchmark(
    name: str,
    checkpoint: str | None = None,
    backends: Sequence[str] = ("torch",),
    precisions: Sequence[str] = ("fp32",),
    peers: bool = False,
    repeat: int = 5,
    warmup: int = 1,
    points_per_side: int = 16,
    everything: bool = True,
    peak_size: int = 4096,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Time ``name`` on each backend x precision (and with ``peers`` the official PyTorch code, ONNX
    Runtime fp32 (+ int8 when asked) and OpenVINO fp32 and bf16) on the same weights and image.

    Returns the run's record: machine, weights, matmul peaks (GFLOP/s; bf16 only where the CPU has
    native bf16), counted FLOPs, and per
    setting its timings (seconds: median, min/max, quartiles), GFLOP/s, share of the matmul peak of its
    precision class, peak RSS (MiB) and setup time (incl. any export); settings that cannot run here are
    listed with the reason.
    """
    spec = get_spec(name)
    models = Models(spec.name, checkpoint)
    image = bench_image()
    wanted = [(b, p, "litesam") for b in backends for p in precisions]
    if peers:
        wanted += [(b, p, "peer") for b, p in PEERS if (b, p, "litesam") not in wanted
                   and (p != "int8" or "int8" in precisions)]  # fmt: skip
    log(f"litesam bench {spec.name}: {torch.get_num_threads()} threads, weights "
        + (checkpoint or "random (no --checkpoint: timings are representative, masks are not)"))  # fmt: skip
    peaks = {"fp32": matmul_peak_gflops(torch.float32, peak_size)}
    if ("bf16" in precisions or peers) and native_bf16():  # emulated bf16 would take minutes here
        peaks["bf16"] = matmul_peak_gflops(torch.bfloat16, peak_size)
    flops = count_flops(models.get("fp32"), points_per_side)
    factories: list[tuple[str, Callable[[], Subject]]] = []
    if peers:
        factories.append(("official torch fp32", lambda: official_subject(models, image, points_per_side)))
    for backend, precision, group in wanted:
        factories.append((f"{backend} {precision}", lambda b=backend, p=precision, g=group:
                          litesam_subject(models, b, p, image, points_per_side, g)))  # fmt: skip
    rows, skipped = [], []
    for label, make in factories:
        gc.collect()
        start = time.perf_counter()
        try:
            subject = make()
        except Skip as e:
            skipped.append({"label": label, "reason": str(e)})
            log(f"  skipped {label}: {e}")
            continue
        setup = time.perf_counter() - start
        rows.append(_measure(subject, setup, repeat, warmup, everything, flops, peaks))
        log(f"  {subject.label}: encoder {rows[-1]['encoder']['median_s']:.4f} s")
    return {
        "model": spec.name,
        "checkpoint": checkpoint,
        "random_weights": checkpoint is None,
        "image_hw": list(image.shape[:2]),
        "input_size": spec.transform.image_size,
        "points_per_side": points_per_side,
        "repeat": repeat,
        "warmup": warmup,
        "threads": torch.get_num_threads(),
        "machine": {
            "cpu": _cpu_name(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "litesam": __version__,
        },  # fmt: skip
        "matmul_peak_gflops": peaks,
        "matmul_size": peak_size,
        "flops": flops,
        "rows": rows,
        "skipped": skipped,
    }


def _measure(subject: Subject, setup: float, repeat: int, warmup: int, everything: bool,
             flops: dict[str, float], peaks: dict[str, float]) -> dict[str, Any]:  # fmt: skip
    exact = reset_peak_rss()
    tasks = {"encoder": subject.encode, "decode": subject.decode}
    if everything:
        tasks["everything"] = subject.everything
    row: dict[str, Any] = {"label": subject.label, "group": subject.group, "backend": subject.backend,
                           "precision": subject.precision, "ran": subject.ran, "setup_s": setup}  # fmt: skip
    peak = peaks.get(subject.ran, peaks["fp32"])
    for task, fn in tasks.items():
        timing = time_it(fn, warmup, repeat)
        gflops = flops[task] / timing.median / 1e9
        row[task] = {**timing.as_dict(), "gflops_per_s": gflops, "peak_fraction": gflops / peak}
    row["peak_rss_mib"] = peak_rss_mib()
    row["peak_rss_scope"] = "row" if exact else "process"
    return row


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
