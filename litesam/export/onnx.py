"""ONNX export: ``encoder.onnx``, ``decoder.onnx`` (the official SAM ONNX decoder interface) and, for the
backends, one prompt decoder per :class:`~litesam.export.graphs.PromptKind`; optional dynamic int8
quantisation of the encoder.

Graphs are traced with torch's TorchScript exporter (as the official ``export_onnx_model.py``), from the
mask decoders' reference paths, and checked with ``onnx.checker``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..build import reference_paths
from ..errors import InputError
from ..modeling.sam import PromptableModel
from ..utils.io import atomic_path, atomic_write_json
from .deps import require
from .graphs import (
    OFFICIAL_INPUTS,
    OFFICIAL_OUTPUTS,
    EncoderGraph,
    OfficialDecoderGraph,
    PromptDecoderGraph,
    PromptKind,
    check_exportable,
)

OPSET = 17
META = "export.json"  # feature names and shapes, transform: what the backends need to run the files
QUANTIZATIONS = ("int8",)


def export_onnx(
    model: PromptableModel,
    out_dir: str | os.PathLike,
    return_single_mask: bool = False,
    quantize: str | None = None,
    check: bool = True,
) -> dict[str, Path]:
    """Write ``encoder.onnx`` (``image`` 1x3xSxS in the model's transform frame -> its named features,
    e.g. ``image_embeddings`` 1x256x64x64 and SAM-HQ's ``interm_embeddings``), ``decoder.onnx`` (the
    official SAM ONNX interface: see :class:`~litesam.export.graphs.OfficialDecoderGraph`; models whose
    prompt encoder is not SAM's have none) and ``export.json`` into ``out_dir``.

    ``return_single_mask``: the decoder returns one mask per call (the official export option);
    ``quantize="int8"``: also ``encoder.int8.onnx``, dynamically quantised weights (onnxruntime).
    Returns the written files by role (``encoder``, ``decoder``, ``encoder_int8``, ``meta``).
    """
    check_exportable(model)
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise InputError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantize!r}")
    if quantize is not None:
        require("onnxruntime", "onnx")  # before the slow part
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names, shapes = export_encoder(model, out / "encoder.onnx")
    files = {"encoder": out / "encoder.onnx"}
    meta = {**encoder_meta(model, names, shapes), "return_single_mask": return_single_mask}
    if callable(getattr(model, "decode_onnx", None)):
        export_official_decoder(model, out / "decoder.onnx", meta["features"], return_single_mask)
        files["decoder"] = out / "decoder.onnx"
    if quantize == "int8":
        files["encoder_int8"] = quantize_dynamic_int8(out / "encoder.onnx", out / "encoder.int8.onnx")
    files["meta"] = atomic_write_json(out / META, meta, indent=2)
    if check:
        for role, path in files.items():
            if role != "meta":
                check_onnx(path)
    return files


def encoder_meta(model: PromptableModel, names: list[str], shapes: list[list[int]]) -> dict[str, Any]:
    """What ``export.json`` says of an encoder: the model class, features (name -> shape), transform."""
    return {
        "model": type(model).__name__,
        "features": dict(zip(names, shapes, strict=True)),
        "transform": dataclasses.asdict(model.transform),
        "opset": OPSET,
    }


def read_meta(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``export.json`` of an exported folder."""
    return json.loads((Path(folder) / META).read_text())


def _export(module: nn.Module, args: tuple, path: Path, inputs: Sequence[str], outputs: Sequence[str],
            dynamic_axes: dict[str, dict[int, str]] | None = None) -> None:  # fmt: skip
    with warnings.catch_warnings(), torch.no_grad(), reference_paths(module), atomic_path(path) as tmp:
        warnings.simplefilter("ignore")  # tracer and deprecation warnings
        torch.onnx.export(
            module.eval(),
            args,
            str(tmp),
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def export_encoder(model: PromptableModel, path: Path) -> tuple[list[str], list[list[int]]]:
    """Write the encoder graph to ``path`` (atomically); returns its feature names and shapes."""
    graph = EncoderGraph(model)
    size = model.transform.image_size
    x = torch.zeros(1, 3, size, size, device=model.device)
    with torch.no_grad():
        shapes = [list(t.shape) for t in graph(x)]
    _export(graph, (x,), path, ["image"], graph.names)
    return graph.names, shapes


def _features(model: PromptableModel, features: dict[str, list[int]]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.randn(*shape, device=model.device) for shape in features.values())


def export_official_decoder(
    model: PromptableModel, path: Path, features: dict[str, list[int]], return_single_mask: bool
) -> None:
    """Write the official-interface decoder (dynamic number of points) to ``path``."""
    graph = OfficialDecoderGraph(model, list(features), return_single_mask)
    side = 4 * features["image_embeddings"][-1]
    dev = model.device
    prompts = (
        torch.randint(0, model.transform.frame_size, (1, 5, 2), device=dev).float(),
        torch.randint(-1, 4, (1, 5), device=dev).float(),
        torch.randn(1, 1, side, side, device=dev),
        torch.tensor([1.0], device=dev),
        torch.tensor([1500.0, 2250.0], device=dev),
    )
    axes = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}
    _export(graph, (*_features(model, features), *prompts), path, [*features, *OFFICIAL_INPUTS],
            OFFICIAL_OUTPUTS, axes)  # fmt: skip


def export_prompt_decoder(
    model: PromptableModel, path: Path, features: dict[str, list[int]], kind: PromptKind
) -> None:
    """Write ``model.decode`` for prompts of one ``kind`` (any number of prompts and points) to ``path``."""
    graph = PromptDecoderGraph(model, list(features), kind)
    side = 4 * features["image_embeddings"][-1]
    prompts = [t.to(model.device) for t in kind.example(mask_side=side)]
    axes: dict[str, dict[int, str]] = {n: {0: "prompts"} for n in kind.inputs}
    for name in ("point_coords", "point_labels"):
        if name in axes:
            axes[name][1] = "points"
    axes.update(low_res_masks={0: "prompts"}, scores={0: "prompts"})
    _export(graph, (*_features(model, features), *prompts), path, [*features, *kind.inputs],
            ["low_res_masks", "scores"], axes)  # fmt: skip


def quantize_dynamic_int8(src: Path, dst: Path) -> Path:
    """``src`` with dynamically quantised uint8 weights (activations quantised at run time), as the
    official script quantises its decoder, written to ``dst``. onnxruntime's pre-processing runs first
    (shape inference, graph optimisation: e.g. weights that the exporter shared between identical
    tensors become initializers again)."""
    require("onnxruntime", "onnx")
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = dst.with_name(f".{dst.stem}.{os.getpid()}.pre.onnx")
    try:
        with _quiet_quantization(), atomic_path(dst) as tmp:
            quant_pre_process(src, prepared, skip_symbolic_shape=True)
            quantize_dynamic(
                prepared, tmp, per_channel=False, reduce_range=False, weight_type=QuantType.QUInt8
            )
    finally:
        prepared.unlink(missing_ok=True)
    return dst


@contextmanager
def _quiet_quantization() -> Iterator[None]:
    """Silence onnxruntime.quantization's advice on the root logger while it runs."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def check_onnx(path: Path) -> None:
    """``onnx.checker`` on the file at ``path`` (by path, so models over 2 GB with external data work)."""
    require("onnx", "onnx")
    import onnx

    onnx.checker.check_model(str(path), full_check=True)
