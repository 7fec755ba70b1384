"""The ``litesam`` command: segment images, list and download models."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from . import __version__
from .bench.cli import add_bench_parser
from .cli_args import add_backend_args, add_model_args
from .distill.cli import add_parsers as add_distill_parsers
from .errors import InputError, LitesamError, OutputError
from .evaluation.cli import add_parser as add_eval_parser
from .export.cli import add_export_parser
from .server.cli import add_parser as add_serve_parser


def _numbers(text: str, count: tuple[int, ...], what: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        values = []
    if len(values) not in count:
        raise argparse.ArgumentTypeError(
            f"{what} expects {' or '.join(map(str, count))} comma-separated numbers, got {text!r}"
        )
    if not all(map(math.isfinite, values)):
        raise argparse.ArgumentTypeError(f"{what} expects finite numbers, got {text!r} (NaN or infinite)")
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
    add_model_args(seg)
    add_backend_args(seg)
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

    models = sub.add_parser(
        "models", help="list the registered models", description="List the registered models."
    )
    models.add_argument(
        "--stats",
        action="store_true",
        help="also count parameters and encoder GFLOPs (builds each model on the meta device: ~30 s)",
    )

    ins = sub.add_parser(
        "inspect",
        help="say what a checkpoint file is",
        description="Identify a checkpoint file's model from its keys and shapes; print its layout, dtypes"
        " and parameter count.",
    )
    ins.add_argument("checkpoint", help="checkpoint file (.pth, .pt, .bin, .safetensors)")

    dl = sub.add_parser(
        "download",
        help="download official checkpoints into the cache",
        description="Download official checkpoints into $LITESAM_HOME (default ~/.cache/litesam),"
        " verified by SHA-256.",
    )
    dl.add_argument("names", nargs="+", metavar="NAME", help="model names (see `litesam models`)")
    _add_everything_parser(sub)
    _add_edges_parser(sub)
    add_distill_parsers(sub)
    add_eval_parser(sub)
    add_serve_parser(sub)
    add_export_parser(sub)
    add_bench_parser(sub)
    return parser


# Mask generator settings as (option, type, help); unset options keep the generator's (official) defaults.
_GENERATOR_KNOBS: tuple[tuple[str, type, str], ...] = (
    ("--points-per-side", int, "grid points per image side (default 32)"),
    ("--points-per-batch", int, "prompts decoded at once (default 64)"),
    ("--pred-iou-thresh", float, "drop masks with a lower predicted IoU (default 0.88)"),
    ("--stability-score-thresh", float, "drop masks with a lower stability score (default 0.95)"),
    ("--stability-score-offset", float, "logit offset of the stability score (default 1.0)"),
    ("--box-nms-thresh", float, "box IoU above which duplicate masks are removed (default 0.7)"),
    ("--crop-n-layers", int, "layers of image crops to segment as well (default 0: none)"),
    ("--crop-nms-thresh", float, "box IoU for removing duplicates between crops (default 0.7)"),
    (
        "--crop-overlap-ratio",
        float,
        "overlap of neighbouring crops, fraction of the short side (default 512/1500)",
    ),
    ("--crop-n-points-downscale-factor", int, "grid downscale per crop layer (default 1)"),
    (
        "--min-mask-region-area",
        int,
        "remove islands and fill holes smaller than this, pixels (default 0: off)",
    ),
)


def _add_everything_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "everything",
        help="segment everything in images or folders (automatic masks)",
        description="Automatic masks for every image given (files and/or folders): per image <name>.json"
        " (SA-1B/COCO-style annotations with RLE masks) and <name>_overlay.png in -o DIR, plus"
        " summary.json. Images whose JSON exists are skipped (resume) unless --overwrite; unreadable"
        " images are reported and skipped. Exit status 1 if any image failed.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders of images")
    add_model_args(p)
    add_backend_args(p)
    p.add_argument(
        "-o", "--output", default="litesam_everything", help="output folder (default litesam_everything)"
    )
    p.add_argument(
        "-r", "--recursive", action="store_true", help="also take images in subfolders of a folder"
    )
    for option, kind, text in _GENERATOR_KNOBS:
        p.add_argument(option, type=kind, default=argparse.SUPPRESS, help=text)
    p.add_argument(
        "--boxes",
        metavar="FILE.json",
        help="box prompts instead of the point grid: a list of [x0,y0,x1,y1], COCO detections with"
        ' "bbox" [x,y,w,h], or an object mapping image names to either',
    )
    p.add_argument(
        "--output-mode",
        choices=("coco_rle", "uncompressed_rle"),
        default="coco_rle",
        help="RLE form of the masks in the JSON (default coco_rle, readable by pycocotools)",
    )
    p.add_argument("--overwrite", action="store_true", help="redo images whose JSON already exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_edges_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "edges",
        help="zero-shot edge detection (SAM paper recipe)",
        description="Edge map of IMAGE: a 16x16 point grid, mask NMS, Sobel on the mask probabilities,"
        " per-pixel max, normalisation to 0-1 and edge thinning. Writes an 8-bit PNG (white edges on"
        " black) and the float map as .npy next to it.",
    )
    p.add_argument("image", help="image file")
    add_model_args(p)
    p.add_argument("-o", "--output", default="edges.png", help="edge PNG to write (default edges.png)")
    p.add_argument("--points-per-side", type=int, default=16, help="grid points per image side (default 16)")
    p.add_argument("--points-per-batch", type=int, default=64, help="prompts decoded at once (default 64)")
    p.add_argument("--nms-thresh", type=float, default=0.7, help="box IoU of mask NMS (default 0.7)")
    p.add_argument(
        "--all-pixels",
        action="store_true",
        help="keep Sobel responses everywhere, not only on each mask's boundary band",
    )
    p.add_argument("--nms-radius", type=int, default=1, help="edge thinning reach, pixels (default 1)")
    p.add_argument(
        "--nms-slack", type=float, default=1.01, help="edge thinning tolerance factor (default 1.01)"
    )
    p.add_argument(
        "--border", type=int, default=5, help="fade edges within this many pixels of the border (default 5)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv``; a :class:`LitesamError` (a problem with what the user gave) is
    printed as one line and gives exit status 2, anything else is a bug and keeps its traceback."""
    args = build_parser().parse_args(argv)
    from .distill.cli import COMMANDS as DISTILL_COMMANDS
    from .evaluation.cli import run as run_eval

    commands = {"segment": _segment, "models": _models, "download": _download, "inspect": _inspect}
    commands.update(everything=_everything, edges=_edges)
    commands.update(DISTILL_COMMANDS, eval=run_eval)
    from .server.cli import run as run_serve

    commands["serve"] = run_serve
    from .bench.cli import run as run_bench
    from .export.cli import run as run_export

    commands.update(export=run_export, bench=run_bench)
    try:
        return commands[args.command](args)
    except LitesamError as e:
        print(f"litesam {args.command}: error: {e}", file=sys.stderr)
        return 2


def _models(args: argparse.Namespace) -> int:
    from .registry import get_spec, list_models

    head = ("name", "input", "source", "description")
    if args.stats:
        head = ("name", "params enc/total (M)", "encoder GFLOPs", *head[1:])
    rows = [head]
    for name in list_models():
        spec = get_spec(name)
        size = spec.transform.image_size
        counts: tuple[str, ...] = ()
        if args.stats:
            stats = spec.stats()
            counts = (
                f"{stats.encoder_params / 1e6:.2f} / {stats.total_params / 1e6:.2f}",
                f"{stats.encoder_flops / 1e9:.1f}",
            )
        rows.append((name, *counts, f"{size}x{size}", spec.source, spec.description))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    if args.stats:
        print("GFLOPs: one image at the input size, multiply-add = 2, matmul/convolution/attention only.")
    return 0


def _model_name(args: argparse.Namespace) -> str:
    """``--model``, else the model a ``--checkpoint`` file holds (said on stderr), else sam_vit_b."""
    if args.model is None:
        if str(args.checkpoint) == "auto":
            args.model = "sam_vit_b"
        else:
            from .checkpoint import read_state_dict
            from .identify import identify

            args.model = identify(read_state_dict(args.checkpoint), str(args.checkpoint)).spec.name
            print(f"litesam: {args.checkpoint} holds model {args.model}", file=sys.stderr)
    return args.model


def _inspect(args: argparse.Namespace) -> int:
    from collections import Counter

    from .checkpoint import is_safetensors, read_state_dict
    from .identify import candidates

    state = read_state_dict(args.checkpoint)
    ranked = candidates(state)
    best = ranked[0]
    dtypes = Counter(str(v.dtype).removeprefix("torch.") for v in state.values())
    params = sum(v.numel() for v in state.values() if v.is_floating_point())
    twins = [m.spec.name for m in ranked[1:] if m.fits and m.sized_from_file == best.sized_from_file]
    if best.fits:
        model = best.spec.name + (f" (same architecture: {', '.join(twins)})" if twins else "")
        model += " - widths read from the file" if best.sized_from_file else ""
    else:
        model = "none fits; closest: " + ", ".join(f"{m.spec.name} ({m.score:.1%})" for m in ranked[:3])
    convert = getattr(best.spec.convert_state_dict, "__name__", "convert_state_dict")
    layout = f"another official layout, converted by {convert}" if best.converted else "the model's own keys"
    print(f"file:       {args.checkpoint} ({'safetensors' if is_safetensors(args.checkpoint) else 'pickle'})")
    print(f"model:      {model}")
    print(f"layout:     {layout}" if best.fits else "layout:     unknown")
    print(f"dtype:      {', '.join(f'{d} ({n} tensors)' for d, n in dtypes.most_common())}")
    print(f"parameters: {params / 1e6:.2f}M in {len(state)} tensors")
    return 0 if best.fits else 1


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
    from .utils.io import atomic_write_json, atomic_write_png, writable_folder
    from .utils.visualize import candidate_panels, overlay

    if not args.point and not args.box:
        raise InputError("give at least one prompt: --point X,Y[,LABEL] and/or --box X0,Y0,X1,Y1")
    if len(args.box) > 1 and args.point:
        raise InputError("several --box prompts cannot be combined with --point (each box is its own object)")
    image = load_image(args.image)
    out = writable_folder(args.output)  # before the slow part: a bad -o fails in a second
    model = build_model(
        _model_name(args), checkpoint=args.checkpoint, device=args.device, precision=args.precision
    )
    predictor = Predictor(model, backend=args.backend)
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

    stem = Path(args.image).stem
    records = []
    for i, (mask, score) in enumerate(zip(masks, scores, strict=True)):
        name = f"{stem}_mask{i}.png"
        atomic_write_png(out / name, Image.fromarray(mask.astype(np.uint8) * 255))
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
    atomic_write_png(out / f"{stem}_overlay.png", picture)
    summary = {
        "image": str(args.image),
        "size_hw": list(image.shape[:2]),
        "model": args.model,
        "checkpoint": str(args.checkpoint),
        "prompts": {"points": points.tolist(), "labels": labels.tolist(), "boxes": boxes.tolist()},
        "multimask": args.multimask,
        "masks": records,
    }
    atomic_write_json(out / f"{stem}.json", summary, indent=2)
    best = max(records, key=lambda r: r["score"])
    print(
        f"{len(records)} mask(s) written to {out}/ (best: {best['file']}, predicted IoU {best['score']:.3f})"
    )
    return 0


def _everything(args: argparse.Namespace) -> int:
    from . import MaskGenerator, build_model
    from .everything import SUMMARY, read_boxes, segment_everything
    from .utils.io import find_images, writable_folder
    from .utils.parallel import join_process_group

    rank, world, device = join_process_group(args.device)  # torchrun: one share of the images per process
    jobs = find_images(args.paths, recursive=args.recursive, exclude=args.output)
    boxes = read_boxes(args.boxes) if args.boxes else None
    knobs = {o.lstrip("-").replace("-", "_") for o, _, _ in _GENERATOR_KNOBS}
    settings = {k: v for k, v in vars(args).items() if k in knobs}
    writable_folder(args.output)  # before the slow part: a bad -o fails in a second
    model = build_model(
        _model_name(args), checkpoint=args.checkpoint, device=device, precision=args.precision
    )
    generator = MaskGenerator(model, output_mode=args.output_mode, backend=args.backend, **settings)
    info = {
        "model": args.model,
        "checkpoint": str(args.checkpoint),
        "boxes": args.boxes,
        "backend": args.backend,
        "settings": settings,
    }
    summary = segment_everything(
        generator, jobs, args.output, boxes=boxes, overwrite=args.overwrite, info=info,
        progress=not args.no_progress and rank == 0, rank=rank, world_size=world,
    )  # fmt: skip
    if rank > 0:
        return 1 if summary["failed"] else 0
    print(
        f"{summary['done']} image(s) segmented ({summary['masks']} masks), {summary['skipped']} already done,"
        f" {summary['done_elsewhere']} done and {summary['in_progress_elsewhere']} in progress by another"
        f" run, {summary['failed']} failed; see {Path(args.output) / SUMMARY}"
    )
    return 1 if summary["failed"] else 0


def _edges(args: argparse.Namespace) -> int:
    from . import build_model
    from .edges import EdgeDetector, edge_image
    from .utils.image import load_image
    from .utils.io import atomic_write, atomic_write_png, writable_folder

    image = load_image(args.image)
    out = Path(args.output)
    if out.is_dir():
        raise OutputError(f"{out} is a folder: -o takes the file name of the edge PNG")
    writable_folder(out.parent)  # before the slow part: a bad -o fails in a second
    model = build_model(
        _model_name(args), checkpoint=args.checkpoint, device=args.device, precision=args.precision
    )
    detector = EdgeDetector(
        model,
        points_per_side=args.points_per_side,
        points_per_batch=args.points_per_batch,
        nms_thresh=args.nms_thresh,
        boundary_only=not args.all_pixels,
        nms_radius=args.nms_radius,
        nms_slack=args.nms_slack,
        border=args.border,
    )
    result = detector.detect(image)
    atomic_write_png(out, edge_image(result.edges))
    atomic_write(out.with_suffix(".npy"), lambda f: np.save(f, result.edges))
    print(
        f"edges of {args.image} written to {out} and {out.with_suffix('.npy')}"
        f" ({result.num_kept} of {result.num_candidates} masks kept after NMS)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
