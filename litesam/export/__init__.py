"""Export to ONNX (the official SAM ONNX decoder interface) and OpenVINO IR, and the cache of exported
files that the ONNX Runtime / OpenVINO backends run (:mod:`litesam.runtimes`)."""

from .onnx import export_onnx, read_meta
from .openvino import export_openvino

__all__ = ["export_onnx", "export_openvino", "read_meta"]
