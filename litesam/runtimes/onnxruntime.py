"""ONNX Runtime (CPU) engine: fp32, or the encoder's weights dynamically quantised to int8."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..export.deps import require
from ..export.onnx import quantize_dynamic_int8
from .cache import cached_file
from .exported import Runner

PRECISIONS = ("fp32", "int8")


class OnnxRuntimeEngine:
    """Sessions with ``torch.get_num_threads()`` intra-op threads on the CPU execution provider."""

    name = "onnxruntime"

    def __init__(self, precision: str = "fp32") -> None:
        if precision not in PRECISIONS:
            raise InputError(f"onnxruntime runs precision {' or '.join(PRECISIONS)}, not {precision!r}")
        self.ort = require("onnxruntime", "onnx")
        self.precision = precision
        failures = self.ort.capi.onnxruntime_pybind11_state
        self.errors = (failures.Fail, failures.InvalidArgument, failures.RuntimeException)

    def load(self, onnx_file: Path, role: str) -> Runner:
        if role == "encoder" and self.precision == "int8":
            onnx_file = self._int8(onnx_file)
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 4  # failures reach the caller as exceptions, not as log lines too
        session = self.ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])

        def run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
            return session.run(None, dict(feeds))

        return run

    @staticmethod
    def _int8(onnx_file: Path) -> Path:
        path = onnx_file.with_suffix(".int8.onnx")
        return cached_file(path, lambda: quantize_dynamic_int8(onnx_file, path))
