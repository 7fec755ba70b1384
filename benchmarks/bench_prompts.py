"""Many box prompts on one image: time and peak memory must grow linearly with the number of prompts.

    python benchmarks/bench_prompts.py [--counts 64 250 1000] [--threads 2]

The test suite's tiny SAM (1-block ViT, SAM's full mask decoder) prepared for inference, a 100x200
image, K random boxes through ``Predictor.predict_batch`` and box-prompted ``MaskGenerator.generate``
(filters off, so every box makes a mask), each K in a fresh child process. Prints seconds, ms per
prompt and peak RSS per K: ms per prompt stays flat and RSS grows only by the returned masks and
logits (predict_batch returns K low-res 256x256 float logits: 256 KiB per prompt).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from common import REPO

import litesam
from litesam.build import prepare_for_inference


def child(kind: str, count: int, threads: int) -> None:
    torch.set_num_threads(threads)
    sys.path.insert(0, str(REPO / "tests"))
    from helpers import photo, tiny_sam

    model = prepare_for_inference(tiny_sam())
    image = photo(100, 200)
    rng = np.random.default_rng(0)
    corner = rng.uniform([0, 0], [150, 60], (count, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(10, 40, (count, 2))], axis=1)
    start = time.perf_counter()
    if kind == "predict_batch":
        predictor = litesam.Predictor(model)
        predictor.set_image(image)
        masks, _, _ = predictor.predict_batch(boxes=boxes)
        made = len(masks)
    else:
        generator = litesam.MaskGenerator(
            model, pred_iou_thresh=0, stability_score_thresh=0, box_nms_thresh=1
        )
        made = len(generator.generate(image, boxes=boxes))
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mib": rss, "masks": made}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--counts", type=int, nargs="+", default=[64, 250, 1000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]), args.threads)
    print(f"tiny SAM (full SAM decoder), 100x200 image, {args.threads} threads")
    for kind in ("predict_batch", "generate"):
        for count in args.counts:
            command = [sys.executable, __file__, "--child", kind, str(count), "--threads", str(args.threads)]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            per = 1000 * r["seconds"] / count
            print(f"  {kind:13s} {count:5d} boxes  {r['seconds']:7.1f} s  {per:6.1f} ms/prompt"
                  f"  peak RSS {r['peak_rss_mib']:6.0f} MiB  {r['masks']} masks", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
