"""Encoder latency of every model on this CPU: litesam (as built, and prepared for inference as
``build_model(name, checkpoint)`` returns it: fused, channels-last) vs the official implementation.

    python benchmarks/bench_encoders.py [--models mobile_sam repvit_sam ...] [--repeats 3] [--threads 2]

The official code runs here for SAM (PyPI segment-anything) and MobileSAM (PyPI mobilesam-mirror); it
gets the same weights as ours. Each model's implementations are timed interleaved in one run, and the
4096x4096 matmul peak is measured alongside, so ratios and "% of peak" are meaningful on a noisy machine.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import copy

import torch
from common import import_official, interleaved, matmul_gflops

import litesam
from litesam.build import prepare_for_inference

DEFAULT = [
    "sam_vit_b", "mobile_sam", "repvit_sam", "edge_sam", "efficientvit_sam_l0", "efficientvit_sam_xl0",
    "efficient_sam_vitt",
]  # fmt: skip


def official_encoder(name: str, ours: torch.nn.Module) -> torch.nn.Module | None:
    """The official model's image encoder with our weights, where the official package runs here."""
    if name.startswith("sam_vit_"):
        official = import_official("segment_anything").sam_model_registry[name.removeprefix("sam_")]()
    elif name == "mobile_sam":
        official = import_official("mobile_sam").sam_model_registry["vit_t"]()
    else:
        return None
    official.load_state_dict(ours.state_dict(), strict=True)
    return official.image_encoder.eval()


def time_model(name: str, repeats: int) -> str:
    """One Markdown table row: the model's encoder timed as built, prepared for inference, and official."""
    model = litesam.build_model(name)
    fused = prepare_for_inference(copy.deepcopy(model))  # what build_model(name, checkpoint) returns
    size = model.image_size
    x = torch.randn(1, 3, size, size)
    x_nhwc = x.contiguous(memory_format=torch.channels_last)
    fns = {"litesam": lambda: model.image_encoder(x), "fused": lambda: fused.image_encoder(x_nhwc)}
    official = official_encoder(name, model)
    if official is not None:
        fns["official"] = lambda: official(x)
    with torch.inference_mode():
        times = interleaved(fns, repeats)
    peak = matmul_gflops()
    best = min(times["litesam"], times["fused"])
    gflops = litesam.get_spec(name).stats().encoder_flops / 1e9
    ratio = f"{times['official'] / best:.2f}x" if "official" in times else "-"
    official_ms = f"{1e3 * times['official']:.0f}" if "official" in times else "-"
    achieved = gflops / best
    return (
        f"| {name} | {size} | {gflops:.1f} | {official_ms} | {1e3 * times['litesam']:.0f} "
        f"| {1e3 * times['fused']:.0f} | {ratio} | {achieved:.0f} | {100 * achieved / peak:.0f}% |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=DEFAULT, help=f"default: {' '.join(DEFAULT)}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for name in args.models:
        rows.append(time_model(name, args.repeats))
        print(rows[-1], flush=True)
    print(f"\n{args.threads} threads, torch {torch.__version__}, median of {args.repeats} interleaved runs\n")
    print("| model | input | GFLOPs | official ms | litesam ms | fused ms | speed-up | GFLOP/s | % of peak |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
