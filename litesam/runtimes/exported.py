"""A backend over exported graphs: the model's encoder and its prompt decoders (one per prompt kind,
exported on first use), run by an :class:`Engine` (ONNX Runtime or OpenVINO) on the CPU."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..errors import InputError
from ..export.graphs import PromptKind, check_exportable
from ..export.onnx import META, encoder_meta, export_encoder, export_prompt_decoder, read_meta
from ..modeling.sam import Features, PromptableModel
from ..prompts import Prompts
from ..utils.io import atomic_write_json
from .cache import cached_file, model_folder

Runner = Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]  # named inputs -> outputs in graph order


class Engine(Protocol):
    """Loads an exported ONNX file for running: ``role`` is ``"encoder"`` (where a precision such as
    int8 applies) or ``"decoder"``. ``precision``: what it runs in (bf16 asked of a CPU without bf16
    runs fp32)."""

    name: str
    precision: str
    errors: tuple[type[Exception], ...]  # what a run that the runtime refuses raises

    def load(self, onnx_file: Path, role: str) -> Runner: ...


class ExportedBackend:
    """``encode`` / ``decode`` of ``model`` (the :class:`~litesam.modeling.sam.PromptableModel` calls)
    through its exported graphs, cached per model (:func:`~litesam.runtimes.cache.model_folder`).

    Outputs are CPU tensors; the torch model itself is used only to export. Safe to call from several
    threads.
    """

    device = torch.device("cpu")

    def __init__(self, model: PromptableModel, engine: Engine) -> None:
        check_exportable(model)
        self.model = model
        self.engine = engine
        self.folder = model_folder(model)
        cached_file(self.folder / META, self._export_encoder)
        self.features = read_meta(self.folder)["features"]
        self.encoder = engine.load(self.folder / "encoder.onnx", "encoder")
        self._decoders: dict[PromptKind, Runner] = {}
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.engine.name

    @property
    def precision(self) -> str:
        return self.engine.precision

    def _export_encoder(self) -> None:
        names, shapes = export_encoder(self.model, self.folder / "encoder.onnx")
        atomic_write_json(self.folder / META, encoder_meta(self.model, names, shapes), indent=2)

    def decoder_file(self, kind: PromptKind) -> Path:
        """The ONNX prompt decoder for ``kind``, exported on first use."""
        path = self.folder / f"decode-{kind.name}.onnx"
        return cached_file(path, lambda: export_prompt_decoder(self.model, path, self.features, kind))

    def _decoder(self, kind: PromptKind) -> Runner:
        with self._lock:
            if kind not in self._decoders:
                fresh = not (self.folder / f"decode-{kind.name}.onnx").exists()
                path = self.decoder_file(kind)
                runner = self.engine.load(path, "decoder")
                if fresh:
                    self._check_dynamic(kind, runner, path)
                self._decoders[kind] = runner
            return self._decoders[kind]

    def _check_dynamic(self, kind: PromptKind, runner: Runner, path: Path) -> None:
        """A new decoder graph against the model at other prompt counts than it was traced with (a
        shape that the model's code turned into a Python number would be frozen in the graph): the file
        is removed and an InputError raised if it does not match."""
        side = 4 * self.features["image_embeddings"][-1]
        features = {name: torch.randn(*shape) for name, shape in self.features.items()}
        inputs = kind.example(batch=3, points=1, mask_side=side)
        device = self.model.device
        with torch.inference_mode():
            on_device = {name: t.to(device) for name, t in features.items()}
            want, _ = self.model.decode(on_device, kind.prompts(inputs).to(device), kind.multimask_output)
        feeds = {name: t.numpy() for name, t in features.items()}
        feeds.update((name, t.numpy()) for name, t in zip(kind.inputs, inputs, strict=True))
        try:
            got = torch.from_numpy(runner(feeds)[0])
        except self.engine.errors:  # the runtime refuses the shapes: a size frozen in the graph
            got = None
        if got is None or got.shape != want.shape or not self._close(got, want.cpu()):
            path.unlink(missing_ok=True)
            raise InputError(
                f"the exported decoder of {type(self.model).__name__} ({kind.name} prompts) does not take"
                " other numbers of prompts and points than it was traced with: use backend='torch'"
            )

    def _close(self, got: torch.Tensor, want: torch.Tensor) -> bool:
        """Whether ``got`` is ``want`` to float rounding (not checked in bf16, which rounds more)."""
        scale = float(want.abs().max())
        return self.precision == "bf16" or torch.allclose(got, want, atol=1e-3 * scale + 1e-4, rtol=0)

    def encode(self, x: torch.Tensor) -> Features:
        """1x3xSxS encoder input -> the named features (CPU tensors)."""
        outputs = self.encoder({"image": x.detach().cpu().float().numpy()})
        return {name: torch.from_numpy(out) for name, out in zip(self.features, outputs, strict=True)}

    def decode(
        self,
        features: Features,
        prompts: Prompts,
        multimask_output: bool = True,
        min_score: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As the model's ``decode``: features of one image, B prompt sets in the prompt frame ->
        (BxMx256x256 low-res logits, BxM scores). ``min_score`` (a hint) is not used: every mask is
        computed."""
        kind = PromptKind.of(prompts, multimask_output)
        feeds = {name: features[name].detach().cpu().float().numpy() for name in self.features}
        feeds.update(
            (name, t.detach().cpu().numpy())
            for name, t in zip(kind.inputs, kind.tensors(prompts), strict=True)
        )
        low_res, scores = self._decoder(kind)(feeds)
        return torch.from_numpy(low_res), torch.from_numpy(scores)
