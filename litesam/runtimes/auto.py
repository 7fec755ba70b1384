"""``backend="auto"``: the fastest setting on this machine whose masks agree with the model's own.

The first time a model (its export identity: classes, code and weights) is opened with
``backend="auto"`` on a machine, every setting that can run here is measured on a probe image: the
torch model as built, ONNX Runtime fp32 / int8 and OpenVINO fp32 / bf16 (where the CPU has bf16) /
int8 (where NNCF is installed). Each is timed as an image and a few clicks (``encode + CLICKS x
decode``, medians) and its masks are compared with the torch model's (the lowest IoU of thresholded
low-res masks over a grid of point prompts). The fastest whose lowest IoU is at least ``agreement``
wins; torch always qualifies. The measurement is stored in ``auto.json`` in the model's runtimes cache
folder, per machine (CPU, threads, package versions), so later runs open the chosen backend at once.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import LitesamError
from ..modeling.sam import PromptableModel
from ..precision import bf16_is_fast
from ..prompts import Prompts
from ..utils.amg import mask_iou
from ..utils.io import atomic_write_json
from .cache import model_folder

AGREEMENT = 0.98  # lowest IoU of a setting's masks with the torch model's for it to be chosen
CLICKS = 8  # a setting's time: encoding one image plus this many one-point decodes
log = logging.getLogger("litesam.runtimes")


@dataclass(frozen=True)
class Measured:
    """One setting on the probe: seconds per encode and per decode (medians), the lowest mask IoU
    against the torch model, or why it could not run."""

    backend: str
    precision: str | None  # None: the torch model as built
    encode_s: float | None = None
    decode_s: float | None = None
    lowest_iou: float | None = None
    skipped: str | None = None

    @property
    def seconds(self) -> float:
        """Time of one image and CLICKS clicks (inf when skipped)."""
        if self.encode_s is None or self.decode_s is None:
            return float("inf")
        return self.encode_s + CLICKS * self.decode_s


@dataclass(frozen=True)
class Choice:
    """The chosen setting and every measurement behind it."""

    backend: str
    precision: str | None
    measured: tuple[Measured, ...]
    agreement: float


def settings_here() -> list[tuple[str, str | None]]:
    """(backend, precision) pairs that can run on this machine, torch first."""
    out: list[tuple[str, str | None]] = [("torch", None)]
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        out += [("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    if importlib.util.find_spec("openvino") and importlib.util.find_spec("onnx"):
        out.append(("openvino", "fp32"))
        if bf16_is_fast(torch.device("cpu")):
            out.append(("openvino", "bf16"))
        if importlib.util.find_spec("nncf"):
            out.append(("openvino", "int8"))
    return out


def machine_key() -> str:
    """What a measurement depends on besides the model: CPU model, threads, package versions."""
    cpu = "unknown cpu"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)  # fmt: skip
    versions = []
    for package in ("torch", "onnxruntime", "openvino", "nncf"):
        try:
            versions.append(f"{package}={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return f"{cpu} | threads={torch.get_num_threads()} | {' '.join(versions)}"


def probe_prompts(h: int, w: int, side: int = 3) -> Prompts:
    """A side x side grid of single foreground points over an HxW image, one prompt set each."""
    xs, ys = np.meshgrid((np.arange(side) + 0.5) * w / side, (np.arange(side) + 0.5) * h / side)
    points = np.stack([xs.ravel(), ys.ravel()], 1)[:, None]
    return Prompts.batch(point_coords=points, point_labels=np.ones((len(points), 1)))


def measure(
    model: PromptableModel, settings: Sequence[tuple[str, str | None]], repeat: int = 3
) -> list[Measured]:
    """Time and compare each (backend, precision) on the probe image (see the module docstring)."""
    from ..bench.subjects import bench_image
    from ..bench.timing import time_it
    from ..predictor import Predictor

    image = bench_image(480, 640)
    grid = probe_prompts(*image.shape[:2])
    click = grid[:1]
    reference: torch.Tensor | None = None
    out = []
    for backend, precision in settings:
        try:
            predictor = Predictor(model, backend=backend, precision=precision)
            state = predictor.encode(image)
            masks = predictor.decode(state, grid).low_res > model.mask_threshold
        except LitesamError as e:  # a missing package or a graph the runtime refuses
            out.append(Measured(backend, precision, skipped=str(e)))
            continue
        if reference is None:  # the torch model, first
            reference = masks
        iou = mask_iou(masks.flatten(0, 1).numpy(), reference.flatten(0, 1).numpy())
        out.append(
            Measured(
                backend,
                precision,
                encode_s=time_it(lambda p=predictor: p.encode(image), 1, repeat).median,
                decode_s=time_it(lambda p=predictor, s=state: p.decode(s, click), 1, 2 * repeat + 1).median,
                lowest_iou=float(iou.min()),
            )
        )
        log.info("auto backend: %s", out[-1])
    return out


def choose_backend(
    model: PromptableModel,
    agreement: float = AGREEMENT,
    settings: Sequence[tuple[str, str | None]] | None = None,
    refresh: bool = False,
) -> Choice:
    """The fastest setting for ``model`` here whose masks agree with torch's (lowest IoU >=
    ``agreement``), measured once per machine and kept in the model's runtimes folder (``refresh``
    measures again). ``settings``: the candidates (default :func:`settings_here`)."""
    settings = [("torch", None)] + [s for s in settings or settings_here() if s[0] != "torch"]
    path = model_folder(model) / "auto.json"
    key = json.dumps([machine_key(), settings])
    stored = json.loads(path.read_text()) if path.is_file() else {}
    if refresh or key not in stored:
        log.warning("backend='auto': measuring %d settings of %s once on this machine", len(settings),
                    type(model).__name__)  # fmt: skip
        stored[key] = [asdict(m) for m in measure(model, settings)]
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, stored, indent=1)
    measured = tuple(Measured(**m) for m in stored[key])
    fine = [m for m in measured if m.skipped is None and (m.backend == "torch" or m.lowest_iou >= agreement)]
    best = min(fine, key=lambda m: m.seconds)
    return Choice(best.backend, best.precision, measured, agreement)
