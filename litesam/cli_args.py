"""Command-line options shared by the ``litesam`` commands (segment, everything, edges, eval)."""

from __future__ import annotations

import argparse

from .precision import PRECISIONS


def add_model_args(p: argparse.ArgumentParser, model_required: bool = False) -> None:
    """``--model``, ``--checkpoint`` (default ``auto``) and ``--device`` (default cpu)."""
    p.add_argument(
        "--model",
        required=model_required,
        help="model name (see `litesam models`)"
        + ("" if model_required else "; default: the model of a --checkpoint file, else sam_vit_b"),
    )
    p.add_argument(
        "--checkpoint",
        default="auto",
        help="checkpoint file; 'auto' (default) uses the cached official file, downloading it if needed",
    )
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, mps; default cpu)")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="fp32 (exact, default), bf16 (bfloat16 autocast: fast with AMX/AVX512-BF16 or CUDA) or auto",
    )
