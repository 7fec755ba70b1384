"""``litesam eval coco|edges|miou|report``: the papers' evaluation protocols and the report over their runs.

Each protocol prints its scores and, with ``--json FILE``, writes its report there (atomically); the
per-image results then also go to ``FILE.log.jsonl``, so rerunning the same command continues where a
killed run stopped. :func:`add_parser` registers ``eval`` on the main parser; :func:`run` handles it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..cli_args import add_model_args
from ..errors import InputError


def _add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--json",
        metavar="FILE",
        help="write the report to FILE; per-image results go to FILE.log.jsonl and a rerun continues",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``eval`` with ``coco``, ``edges``, ``miou`` and ``report``."""
    from ..distill.cli import add_miou_args

    evaluate = sub.add_parser(
        "eval",
        help="evaluate models with the papers' protocols (COCO AP, BSDS edges, mIoU) and report",
        description="Evaluate models with the papers' protocols; `eval report` gathers the JSON results.",
    )
    checks = evaluate.add_subparsers(dest="check", required=True, metavar="CHECK")
    coco = checks.add_parser(
        "coco",
        help="box-prompted instance segmentation AP on COCO (RepViT-SAM / EfficientViT-SAM protocol)",
        description="One box prompt per instance (ground-truth boxes, or --boxes detections), one mask"
        " each, scored by pycocotools (segm): AP, AP50, AP75, APs, APm, APl.",
    )
    add_model_args(coco, model_required=True)
    coco.add_argument("--images", required=True, help="image folder, e.g. val2017/")
    coco.add_argument("--annotations", required=True, help="COCO instances JSON, e.g. instances_val2017.json")
    coco.add_argument("--boxes", help="detector boxes in COCO results format (default: ground-truth boxes)")
    coco.add_argument("--limit", type=int, help="evaluate only the first N images (by id)")
    coco.add_argument("--batch-size", type=int, default=64, help="boxes decoded at once (default 64)")
    _add_output_args(coco)

    edges = checks.add_parser(
        "edges",
        help="zero-shot edges scored on BSDS500 (ODS, OIS, AP, R50)",
        description="Edge maps of `litesam edges` (or --predictions) scored the BSDS way: 99 thresholds,"
        " bipartite matching within 0.0075 of the diagonal, against every human annotation.",
    )
    edges.add_argument("--model", help="model name (see `litesam models`); or give --predictions")
    edges.add_argument("--checkpoint", default="auto", help="checkpoint file (default 'auto')")
    edges.add_argument("--device", default="cpu", help="torch device (default cpu)")
    edges.add_argument("--predictions", help="folder of edge maps <name>.npy / <name>.png instead of a model")
    edges.add_argument("--images", required=True, help="image folder, e.g. BSDS500/data/images/test")
    edges.add_argument(
        "--gt", required=True, help="ground truth folder (.mat or PNG), e.g. .../groundTruth/test"
    )
    _add_output_args(edges)

    miou = checks.add_parser(
        "miou",
        help="teacher-student mask IoU (MobileSAM paper protocol)",
        description="Masks of teacher and student for the same random point prompts (and boxes) on every"
        " image under --images; prints the per-image table and the mean IoU.",
    )
    add_miou_args(miou)
    miou.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="write the report to FILE (resumable, as the other protocols), or print it as JSON without FILE",
    )
    miou.add_argument("--no-progress", action="store_true", help="no progress bar")

    report = checks.add_parser(
        "report",
        help="one Markdown + HTML page with tables and plots from eval (and bench) JSON files",
        description="Tables per protocol, AP vs encoder latency (from `litesam bench` JSON where given,"
        " else the evaluation's own encode time) and BSDS precision-recall curves.",
    )
    report.add_argument("runs", nargs="+", metavar="RUN.json", help="reports of eval coco/edges/miou, bench")
    report.add_argument("-o", "--output", default="report", help="output folder (default report)")


def _log(args: argparse.Namespace, header: dict[str, Any], rank: int = 0) -> Any:
    """The run's result log (None without --json FILE); process ``rank`` > 0 of torchrun writes its own."""
    from .resume import ResultLog, log_path

    if not args.json or args.json == "-":
        return None
    from ..utils.io import writable_folder

    writable_folder(Path(args.json).parent)
    path = log_path(args.json)
    return ResultLog(path.with_name(f"{path.stem}.rank{rank}.jsonl") if rank else path, header)


def _other_logs(log: Any, header: dict[str, Any]) -> dict[str, Any]:
    """Results in the logs of the other processes of earlier many-process runs (read only)."""
    from .resume import ResultLog

    if log is None:
        return {}
    base = log.path.name.split(".rank")[0].removesuffix(".jsonl")
    paths = {log.path.with_name(base + ".jsonl"), *log.path.parent.glob(base + ".rank*.jsonl")} - {log.path}
    known: dict[str, Any] = {}
    for path in sorted(p for p in paths if p.exists()):
        known.update(ResultLog(path, header).results)
    return known


def _finish(args: argparse.Namespace, report: dict[str, Any]) -> int:
    from ..utils.io import atomic_write_json

    metrics = "  ".join(f"{k} {'-' if v is None else f'{v:.4f}'}" for k, v in report["metrics"].items())
    print(f"{report['protocol']} {report.get('model', '')}: {metrics} ({report['images']} images)")
    if args.json:
        atomic_write_json(args.json, report)
        print(f"report written to {args.json}", file=sys.stderr)
    return 0


def _coco(args: argparse.Namespace) -> int:
    from .. import Predictor, build_model
    from ..utils.parallel import join_process_group
    from .coco import evaluate_coco, image_files, load_coco, read_detections

    coco = load_coco(args.annotations)
    detections = read_detections(args.boxes, coco) if args.boxes else None
    image_files(coco, sorted(coco.getImgIds())[: args.limit], args.images)  # before the model: fail fast
    header = {"protocol": "coco", "model": args.model, "checkpoint": str(args.checkpoint),
              "annotations": str(Path(args.annotations).resolve()), "boxes": args.boxes}  # fmt: skip
    rank, world, device = join_process_group(args.device)  # torchrun: every world-th image per process
    log = _log(args, header, rank)
    model = build_model(args.model, checkpoint=args.checkpoint, device=device, precision=args.precision)
    report = evaluate_coco(
        Predictor(model), coco, args.images, detections, limit=args.limit, log=log,
        batch_size=args.batch_size, progress=not args.no_progress and rank == 0,
        known=_other_logs(log, header), rank=rank, world_size=world,
    )  # fmt: skip
    return _finish(args, {**header, **report}) if rank == 0 else 0


def _edges(args: argparse.Namespace) -> int:
    from .edges import evaluate_edges, saved_edge_maps

    if (args.model is None) == (args.predictions is None):
        raise InputError("give either --model NAME or --predictions FOLDER")
    header = {"protocol": "edges", "model": args.model, "predictions": args.predictions,
              "checkpoint": str(args.checkpoint) if args.model else None,
              "gt": str(Path(args.gt).resolve())}  # fmt: skip
    log = _log(args, header)
    if args.predictions:
        source = saved_edge_maps(args.predictions)
    else:
        from .. import EdgeDetector, build_model

        detector = EdgeDetector(build_model(args.model, checkpoint=args.checkpoint, device=args.device))

        def source(path: Path) -> Any:
            return detector.detect(path).edges

    report = evaluate_edges(source, args.images, args.gt, log=log, progress=not args.no_progress)
    return _finish(args, {**header, **report})


def _miou(args: argparse.Namespace) -> int:
    from ..distill.cli import miou_report

    header = {"protocol": "miou", "teacher": args.teacher, "student": args.student,
              "num_points": args.num_points, "boxes": not args.no_boxes, "seed": args.seed}  # fmt: skip
    report = miou_report(args, _log(args, header), progress=not args.no_progress)
    if args.json == "-":
        print(json.dumps(report.to_dict(), indent=1))
        return 0
    print(report.table())
    print(f"mIoU {report.miou:.4f} over {len(report.images)} image(s)", file=sys.stderr)
    if args.json:
        from ..utils.io import atomic_write_json

        data = report.to_dict()
        metrics = {k: data.pop(k) for k in ("miou", "point_miou", "box_miou")}
        atomic_write_json(args.json, {**header, "model": args.student, "images": len(report.images),
                                      "metrics": metrics, "per_image": data["images"]})  # fmt: skip
        print(f"report written to {args.json}", file=sys.stderr)
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    page = write_report(args.runs, args.output)
    print(f"report written to {page} and {page.with_suffix('.html')}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Handle ``litesam eval CHECK``; returns the exit status."""
    return {"coco": _coco, "edges": _edges, "miou": _miou, "report": _report}[args.check](args)
