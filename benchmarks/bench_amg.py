"""Segment everything, end to end: the official MobileSAM generator vs litesam fp32 and bf16, one run.

    python benchmarks/bench_amg.py [--threads 2] [--only official,fp32,bf16] [--memory] [--json out.json]

Every generator runs in a fresh child process (so each peak RSS is its own) on identical weights (the
parity fixtures' name-keyed rule when ../shared is there, else one random init) and
shared/fixtures/images/picture1.jpg, in two settings:

- ``32x32 default``: the official defaults (32x32 grid, 64 points per batch, IoU 0.88, stability 0.95);
- ``16x16 filters off``: IoU and stability filters off, so random weights still keep masks to compare.

Prints per setting: seconds of each generator, speed-ups over official, peak RSS, and whether the
outputs match ours fp32 (mask count; each official mask matched by prompt point, lowest mask IoU); then
the decoder alone at batch 64 (ms per prompt, GFLOP/s counting the official decoder's FLOPs and the ones
litesam executes, % of the 4096x4096 float32 matmul peak measured in the same run). ``--memory`` adds
litesam's peak RSS for 32x32 with ``crop_n_layers=1`` on a 1920x1080 image.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import REPO, SHARED_IMAGE, import_official, matmul_gflops, median_time

import litesam
from litesam.build import prepare_for_inference
from litesam.prompts import Prompts
from litesam.utils.amg import rle_to_mask
from litesam.utils.image import load_image

SETTINGS = {
    "32x32 default": dict(points_per_side=32),
    "16x16 filters off": dict(points_per_side=16, pred_iou_thresh=0.0, stability_score_thresh=0.0),
}


def identical_models():
    """(official mobile_sam package, its Sam, litesam Sam) with the same weights, both in eval mode; ours
    prepared for inference as ``build_model(name, checkpoint)`` returns it."""
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


def test_image(memory: bool) -> np.ndarray:
    image = load_image(SHARED_IMAGE) if SHARED_IMAGE.exists() else None
    if image is None:
        image = np.random.default_rng(0).integers(0, 256, (770, 769, 3), dtype=np.uint8)
    if memory:  # the same photo at 1920x1080
        image = np.asarray(litesam.utils.image.Image.fromarray(image).resize((1920, 1080)))
    return image


def child(args: argparse.Namespace) -> None:
    """One generator, one setting: writes {seconds, peak_rss_mib, records} to args.out."""
    torch.set_num_threads(args.threads)
    official_pkg, official, ours = identical_models()
    settings = dict(json.loads(args.settings), output_mode="uncompressed_rle")
    if args.child == "official":
        module = sys.modules["mobile_sam.automatic_mask_generator"]
        stub_nms = module.batched_nms
        module.batched_nms = lambda boxes, scores, idxs, iou_threshold: stub_nms(
            boxes, scores, idxs, iou_threshold
        )
        generator = official_pkg.SamAutomaticMaskGenerator(official, **settings)
    else:
        litesam.precision.set_precision(ours, args.child)
        generator = litesam.MaskGenerator(ours, **settings)
    image = test_image(args.memory)
    start = time.perf_counter()
    records = generator.generate(image)
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    keep = ("segmentation", "point_coords", "predicted_iou")
    out = {"seconds": seconds, "peak_rss_mib": rss, "records": [{k: r[k] for k in keep} for r in records]}
    Path(args.out).write_text(json.dumps(out, default=lambda a: np.asarray(a).tolist()))


def run_child(which: str, settings: dict, threads: int, memory: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        command = [sys.executable, __file__, "--child", which, "--settings", json.dumps(settings),
                   "--threads", str(threads), "--out", str(out)]  # fmt: skip
        subprocess.run(command + (["--memory"] if memory else []), check=True)
        return json.loads(out.read_text())


def match(ours: list[dict], theirs: list[dict]) -> tuple[bool, float]:
    """Same count, and every one of ``theirs`` has one of ``ours`` from the same point with mask IoU >=
    0.99. Returns (matched, lowest IoU)."""
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


def decoder_speed(threads: int, batch: int = 64, repeats: int = 3) -> dict:
    """ms per prompt of litesam's decoder (fp32) and the official one at ``batch`` single-point prompts,
    multimask, on one shared image embedding; FLOPs per prompt counted on each."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(threads)
    _, official, ours = identical_models()
    embedding = torch.randn(1, 256, 64, 64)
    points = torch.rand(batch, 1, 2) * 1024
    labels = torch.ones(batch, 1, dtype=torch.int)
    prompts = Prompts(points=points, labels=labels)

    def theirs() -> None:
        sparse, dense = official.prompt_encoder(points=(points, labels), boxes=None, masks=None)
        official.mask_decoder(embedding, official.prompt_encoder.get_dense_pe(), sparse, dense, True)

    def mine() -> None:
        ours.decode({"image_embeddings": embedding}, prompts, True)

    result = {}
    with torch.inference_mode():
        for name, fn in (("official", theirs), ("litesam", mine)):
            with FlopCounterMode(display=False) as counter:
                fn()  # also the warm-up
            seconds = median_time(fn, repeats, warmup=0)
            result[name] = {"ms_per_prompt": 1000 * seconds / batch,
                            "gflop_per_prompt": counter.get_total_flops() / batch / 1e9}  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="official,fp32,bf16", help="generators to run, comma-separated")
    parser.add_argument("--settings-only", default=None, help="one of: " + ", ".join(SETTINGS))
    parser.add_argument("--memory", action="store_true", help="also: 1080p, crop_n_layers=1, litesam fp32")
    parser.add_argument("--json", default=None, help="write the results here too")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    torch.set_num_threads(args.threads)
    peak = matmul_gflops()
    which = args.only.split(",")
    print(f"mobile_sam, picture1.jpg, {args.threads} threads, torch {torch.__version__}, "
          f"4096^2 fp32 matmul peak {peak:.0f} GFLOP/s")  # fmt: skip
    report: dict = {"threads": args.threads, "matmul_peak_gflops": peak, "settings": {}}
    for label, settings in SETTINGS.items():
        if args.settings_only and label != args.settings_only:
            continue
        runs = {name: run_child(name, settings, args.threads) for name in which}
        print(f"\n{label}: {settings}")
        reference = runs.get("fp32")
        rows = {}
        for name, run in runs.items():
            row = {
                "seconds": run["seconds"],
                "peak_rss_mib": run["peak_rss_mib"],
                "masks": len(run["records"]),
            }
            if "official" in runs:
                row["speedup_vs_official"] = runs["official"]["seconds"] / run["seconds"]
            if reference is not None and name != "fp32":
                row["matches_fp32"], row["lowest_iou_vs_fp32"] = match(reference["records"], run["records"])
            rows[name] = row
            extra = f"{row['speedup_vs_official']:6.2f}x official" if "official" in runs else ""
            same = ""
            if "matches_fp32" in row:
                same = f"  matches fp32: {row['matches_fp32']} (lowest IoU {row['lowest_iou_vs_fp32']:.4f})"
            print(f"  {name:9s} {run['seconds']:8.2f} s  {extra}  peak RSS {run['peak_rss_mib']:6.0f} MiB  "
                  f"{row['masks']} masks{same}")  # fmt: skip
        report["settings"][label] = rows
    if "fp32" in which:
        speed = decoder_speed(args.threads)
        report["decoder_batch64"] = speed
        print("\ndecoder alone, batch 64, multimask (fp32):")
        official_flops = speed["official"]["gflop_per_prompt"]
        for name, row in speed.items():
            effective = official_flops / row["ms_per_prompt"] * 1000
            executed = row["gflop_per_prompt"] / row["ms_per_prompt"] * 1000
            print(f"  {name:9s} {row['ms_per_prompt']:6.1f} ms/prompt  {effective:6.1f} GFLOP/s of the "
                  f"official {official_flops:.2f} GFLOP/prompt = {100 * effective / peak:3.0f}% of peak; "
                  f"executes {row['gflop_per_prompt']:.2f} GFLOP/prompt at {executed:6.1f} GFLOP/s "
                  f"({100 * executed / peak:3.0f}%)")  # fmt: skip
    if args.memory:
        run = run_child("fp32", dict(points_per_side=32, crop_n_layers=1), args.threads, memory=True)
        report["memory_1080p_crops"] = {"seconds": run["seconds"], "peak_rss_mib": run["peak_rss_mib"]}
        print(f"\n1920x1080, 32x32, crop_n_layers=1, litesam fp32: {run['seconds']:.1f} s, "
              f"peak RSS {run['peak_rss_mib']:.0f} MiB, {len(run['records'])} masks")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
