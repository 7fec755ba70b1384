"""Access to the parity fixtures in ``../shared/fixtures`` (official outputs on name-keyed weights).

Tests call :func:`require_fixture` and are skipped with a clear reason where ``shared/`` is absent.
Set ``LITESAM_SHARED`` to point elsewhere.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import litesam
from litesam.utils.transforms import ImageTransform

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LITESAM_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures"


def fixtures_available() -> bool:
    return (FIXTURES / "parity_weights.py").is_file()


def require_fixtures() -> Path:
    if not fixtures_available():
        pytest.skip(f"parity fixtures not found at {FIXTURES} (set LITESAM_SHARED)")
    return FIXTURES


def parity_weights():
    """The fixtures' weight rule module (``parity_weights.py``)."""
    path = require_fixtures() / "parity_weights.py"
    spec = importlib.util.spec_from_file_location("parity_weights", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def fill_parity_weights(model: torch.nn.Module, prefix: str = "") -> torch.nn.Module:
    """Fill every float tensor of ``model``'s state_dict by the fixtures' name-keyed rule (strict load).

    ``prefix`` is prepended to each key for the rule, e.g. ``"image_encoder."`` when ``model`` is an
    encoder whose keys sit under that prefix in the official checkpoint.
    """
    state = {prefix + k: v for k, v in model.state_dict().items()}
    filled = parity_weights().fill_state_dict(state)
    model.load_state_dict({k[len(prefix) :]: v for k, v in filled.items()}, strict=True)
    return model.eval()


@dataclass
class Fixture:
    """One model's parity fixture: ``cases.json`` + ``meta.json`` + ``expected.npz``."""

    folder: Path
    index: dict[str, Any] = field(repr=False)

    @property
    def model(self) -> str:
        return self.index["model"]

    @property
    def image_path(self) -> Path:
        return FIXTURES / self.index["image"]

    @property
    def tolerance(self) -> dict[str, float]:
        return self.index["tolerance"]

    @property
    def cases(self) -> list[dict[str, Any]]:
        return self.index["cases"]

    def case(self, name: str) -> dict[str, Any]:
        return next(c for c in self.cases if c["name"] == name)

    @cached_property
    def meta(self) -> dict[str, Any]:
        return json.loads((self.folder / "meta.json").read_text())

    @cached_property
    def arrays(self) -> dict[str, np.ndarray]:
        with np.load(self.folder / "expected.npz") as npz:
            return {k: npz[k] for k in npz.files}

    @cached_property
    def official_state_dict_shapes(self) -> dict[str, tuple[int, ...]]:
        """Key -> shape of the official model's full state_dict, from meta.json (both layouts)."""
        sd = self.meta["state_dict"]
        rows = sd["keys"] if isinstance(sd, dict) else [(r["key"], r["shape"]) for r in sd]
        return {row[0]: tuple(row[1]) for row in rows}

    @property
    def features(self) -> np.ndarray:
        return self.arrays[self.index["features"]]

    def expected(self, case: dict[str, Any], what: str) -> np.ndarray | None:
        """``what`` in iou_predictions / low_res_logits / masks (unpacked bool) for a case."""
        arrays = case["arrays"]
        if what == "masks":
            if arrays.get("masks_packbits") is None:
                return None
            shape = arrays["masks_shape"]
            bits = np.unpackbits(self.arrays[arrays["masks_packbits"]], count=int(np.prod(shape)))
            return bits.reshape(shape).astype(bool)
        name = arrays.get(what)
        return None if name is None else self.arrays[name]


def require_fixture(model: str) -> Fixture:
    folder = require_fixtures() / "parity" / model
    if not (folder / "cases.json").is_file():
        pytest.skip(f"no parity fixture for {model} at {folder}")
    return Fixture(folder, json.loads((folder / "cases.json").read_text()))


def assert_allclose(ours: Any, expected: np.ndarray, atol: float, what: str) -> None:
    ours = np.asarray(ours.detach().cpu() if isinstance(ours, torch.Tensor) else ours, dtype=np.float64)
    assert ours.shape == tuple(expected.shape), f"{what}: shape {ours.shape} != {expected.shape}"
    err = float(np.abs(ours - expected).max()) if ours.size else 0.0
    assert err <= atol, f"{what}: max |ours - official| = {err:.3g} > atol {atol:.3g}"


def assert_masks_match(ours: Any, expected: np.ndarray, max_fraction: float, what: str) -> None:
    ours = np.asarray(ours.detach().cpu() if isinstance(ours, torch.Tensor) else ours, dtype=bool)
    assert ours.shape == expected.shape, f"{what}: shape {ours.shape} != {expected.shape}"
    frac = float((ours != expected).mean())
    assert frac <= max_fraction, f"{what}: {frac:.2e} of mask pixels differ (> {max_fraction:.1e})"


def case_names(model: str) -> list[str]:
    """Names in ``model``'s cases.json, read at collection time (a placeholder that skips if absent)."""
    path = FIXTURES / "parity" / model / "cases.json"
    return [c["name"] for c in json.loads(path.read_text())["cases"]] if path.is_file() else ["no-fixture"]


def state_dict_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def official_encoder_shapes(fixture: Fixture, prefix: str = "image_encoder.") -> dict[str, tuple[int, ...]]:
    """The official image encoder's key -> shape (keys without ``prefix``), from meta.json."""
    full = fixture.official_state_dict_shapes
    return {k[len(prefix) :]: shape for k, shape in full.items() if k.startswith(prefix)}


def encoder_input(fixture: Fixture) -> torch.Tensor:
    """1x3x1024x1024 encoder input per meta.json: resize (checked by SHA-256), normalise, pad."""
    pre = fixture.meta["preprocessing"]
    image = np.array(Image.open(fixture.image_path).convert("RGB"))  # meta.json "image_read"
    transform = ImageTransform(1024)
    resized = transform.resize_image(image)
    assert hashlib.sha256(resized.tobytes()).hexdigest() == pre["resized_uint8"]["sha256"]
    x = transform.to_input(image)
    assert abs(x.mean().item() - pre["preprocessed_input"]["mean"]) < 1e-5
    return x


def predictor_for(fixture: Fixture, name: str) -> litesam.Predictor:
    """``litesam.Predictor`` over registry model ``name`` with parity weights, fixture image set."""
    predictor = litesam.Predictor(fill_parity_weights(litesam.build_model(name)))
    predictor.set_image(fixture.image_path)
    return predictor


def run_case(fixture: Fixture, predictor: litesam.Predictor, case: dict) -> tuple[np.ndarray, ...]:
    """Call the predictor as the fixture's official call did: (masks, iou_predictions, low_res_logits)."""
    mask_input = None
    if case["mask_input"] is not None:
        source = fixture.case(case["mask_input"]["from_case"])
        mask_input = fixture.expected(source, "low_res_logits")[case["mask_input"]["index"]][None]
    box = case["box"]
    if box is not None and np.ndim(box) == 2:  # batched boxes: predict_torch in the official run
        return predictor.predict_batch(boxes=box, multimask_output=case["multimask_output"])
    return predictor.predict(
        point_coords=case["point_coords"],
        point_labels=case["point_labels"],
        box=box,
        mask_input=mask_input,
        multimask_output=case["multimask_output"],
    )


def assert_case_matches(predictor: litesam.Predictor, fixture: Fixture, case: dict[str, Any]) -> None:
    """One cases.json entry, called as the official run did: logits, scores and masks within tolerance."""
    masks, scores, logits = run_case(fixture, predictor, case)
    tol, name = fixture.tolerance, case["name"]
    assert_allclose(
        logits, fixture.expected(case, "low_res_logits"), tol["low_res_logits_atol"], f"{name} logits"
    )
    assert_allclose(scores, fixture.expected(case, "iou_predictions"), tol["iou_atol"], f"{name} scores")
    assert_masks_match(
        masks, fixture.expected(case, "masks"), tol["mask_mismatch_max_fraction"], f"{name} masks"
    )
