"""GPU paths of the scale-out work, end to end on a CUDA machine in a few minutes (CPU CI tests gloo only).

    python benchmarks/gpu_check.py [--images 64] [--teacher mobile_sam] [--student repvit_sam]

Runs, with random weights saved as checkpoint files (no download) on synthetic images:

1. ``distill embed`` under torchrun on every GPU (NCCL, pinned memory, non-blocking copies, sharded parts
   and the merge), in fp32 and in bf16 autocast; prints images/s and the bf16 embeddings' error vs fp32;
2. the same embed in one process: the merged store must equal it entry for entry (fp32);
3. ``distill train`` under torchrun with ``--sync-bn`` and ``--accumulate 2`` (bf16 autocast, NCCL);
4. ``litesam everything`` under torchrun on the GPUs.

Exits 1 if a check fails, 2 when there is no GPU.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import litesam
from litesam.distill.embeddings import EmbeddingStore


def run(*args: str) -> float:
    """Run a command (stdout/stderr shown), fail loudly; returns its seconds."""
    print("+", " ".join(args), flush=True)
    tic = time.perf_counter()
    subprocess.run(args, check=True)
    return time.perf_counter() - tic


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=64, help="synthetic images to embed (default 64)")
    parser.add_argument("--teacher", default="mobile_sam")
    parser.add_argument("--student", default="repvit_sam")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU here: nothing to check", file=sys.stderr)
        return 2
    gpus = torch.cuda.device_count()
    print(f"{gpus} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    torchrun = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={gpus}"]
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images = root / "images"
        images.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.images):
            h, w = rng.integers(480, 1200, size=2)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / f"{i:05d}.jpg")
        weights = root / "teacher.pth"
        torch.save(litesam.build_model(args.teacher).state_dict(), weights)
        embed = ["-m", "litesam", "distill", "embed", "--teacher", args.teacher, "--checkpoint", str(weights),
                 "--images", str(images), "--no-progress"]  # fmt: skip

        seconds = {}
        for dtype in ("fp32", "bf16"):
            seconds[dtype] = run(*torchrun, *embed, "--out", str(root / dtype), "--teacher-dtype", dtype)
            print(
                f"embed {dtype}: {args.images / seconds[dtype]:.1f} images/s on {gpus} GPU(s) (with start-up)"
            )
        run(sys.executable, *embed, "--out", str(root / "single"), "--device", "cuda:0")
        fp32, bf16, single = (EmbeddingStore(root / n) for n in ("fp32", "bf16", "single"))
        if [e.image for e in fp32.entries] != [e.image for e in single.entries]:
            failures.append("the merged many-GPU store's index differs from the one-GPU store's")
        worst = max((fp32.embedding(i).float() - single.embedding(i).float()).abs().max().item()
                    for i in range(len(fp32)))  # fmt: skip
        print(f"many-GPU vs one-GPU embeddings: max |diff| {worst:.2e}")
        errors = [
            (
                (bf16.embedding(i).float() - fp32.embedding(i).float()).norm()
                / fp32.embedding(i).float().norm()
            ).item()
            for i in range(len(fp32))
        ]
        print(f"bf16 teacher vs fp32: relative L2 error mean {np.mean(errors):.2e}, max {np.max(errors):.2e}")

        run(*torchrun, "-m", "litesam", "distill", "train", "--student", args.student, "--embeddings",
            str(root / "fp32"), "--out", str(root / "run"), "--epochs", "1", "--batch-size", str(4 * gpus),
            "--accumulate", "2", "--sync-bn", "--teacher-checkpoint", str(weights),
            "--no-progress")  # fmt: skip
        state = torch.load(root / "run" / "last.pt", weights_only=True)
        print(f"train: {state['step']} steps on {state['world_size']} process(es)")

        run(*torchrun, "-m", "litesam", "everything", str(images), "--model", args.teacher, "--checkpoint",
            str(weights), "--device", "cuda", "--points-per-side", "8", "-o", str(root / "everything"),
            "--no-progress")  # fmt: skip
        done = len(list((root / "everything").glob("*_overlay.png")))
        if done != args.images:
            failures.append(f"everything wrote {done} overlays for {args.images} images")
    for failure in failures:
        print("FAILED:", failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
