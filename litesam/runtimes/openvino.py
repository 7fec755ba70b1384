"""OpenVINO (CPU) engine: the ONNX graphs converted to IR once (``openvino/`` in the cache folder) and
compiled with an fp32 or bf16 inference precision hint; int8 encoder weights through NNCF."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..export.deps import require
from ..export.openvino import HINTS, PRECISIONS, onnx_to_ir, require_nncf
from .cache import cached_file
from .exported import Runner


class OpenVinoEngine:
    """Compiled models with ``torch.get_num_threads()`` threads; ``precision`` is what the CPU runs
    (a bf16 hint on a CPU without bf16 runs f32, and says so)."""

    name = "openvino"

    def __init__(self, precision: str = "fp32") -> None:
        if precision not in PRECISIONS:
            raise InputError(f"openvino runs precision {', '.join(PRECISIONS)}, not {precision!r}")
        self.ov = require("openvino", "openvino")
        if precision == "int8":
            require_nncf()
        self.core = self.ov.Core()
        self.requested = precision
        self.config = {
            "INFERENCE_PRECISION_HINT": HINTS[precision],
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),
        }
        self.precision = precision
        self.errors = (RuntimeError,)

    def load(self, onnx_file: Path, role: str) -> Runner:
        int8 = role == "encoder" and self.requested == "int8"
        ir = onnx_file.parent / "openvino" / f"{onnx_file.stem}{'.int8' if int8 else ''}.xml"
        cached_file(ir, lambda: onnx_to_ir(onnx_file, ir, int8=int8))
        compiled = self.core.compile_model(str(ir), "CPU", self.config)
        if (
            self.requested == "bf16"
            and compiled.get_property("INFERENCE_PRECISION_HINT") != self.ov.Type.bf16
        ):
            self.precision = "fp32"  # the CPU has no bf16: OpenVINO runs f32
        request = compiled.create_infer_request()
        outputs = compiled.outputs
        lock = threading.Lock()  # one infer request: one call at a time

        def run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
            with lock:
                result = request.infer(dict(feeds))
                return [np.array(result[o]) for o in outputs]

        return run
