"""SAM encoder and decoder latency: litesam vs the official segment-anything package, same weights, one run.

    python benchmarks/bench_sam.py [--model sam_vit_b] [--repeats 3] [--threads 2]

Prints median milliseconds and the speed-up (official / litesam) for the image encoder (1x3x1024x1024)
and for one prompt through prompt encoder + mask decoder (3 masks, low-res logits).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import SHARED_IMAGE, import_official, interleaved, matmul_gflops

import litesam
import litesam.utils.image
from litesam.build import prepare_for_inference


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="sam_vit_b", choices=["sam_vit_b", "sam_vit_l", "sam_vit_h"])
    parser.add_argument("--repeats", type=int, default=3, help="timed encoder runs per implementation")
    parser.add_argument("--decoder-repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    sa = import_official("segment_anything")
    official = sa.sam_model_registry[args.model.removeprefix("sam_")]().eval()
    ours = litesam.build_model(args.model)
    ours.load_state_dict(official.state_dict(), strict=True)
    prepare_for_inference(ours)  # as build_model(name, checkpoint) returns it (fast mask upscaling)

    image = np.asarray(litesam.utils.image.load_image(SHARED_IMAGE)) if SHARED_IMAGE.exists() else None
    if image is None:
        image = np.random.default_rng(0).integers(0, 256, (770, 769, 3), dtype=np.uint8)
    x = ours.transform.to_input(image)

    with torch.inference_mode():
        features = ours.encode(x)
        embeddings = features["image_embeddings"]
        err = (official.image_encoder(x) - embeddings).abs().max().item()
        enc = interleaved(
            {"official": lambda: official.image_encoder(x), "litesam": lambda: ours.encode(x)},
            args.repeats,
        )
        point = torch.tensor([[[500.0, 400.0]]])
        label = torch.tensor([[1]])
        prompts = litesam.Prompts(points=point, labels=label)

        def official_decode():
            sparse, dense = official.prompt_encoder(points=(point, label), boxes=None, masks=None)
            return official.mask_decoder(
                embeddings, official.prompt_encoder.get_dense_pe(), sparse, dense, True
            )

        dec = interleaved(
            {"official": official_decode, "litesam": lambda: ours.decode(features, prompts)},
            args.decoder_repeats,
            warmup=3,
        )
    peak = matmul_gflops()
    print(f"{args.model}, {args.threads} threads, torch {torch.__version__}; matmul peak {peak:.0f} GFLOP/s")
    print(f"max |encoder difference| = {err:.2e}")
    print(f"{'part':<28}{'official ms':>12}{'litesam ms':>12}{'speed-up':>10}")
    for part, t in (("image encoder (1024x1024)", enc), ("decoder (1 point, 3 masks)", dec)):
        ratio = t["official"] / t["litesam"]
        print(f"{part:<28}{1e3 * t['official']:>12.1f}{1e3 * t['litesam']:>12.1f}{ratio:>9.2f}x")


if __name__ == "__main__":
    main()
