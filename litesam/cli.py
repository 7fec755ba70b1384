"""The ``litesam`` command: segment images, list and download models."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from . import __version__


def _numbers(text: str, count: tuple[int, ...], what: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        values = []
    if len(values) not in count:
        raise argparse.ArgumentTypeError(
            f"{what} expects {' or '.join(map(str, count))} comma-separated numbers, got {text!r}"
        )
    return values


def _point(text: str) -> list[float]:
    values = _numbers(text, (2, 3), "--point X,Y[,LABEL]")
    if len(values) == 3 and values[2] not in (0, 1):
        raise argparse.ArgumentTypeError(
            f"point label must be 1 (foreground) or 0 (background), got {text!r}"
        )
    return values if len(values) == 3 else values + [1.0]


def _box(text: str) -> list[float]:
    return _numbers(text, (4,), "--box X0,Y0,X1,Y1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="litesam",
        description="Fast, lightweight Segment Anything: one CLI over SAM and its light models.",
    )
    parser.add_argument("--version", action="version", version=f"litesam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    seg = sub.add_parser(
        "segment",
        help="segment an image from point and box prompts",
        description="Segment IMAGE from point/box prompts; writes mask PNGs, an overlay PNG and a JSON"
        " to -o DIR.",
    )
    seg.add_argument("image", help="image file (JPEG, PNG, TIFF, ...)")
    seg.add_argument(
        "--model", default="sam_vit_b", help="model name (see `litesam models`; default sam_vit_b)"
    )
    seg.add_argument(
        "--checkpoint",
        default="auto",
        help="checkpoint file; 'auto' (default) uses the cached official file, downloading it if needed",
    )
    seg.add_argument(
        "--point",
        action="append",
        type=_point,
        default=[],
        metavar="X,Y[,LABEL]",
        help="point prompt in image pixels; LABEL 1 = foreground (default), 0 = background; repeatable",
    )
    seg.add_argument(
        "--box",
        action="append",
        type=_box,
        default=[],
        metavar="X0,Y0,X1,Y1",
        help="box prompt in image pixels; repeat for several objects (one mask each)",
    )
    seg.add_argument("--multimask", action="store_true", help="return 3 candidate masks instead of 1")
    seg.add_argument("-o", "--output", default="litesam_out", help="output folder (default litesam_out)")
    seg.add_argument("--device", default="cpu", help="torch device (cpu, cuda, mps; default cpu)")

    sub.add_parser("models", help="list the registered models", description="List the registered models.")

    dl = sub.add_parser(
        "download",
        help="download official checkpoints into the cache",
        description="Download official checkpoints into $LITESAM_HOME (default ~/.cache/litesam),"
        " verified by SHA-256.",
    )
    dl.add_argument("names", nargs="+", metavar="NAME", help="model names (see `litesam models`)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError
    from .hub import DownloadError
    from .utils.image import ImageError

    try:
        return {"segment": _segment, "models": _models, "download": _download}[args.command](args)
    except (CheckpointError, DownloadError, ImageError, ValueError, FileNotFoundError) as e:
        print(f"litesam {args.command}: error: {e}", file=sys.stderr)
        return 2


def _models(args: argparse.Namespace) -> int:
    from .registry import get_spec, list_models

    rows = [("name", "input", "source", "checkpoint", "description")]
    for name in list_models():
        spec = get_spec(name)
        rows.append(
            (name, str(spec.preprocess.image_size), spec.source, spec.checkpoint_filename, spec.description)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def _download(args: argparse.Namespace) -> int:
    from .hub import fetch_checkpoint
    from .registry import get_spec

    for name in args.names:
        spec = get_spec(name)
        path = fetch_checkpoint(
            spec.name, spec.url, spec.checkpoint_filename, spec.sha256, member=spec.member
        )
        print(f"{name}: {path}")
    return 0


def _segment(args: argparse.Namespace) -> int:
    from . import Predictor, build_model
    from .utils.image import load_image
    from .utils.visualize import candidate_panels, overlay

    if not args.point and not args.box:
        raise ValueError("give at least one prompt: --point X,Y[,LABEL] and/or --box X0,Y0,X1,Y1")
    if len(args.box) > 1 and args.point:
        raise ValueError("several --box prompts cannot be combined with --point (each box is its own object)")
    image = load_image(args.image)
    model = build_model(args.model, checkpoint=args.checkpoint, device=args.device)
    predictor = Predictor(model)
    predictor.set_image(image)

    points = np.array([p[:2] for p in args.point], dtype=np.float64).reshape(-1, 2)
    labels = np.array([int(p[2]) for p in args.point], dtype=np.int64)
    boxes = np.array(args.box, dtype=np.float64).reshape(-1, 4)
    if len(boxes) > 1:
        masks, scores, _ = predictor.predict_batch(boxes=boxes, multimask_output=args.multimask)
        masks, scores = masks.reshape(-1, *masks.shape[-2:]), scores.reshape(-1)
    else:
        masks, scores, _ = predictor.predict(
            point_coords=points if len(points) else None,
            point_labels=labels if len(points) else None,
            box=boxes[0] if len(boxes) else None,
            multimask_output=args.multimask,
        )

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.image).stem
    records = []
    for i, (mask, score) in enumerate(zip(masks, scores, strict=True)):
        name = f"{stem}_mask{i}.png"
        Image.fromarray(mask.astype(np.uint8) * 255).save(out / name)
        ys, xs = np.nonzero(mask)
        bbox = (
            [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
            if len(xs)
            else [0, 0, 0, 0]
        )
        records.append({"file": name, "score": float(score), "area": int(mask.sum()), "bbox_xywh": bbox})
    if args.multimask:  # alternatives for one prompt: one panel each
        picture = candidate_panels(image, masks, scores, points, labels, boxes)
    else:
        picture = overlay(image, masks, points, labels, boxes)
    picture.save(out / f"{stem}_overlay.png")
    summary = {
        "image": str(args.image),
        "size_hw": list(image.shape[:2]),
        "model": args.model,
        "checkpoint": str(args.checkpoint),
        "prompts": {"points": points.tolist(), "labels": labels.tolist(), "boxes": boxes.tolist()},
        "multimask": args.multimask,
        "masks": records,
    }
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=2))
    best = max(records, key=lambda r: r["score"])
    print(
        f"{len(records)} mask(s) written to {out}/ (best: {best['file']}, predicted IoU {best['score']:.3f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
