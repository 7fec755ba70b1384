"""Backends: what runs a model's ``encode`` / ``decode`` for the :class:`~litesam.Predictor` and the
:class:`~litesam.MaskGenerator`.

``"torch"`` is the model itself. ``"onnxruntime"`` and ``"openvino"`` run its exported graphs on the CPU
(:class:`~litesam.runtimes.exported.ExportedBackend`; files exported once and cached under
``$LITESAM_HOME/runtimes``); they need the ``onnx`` / ``openvino`` extras.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from ..errors import InputError
from ..modeling.sam import Features, PromptableModel
from ..prompts import Prompts

BACKENDS = ("torch", "onnxruntime", "openvino")
CHOICES = (*BACKENDS, "auto")  # what a user may ask for: "auto" measures and picks one of BACKENDS


@runtime_checkable
class Backend(Protocol):
    """The encode/decode half of :class:`~litesam.modeling.sam.PromptableModel` (a model is one)."""

    @property
    def device(self) -> torch.device: ...

    def encode(self, x: torch.Tensor) -> Features: ...

    def decode(
        self,
        features: Features,
        prompts: Prompts,
        multimask_output: bool = True,
        min_score: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def open_backend(
    model: PromptableModel, backend: str | Backend = "torch", precision: str | None = None
) -> Backend:
    """The backend named ``backend`` for ``model`` (a :class:`Backend` object is returned as it is).

    ``precision`` (exported backends only; default: the model's own, ``build_model(precision=...)``,
    where the backend has it, else fp32): onnxruntime ``"fp32"`` or ``"int8"`` (encoder weights
    dynamically quantised); openvino ``"fp32"``, ``"bf16"`` (inference hint) or ``"int8"`` (NNCF). The
    torch backend runs the model in the precision it was built with. ``"auto"``: the fastest of these
    on this machine whose masks agree with the torch model's, measured once and remembered
    (:func:`litesam.runtimes.auto.choose_backend`).
    """
    if not isinstance(backend, str):
        return backend
    if backend == "auto":
        if precision is not None:
            raise InputError("backend='auto' chooses the precision too: give one or the other")
        from .auto import choose_backend

        choice = choose_backend(model)
        return open_backend(model, choice.backend, choice.precision)
    if backend == "torch":
        if precision is not None:
            raise InputError(
                f"the torch backend runs the model as built: precision {precision!r} is a build_model option"
            )
        return model
    built = getattr(model, "precision", "fp32")
    if backend == "onnxruntime":
        from .exported import ExportedBackend
        from .onnxruntime import PRECISIONS, OnnxRuntimeEngine

        return ExportedBackend(
            model, OnnxRuntimeEngine(precision or (built if built in PRECISIONS else "fp32"))
        )
    if backend == "openvino":
        from .exported import ExportedBackend
        from .openvino import OpenVinoEngine

        return ExportedBackend(model, OpenVinoEngine(precision or built))
    raise InputError(f"unknown backend {backend!r}: choose one of {', '.join(CHOICES)}")
