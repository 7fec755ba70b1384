"""Command-line options shared by the ``litesam`` commands (segment, everything, edges, eval, export,
bench)."""

from __future__ import annotations

import argparse

from .precision import PRECISIONS


def add_model_args(
    p: argparse.ArgumentParser,
    model_required: bool = False,
    checkpoint_default: str | None = "auto",
    precision: bool = True,
) -> None:
    """``--model``, ``--checkpoint`` (default ``auto``; None: random weights), ``--device`` (default
    cpu) and, with ``precision``, ``--precision`` (default fp32)."""
    p.add_argument(
        "--model",
        required=model_required,
        help="model name (see `litesam models`)"
        + ("" if model_required else "; default: the model of a --checkpoint file, else sam_vit_b"),
    )
    official = "'auto' uses the cached official file, downloading it if needed"
    p.add_argument(
        "--checkpoint",
        default=checkpoint_default,
        help=f"checkpoint file; {official}"
        + (" (default)" if checkpoint_default == "auto" else "; default: random weights"),
    )
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, mps; default cpu)")
    if precision:
        p.add_argument(
            "--precision",
            default="fp32",
            choices=PRECISIONS,
            help="fp32 (exact, default), bf16 (bfloat16 autocast: fast with AMX/AVX512-BF16 or CUDA) or auto",
        )


def add_backend_args(p: argparse.ArgumentParser) -> None:
    """``--backend`` (default torch): what runs the model (see :func:`litesam.runtimes.open_backend`)."""
    from .runtimes import CHOICES

    p.add_argument(
        "--backend",
        choices=CHOICES,
        default="torch",
        help="what runs the model: torch (default), or onnxruntime / openvino on its exported graphs"
        " (exported once, cached under $LITESAM_HOME/runtimes; extras litesam[onnx] / litesam[openvino]),"
        " or auto: the fastest of them here whose masks agree with torch's (measured once)",
    )
