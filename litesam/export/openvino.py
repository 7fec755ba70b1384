"""OpenVINO IR: the ONNX graphs read by OpenVINO's ONNX frontend and saved as IR (fp32 weights kept);
int8 weights through NNCF's data-free weight compression when ``nncf`` is installed. bf16 is not a file
format but an inference hint (``INFERENCE_PRECISION_HINT``) applied when the IR is compiled."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import ModuleType

from ..errors import InputError
from ..modeling.sam import PromptableModel
from ..utils.io import atomic_path, atomic_write_json
from .deps import require
from .onnx import META, export_onnx, read_meta

PRECISIONS = ("fp32", "bf16", "int8")
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # INFERENCE_PRECISION_HINT per precision


def onnx_to_ir(src: Path, dst: Path, int8: bool = False) -> Path:
    """Convert the ONNX file ``src`` to IR ``dst`` (.xml, with its .bin; the .xml is written last, so
    its presence means a complete pair); ``int8``: weights compressed to int8 by NNCF."""
    ov = require("openvino", "openvino")
    model = ov.Core().read_model(str(src))  # the ONNX frontend: what convert_model runs, without its setup
    if int8:
        model = require_nncf().compress_weights(model)
    with atomic_path(dst) as xml, atomic_path(dst.with_suffix(".bin")):
        ov.save_model(model, str(xml), compress_to_fp16=False)  # and its .bin next to it
    return dst


def require_nncf() -> ModuleType:
    """NNCF, or MissingDependency: OpenVINO int8 needs it."""
    return require("nncf", "openvino-int8")


def export_openvino(
    model: PromptableModel,
    out_dir: str | os.PathLike,
    precision: str = "fp32",
    return_single_mask: bool = False,
) -> dict[str, Path]:
    """Write ``encoder.xml``/``.bin`` and ``decoder.xml``/``.bin`` (the official SAM ONNX decoder
    interface, see :func:`~litesam.export.export_onnx`) and ``export.json`` into ``out_dir``.

    ``precision``: ``"fp32"``; ``"bf16"`` (same IR, ``export.json`` records the bf16 inference hint the
    backend compiles it with); ``"int8"`` (encoder weights compressed to int8 with NNCF, which must be
    installed). Returns the written files by role.
    """
    if precision not in PRECISIONS:
        raise InputError(f"OpenVINO precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    require("openvino", "openvino")
    if precision == "int8":
        require_nncf()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".onnx-") as tmp:
        onnx_files = export_onnx(model, tmp, return_single_mask=return_single_mask)
        meta = read_meta(tmp)
        files = {
            role: onnx_to_ir(path, out / f"{role}.xml", int8=precision == "int8" and role == "encoder")
            for role, path in onnx_files.items()
            if role != "meta"
        }
    meta.update(format="openvino", precision=precision, inference_precision_hint=HINTS[precision])
    files["meta"] = atomic_write_json(out / META, meta, indent=2)
    return files
