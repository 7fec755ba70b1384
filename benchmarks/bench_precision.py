"""What bf16 and int8 cost in accuracy: per model, against exact fp32 on the parity fixtures' weights,
image and prompts (and their speed on this CPU).

    python benchmarks/bench_precision.py [--models mobile_sam edge_sam ...] [--settings bf16 int8]
        [--threads 2] [--json out.json]

Settings: ``bf16`` is torch bf16 autocast (``build_model(precision="bf16")``), ``int8`` the ONNX Runtime
backend with the encoder's weights dynamically quantised (``backend="onnxruntime", precision="int8"``).
Per model and setting: the image embedding's relative error (||x - fp32|| / ||fp32||), and over every
fixture prompt the IoU of the thresholded masks and the share of identical mask pixels vs fp32; plus the
seconds of one encode and whether this CPU has bf16 hardware (AMX / AVX512-BF16; without it oneDNN
emulates bf16, slower than fp32). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import REPO

import litesam
from litesam.precision import bf16_is_fast, set_precision

MODELS = ["mobile_sam", "edge_sam", "efficientvit_sam_l0", "repvit_sam", "sam_vit_b"]


def predictor_for(model: torch.nn.Module, setting: str) -> litesam.Predictor:
    """The predictor running ``model`` in ``setting`` (fp32, bf16 or int8)."""
    if setting == "int8":
        return litesam.Predictor(model, backend="onnxruntime", precision="int8")
    return litesam.Predictor(set_precision(model, setting))


def compare(name: str, setting: str) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from fixture_cases import fill_parity_weights, require_fixture, run_case

    fixture = require_fixture(name)
    predictors, seconds = {}, {}
    for precision in ("fp32", setting):
        predictor = predictor_for(fill_parity_weights(litesam.build_model(name)), precision)
        predictor.set_image(fixture.image_path)  # warm-up (exports, first-run allocations)
        start = time.perf_counter()
        predictor.set_image(fixture.image_path)
        seconds[precision] = time.perf_counter() - start
        predictors[precision] = predictor
    exact, other = (predictors[p].state.image_embeddings for p in ("fp32", setting))
    error = float((other - exact).norm() / exact.norm())
    ious, same = [], []
    for case in fixture.cases:
        if case.get("mask_input") is not None:
            continue
        masks = [run_case(fixture, predictors[p], case)[0] for p in ("fp32", setting)]
        for a, b in zip(*(m.reshape(-1, *m.shape[-2:]) for m in masks), strict=True):
            union = (a | b).sum()
            ious.append(float((a & b).sum() / union) if union else 1.0)
            same.append(float((a == b).mean()))
    return {"embedding_rel_error": error, "mask_iou_min": min(ious), "mask_iou_mean": float(np.mean(ious)),
            "identical_pixels_min": min(same), "masks": len(ious), "encode_s": seconds}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--settings", nargs="+", choices=("bf16", "int8"), default=["bf16", "int8"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fast = bf16_is_fast(torch.device("cpu"))
    print(f"bf16 hardware on this CPU: {fast}; {args.threads} threads; parity-fixture (random) weights\n")
    print(
        "| model | setting | embedding error | mask IoU min / mean | same pixels min | encode s fp32 / it |"
    )
    print("|---|---|---|---|---|---|")
    results: dict = {}
    for name in args.models:
        for setting in args.settings:
            r = results.setdefault(name, {})[setting] = compare(name, setting)
            iou = f"{r['mask_iou_min']:.4f} / {r['mask_iou_mean']:.4f}"
            seconds = f"{r['encode_s']['fp32']:.2f} / {r['encode_s'][setting]:.2f}"
            same = f"{r['identical_pixels_min']:.4%}"
            print(
                f"| {name} | {setting} | {r['embedding_rel_error']:.2%} | {iou} | {same} | {seconds} |",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps({"bf16_hardware": fast, "models": results}, indent=1))


if __name__ == "__main__":
    main()
