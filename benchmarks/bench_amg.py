"""Segment everything, end to end: litesam's MaskGenerator vs the official MobileSAM generator, one run each.

    python benchmarks/bench_amg.py [--points-per-side 32] [--threads 2] [--keep-all] [--profile]

Both drive MobileSAM with identical weights (the parity fixtures' name-keyed rule when ../shared is there,
else one random init), the official settings (32x32 grid, 64 points per batch, no crops) on
shared/fixtures/images/picture1.jpg. Prints the seconds of each, the speed-up, and whether the outputs
match (mask count; each official mask matched to ours by prompt point, mask IoU). ``--keep-all`` turns
the IoU and stability filters off, so that random weights still produce masks to compare; ``--profile``
adds a cProfile of our run (top functions by own time).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time

import numpy as np
import torch
from common import REPO, SHARED_IMAGE, import_official

import litesam
from litesam.build import prepare_for_inference
from litesam.utils.amg import rle_to_mask
from litesam.utils.image import load_image


def identical_models():
    """(official mobile_sam Sam, litesam Sam) with the same weights, both in eval mode; ours prepared for
    inference as ``build_model(name, checkpoint)`` returns it (BatchNorms folded, fast mask upscaling)."""
    official_pkg = import_official("mobile_sam")
    official = official_pkg.sam_model_registry["vit_t"]()
    ours = litesam.build_model("mobile_sam")
    sys.path.insert(0, str(REPO / "tests"))
    from fixture_cases import fill_parity_weights, fixtures_available

    if fixtures_available():
        fill_parity_weights(ours)
    official.load_state_dict(ours.state_dict(), strict=True)
    # official.eval() again: its TinyViT caches attention biases
    return official_pkg, official.eval(), prepare_for_inference(ours)


def match(ours: list[dict], theirs: list[dict]) -> tuple[bool, float]:
    """Same count, and every official mask has one of ours from the same point with IoU >= 0.99.
    Returns (matched, lowest IoU)."""
    if len(ours) != len(theirs):
        return False, 0.0
    lowest, free = 1.0, list(range(len(ours)))
    for t in theirs:
        t_mask = rle_to_mask(t["segmentation"])
        same_point = [i for i in free if np.allclose(ours[i]["point_coords"], t["point_coords"])]
        if not same_point:
            return False, 0.0
        ious = []
        for i in same_point:
            o_mask = rle_to_mask(ours[i]["segmentation"])
            ious.append((o_mask & t_mask).sum() / max((o_mask | t_mask).sum(), 1))
        best = int(np.argmax(ious))
        free.remove(same_point[best])
        lowest = min(lowest, float(ious[best]))
    return lowest >= 0.99, lowest


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--keep-all", action="store_true", help="pred_iou_thresh = stability_score_thresh = 0"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile our run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    official_pkg, official, ours = identical_models()
    module = sys.modules["mobile_sam.automatic_mask_generator"]
    stub_nms = module.batched_nms
    module.batched_nms = lambda boxes, scores, idxs, iou_threshold: stub_nms(
        boxes, scores, idxs, iou_threshold
    )

    image = load_image(SHARED_IMAGE) if SHARED_IMAGE.exists() else None
    if image is None:
        image = np.random.default_rng(0).integers(0, 256, (770, 769, 3), dtype=np.uint8)
    settings = dict(points_per_side=args.points_per_side, output_mode="uncompressed_rle")
    if args.keep_all:
        settings.update(pred_iou_thresh=0.0, stability_score_thresh=0.0)

    theirs_gen = official_pkg.SamAutomaticMaskGenerator(official, **settings)
    ours_gen = litesam.MaskGenerator(ours, **settings)
    start = time.perf_counter()
    theirs = theirs_gen.generate(image)
    t_official = time.perf_counter() - start
    profiler = cProfile.Profile() if args.profile else None
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    records = ours_gen.generate(image)
    if profiler:
        profiler.disable()
    t_ours = time.perf_counter() - start

    ok, lowest = match(records, theirs)
    h, w = image.shape[:2]
    print(f"mobile_sam, {w}x{h} image, {args.threads} threads, torch {torch.__version__}")
    print(f"settings: {settings}")
    print(f"official  {t_official:8.2f} s   {len(theirs)} masks")
    print(f"litesam   {t_ours:8.2f} s   {len(records)} masks")
    print(f"speed-up  {t_official / t_ours:8.2f}x")
    print(
        f"outputs match: {ok} (mask count {len(records)} vs {len(theirs)}, lowest matched IoU {lowest:.4f})"
    )
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
        print(out.getvalue())


if __name__ == "__main__":
    main()
