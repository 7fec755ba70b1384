"""Precision: fp32 stays exact; bf16 autocast runs encode and decode in bfloat16 and hands back float32
close to the fp32 result; "auto" picks bf16 only where the hardware has it."""

from __future__ import annotations

import pytest
import torch
from helpers import photo, tiny_sam

import litesam
from litesam import precision


def masks_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum().clamp(min=1))


def test_bf16_gives_float32_outputs_close_to_fp32():
    image = photo(90, 120)
    exact = litesam.Predictor(tiny_sam())
    half = litesam.Predictor(precision.set_precision(tiny_sam(), "bf16"))
    states = exact.encode(image), half.encode(image)
    assert all(s.image_embeddings.dtype == torch.float32 for s in states)
    exact_embeddings, half_embeddings = (s.image_embeddings for s in states)
    error = (half_embeddings - exact_embeddings).norm() / exact_embeddings.norm()
    assert 0 < float(error) < 0.05, "bf16 rounds the embeddings, by little"
    prompts = litesam.Prompts.single(point_coords=[[30, 40]], point_labels=[1])
    (fp32, bf16) = (p.decode(s, prompts) for p, s in zip((exact, half), states, strict=True))
    assert bf16.low_res.dtype == torch.float32 and bf16.scores.dtype == torch.float32
    assert masks_iou(fp32.low_res > 0, bf16.low_res > 0) > 0.9


def test_fp32_is_the_default_and_exact():
    model = litesam.build_model("mobile_sam")
    assert model.precision == "fp32"
    with precision.autocast(model):
        assert not torch.is_autocast_enabled("cpu")


def test_auto_is_bf16_exactly_where_the_hardware_has_it(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "bf16_is_fast", lambda device: False)
    assert precision.resolve("auto", cpu) == "fp32"
    monkeypatch.setattr(precision, "bf16_is_fast", lambda device: True)
    assert precision.resolve("auto", cpu) == "bf16"
    assert precision.resolve("fp32", cpu) == "fp32"


def test_an_unknown_precision_is_a_one_line_error():
    with pytest.raises(litesam.errors.InputError, match="precision must be one of fp32, bf16, auto"):
        litesam.build_model("mobile_sam", precision="fp16")
