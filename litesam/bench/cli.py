"""``litesam bench``: time a model's encoder, one prompt decode and segment-everything, on each backend
and precision, optionally side by side with its peers."""

from __future__ import annotations

import argparse

from ..cli_args import add_model_args


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    from ..runtimes import BACKENDS

    p = sub.add_parser(
        "bench",
        help="time the encoder, a prompt decode and segment-everything (backends, precisions, peers)",
        description="Time MODEL's encoder (1x3xSxS input), one point decode and segment-everything:"
        " warm-up, repeated runs, median and min/max, GFLOP/s and share of the measured matmul peak,"
        " peak RSS. --peers adds, in the same run on the same weights, the official PyTorch code where"
        " installed, ONNX Runtime and OpenVINO, with ratios to the fastest peer per precision class.",
    )
    add_model_args(p, model_required=True, checkpoint_default=None, precision=False)  # several: below
    p.add_argument("--backend", nargs="+", choices=BACKENDS, default=["torch"], help="default torch")
    p.add_argument("--precision", nargs="+", choices=("fp32", "bf16", "int8"), default=["fp32"],
                   help="default fp32; int8 also adds ONNX Runtime int8 to --peers")  # fmt: skip
    p.add_argument("--threads", type=int, help="torch / ONNX Runtime / OpenVINO threads (default: torch's)")
    p.add_argument("--peers", action="store_true", help="also time the official code, ONNX Runtime, OpenVINO")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per task (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    p.add_argument("--points-per-side", type=int, default=16, help="segment-everything grid (default 16)")
    p.add_argument("--no-everything", action="store_true", help="skip segment-everything")
    p.add_argument("--matmul-size", type=int, default=4096, help="side of the peak matmul (default 4096)")
    p.add_argument("--json", metavar="FILE", help="also write the record as JSON")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..errors import InputError
    from ..utils.io import atomic_write_json
    from .report import format_table
    from .run import benchmark

    for option in ("repeat", "points_per_side", "matmul_size", "threads"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise InputError(f"--{option.replace('_', '-')} must be at least 1, got {value}")
    if args.warmup < 0:
        raise InputError(f"--warmup must be 0 or more, got {args.warmup}")
    if args.device != "cpu":
        raise InputError("litesam bench times the CPU: --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    record = benchmark(
        args.model,
        args.checkpoint,
        backends=args.backend,
        precisions=args.precision,
        peers=args.peers,
        repeat=args.repeat,
        warmup=args.warmup,
        points_per_side=args.points_per_side,
        everything=not args.no_everything,
        peak_size=args.matmul_size,
    )
    print(format_table(record))
    if args.json:
        atomic_write_json(args.json, record, indent=1)
        print(f"record written to {args.json}")
    return 0
