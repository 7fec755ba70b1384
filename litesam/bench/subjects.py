"""What ``litesam bench`` times: one :class:`Subject` per setting (litesam on a backend and precision, or
a peer: the official PyTorch code, ONNX Runtime, OpenVINO), each with the same three tasks on the same
weights: the encoder on a 1x3xSxS input, one point prompt decode, and segment-everything."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..automatic_mask_generator import MaskGenerator
from ..build import build_model
from ..errors import MissingDependency
from ..predictor import Predictor
from ..prompts import Prompts
from ..registry import get_spec


class Skip(Exception):
    """A setting that cannot run here (a missing package, a precision a backend has not): the reason."""


@dataclass
class Subject:
    """One setting, ready to time: ``encode()`` (the encoder on one input), ``decode()`` (one point,
    multimask) and ``everything()`` (segment-everything on the bench image)."""

    label: str
    group: str  # "litesam" or "peer"
    backend: str
    precision: str  # the precision class asked for: fp32, bf16, int8
    ran: str  # the precision it runs in (a bf16 hint on a CPU without bf16 runs fp32)
    encode: Callable[[], Any]
    decode: Callable[[], Any]
    everything: Callable[[], Any]


def bench_image(h: int = 768, w: int = 1024, seed: int = 0) -> np.ndarray:
    """An HxWx3 uint8 picture with objects to segment: noise, a gradient, rectangles and discs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = (rng.normal(0, 12, (h, w, 3)) + 60 + 80 * (xx / w)[..., None]).clip(0, 255)
    for _ in range(12):
        color = rng.integers(0, 256, 3)
        cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(h // 20, h // 6)
        if rng.random() < 0.5:
            img[max(cy - r, 0) : cy + r, max(cx - r, 0) : cx + r] = color
        else:
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < r**2] = color
    return img.astype(np.uint8)


class Models:
    """The benchmarked model, built once per precision on the same weights: the checkpoint's, or random
    weights drawn from one seed."""

    def __init__(self, name: str, checkpoint: str | None, device: str = "cpu") -> None:
        self.name, self.checkpoint, self.device = name, checkpoint, device
        self._built: dict[str, Any] = {}

    def get(self, precision: str = "fp32", fuse: bool = True) -> Any:
        key = f"{precision}-{fuse}"
        if key not in self._built:
            options: dict[str, Any] = {}
            if precision != "fp32":
                if "precision" not in inspect.signature(build_model).parameters:
                    raise Skip(f"build_model has no precision option for {precision} torch")
                options["precision"] = precision
            torch.manual_seed(0)
            self._built[key] = build_model(self.name, checkpoint=self.checkpoint, device=self.device,
                                           fuse=fuse, **options)  # fmt: skip
        return self._built[key]


def _tasks(predictor: Predictor, generator: Any, image: np.ndarray) -> tuple[Callable, Callable, Callable]:
    transform = predictor.model.transform
    x = transform.to_input(image, predictor.device)
    state = predictor.encode(image)
    prompt = Prompts.single([[image.shape[1] / 2, image.shape[0] / 2]], [1])

    def encode() -> Any:
        with torch.inference_mode():
            return predictor.backend.encode(x)

    return encode, lambda: predictor.decode(state, prompt, True), lambda: generator.generate(image)


def litesam_subject(
    models: Models, backend: str, precision: str, image: np.ndarray, points_per_side: int, group: str
) -> Subject:
    """litesam's Predictor / MaskGenerator on ``backend`` in ``precision``."""
    if backend == "torch" and precision == "int8":
        raise Skip("no int8 torch path")
    model = models.get(precision if backend == "torch" else "fp32")
    try:
        predictor = Predictor(model, backend, None if backend == "torch" else precision)
    except MissingDependency as e:
        raise Skip(str(e)) from e
    except ValueError as e:  # a precision the backend does not run (InputError)
        raise Skip(str(e)) from e
    generator = MaskGenerator(model, points_per_side=points_per_side, backend=predictor.backend)
    ran = getattr(predictor.backend, "precision", precision)
    label = f"litesam {backend} {precision}" if group == "litesam" else f"{backend} {precision}"
    return Subject(label, group, backend, precision, ran, *_tasks(predictor, generator, image))


def official_subject(models: Models, image: np.ndarray, points_per_side: int) -> Subject:
    """The official PyTorch implementation (``ModelSpec.official``) on the same weights, fp32."""
    spec = get_spec(models.name)
    if spec.official is None:
        raise Skip(f"no official implementation registered for {spec.name}")
    package_name, builder = spec.official.split(":")
    try:
        package = importlib.import_module(package_name)
    except ImportError as e:
        raise Skip(f"{package_name} not importable ({e})") from e
    sam = getattr(package, builder)()
    sam.load_state_dict(models.get("fp32", fuse=False).state_dict(), strict=True)
    sam.eval()
    predictor = package.SamPredictor(sam)
    predictor.set_image(image)
    generator = package.SamAutomaticMaskGenerator(sam, points_per_side=points_per_side)
    x = models.get("fp32").transform.to_input(image)
    point, label = np.array([[image.shape[1] / 2, image.shape[0] / 2]]), np.array([1])

    def encode() -> Any:
        with torch.no_grad():
            return sam.image_encoder(x)

    return Subject(
        f"official {package_name} fp32", "peer", "official", "fp32", "fp32", encode,
        lambda: predictor.predict(point_coords=point, point_labels=label, multimask_output=True),
        lambda: generator.generate(image),
    )  # fmt: skip
