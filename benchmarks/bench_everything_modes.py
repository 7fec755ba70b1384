"""Segment-everything without a grid: FastSAM-s and MobileSAM-v2 vs the point grid with MobileSAM, one run.

    python benchmarks/bench_everything_modes.py [--points-per-side 16] [--threads 2]

Random weights (no checkpoint can be downloaded here) cost what real ones cost per network pass, but they
decide how many masks survive: the grid runs with its filters off (every candidate is kept, the most
work), FastSAM and MobileSAM-v2 keep what their detectors pass at the official thresholds. Prints seconds
per image (median of ``--repeats``) and the number of masks, and the matmul peak of this run.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import SHARED_IMAGE, matmul_gflops

import litesam
from litesam.build import prepare_for_inference
from litesam.utils.image import load_image


def timed(fn, repeats: int) -> tuple[float, int]:
    """(median seconds, number of records) of ``fn()`` over ``repeats`` runs after one warm-up."""
    count = len(fn())
    seconds = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - tic)
    return sorted(seconds)[len(seconds) // 2], count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--points-per-side", type=int, default=16, help="grid of the MobileSAM run (default 16)"
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = load_image(SHARED_IMAGE)
    torch.manual_seed(0)
    runs = {
        f"mobile_sam grid {args.points_per_side}x{args.points_per_side} (filters off)": litesam.MaskGenerator(
            prepare_for_inference(litesam.build_model("mobile_sam")),
            points_per_side=args.points_per_side,
            pred_iou_thresh=0.0,
            stability_score_thresh=0.0,
        ),
        "fastsam_s (conf 0.4, iou 0.9)": litesam.MaskGenerator(
            prepare_for_inference(litesam.build_model("fastsam_s"))
        ),
        "mobile_sam_v2 efficientvit_l2 (conf 0.4)": litesam.MaskGenerator(
            prepare_for_inference(litesam.build_model("mobile_sam_v2", encoder="efficientvit_l2"))
        ),
    }
    print(f"{image.shape[1]}x{image.shape[0]} image, {args.threads} threads, torch {torch.__version__}")
    for name, generator in runs.items():
        seconds, masks = timed(lambda g=generator: g.generate(image), args.repeats)
        print(f"{name:<48} {seconds:8.2f} s  {masks:4d} masks")
    print(f"matmul peak this run: {matmul_gflops():.0f} GFLOP/s")


if __name__ == "__main__":
    main()
