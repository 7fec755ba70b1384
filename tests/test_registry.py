"""The open registry: models added at run time or by entry points, options, kinds, layout conversion."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest
import torch
from helpers import photo, tiny_sam

import litesam
from litesam import registry
from litesam.checkpoint import CheckpointError


@pytest.fixture
def fresh_registry(monkeypatch):
    """A registry holding just the built-in zoo, restored after the test."""
    monkeypatch.setattr(registry, "_REGISTRY", None)
    registry.list_models()
    yield registry


def tiny_spec(name: str = "tiny", **kwargs) -> litesam.ModelSpec:
    return litesam.ModelSpec(name, lambda transform: tiny_sam(), "tests", **kwargs)


def test_every_built_in_family_is_found_without_a_list_of_them():
    names = litesam.list_models()
    for family in (
        "sam_vit_b",
        "mobile_sam",
        "repvit_sam",
        "edge_sam",
        "efficientvit_sam_l0",
        "efficient_sam_vitt",
        "mobile_sam_v2",
    ):
        assert family in names
    instance = litesam.list_models(kind="instance")
    assert instance == ["fastsam_s", "fastsam_x"]
    assert set(litesam.list_models("promptable")) == set(names) - set(instance)


def test_a_registered_model_is_built_listed_and_used_like_the_zoo(fresh_registry):
    litesam.register_model(tiny_spec())
    assert "tiny" in litesam.list_models()
    predictor = litesam.Predictor(litesam.build_model("tiny"))
    predictor.set_image(photo())
    assert predictor.predict([[10, 10]], [1])[0].shape == (3, 120, 160)
    with pytest.raises(ValueError, match="registered twice"):
        litesam.register_model(tiny_spec())
    litesam.register_model(tiny_spec(description="again"), replace=True)
    assert litesam.get_spec("tiny").description == "again"


def test_entry_points_add_models(fresh_registry, monkeypatch, tmp_path):
    (tmp_path / "third_party_zoo.py").write_text(
        "import litesam\nfrom helpers import tiny_sam\n"
        "MODELS = [litesam.ModelSpec('third_party', lambda t: tiny_sam(), 'elsewhere')]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    point = EntryPoint("third", "third_party_zoo", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [point] if group == point.group else [])
    monkeypatch.setattr(registry, "_REGISTRY", None)
    assert litesam.get_spec("third_party").source == "elsewhere"
    assert "sam_vit_b" in litesam.list_models()


def test_unknown_models_and_options_are_input_errors():
    with pytest.raises(litesam.InputError, match="Did you mean sam_vit_b"):
        litesam.get_spec("sam_vit_bb")
    with pytest.raises(litesam.InputError, match="no option hq_token_only .*multimask_outputs=3"):
        litesam.build_model("edge_sam", hq_token_only=True)
    with pytest.raises(litesam.InputError, match="no option"):
        litesam.build_model("sam_vit_b", multimask_outputs=4)


def test_edge_sam_options_choose_its_masks_and_scores():
    image = photo()
    outputs = {}
    for options in ({}, {"multimask_outputs": 4, "stability_scores": True}):
        torch.manual_seed(0)
        model = litesam.build_model("edge_sam", **options)
        predictor = litesam.Predictor(model)
        predictor.set_image(image)
        outputs[len(options)] = predictor.predict([[80, 60]], [1])
    (masks3, _, _), (masks4, scores4, low_res4) = outputs[0], outputs[2]
    assert masks3.shape[0] == 3 and masks4.shape[0] == 4
    expected = litesam.utils.masks.stability_score(torch.from_numpy(low_res4), 0.0, 1.0)
    torch.testing.assert_close(torch.from_numpy(scores4), expected)


def test_convert_state_dict_maps_another_layout_before_the_strict_load(fresh_registry, tmp_path):
    official = tiny_sam(seed=3).state_dict()
    renamed = {k.replace("mask_decoder.", "decoder."): v for k, v in official.items()}
    torch.save({"model": renamed}, tmp_path / "renamed.pth")

    def convert(state):
        return {
            k.replace("decoder.", "mask_decoder.", 1) if k.startswith("decoder.") else k: v
            for k, v in state.items()
        }

    litesam.register_model(tiny_spec("plain"))
    litesam.register_model(tiny_spec("converted", convert_state_dict=convert))
    with pytest.raises(CheckpointError, match="unexpected keys"):
        litesam.build_model("plain", checkpoint=tmp_path / "renamed.pth")
    model = litesam.build_model("converted", checkpoint=tmp_path / "renamed.pth", fuse=False)
    for key, value in official.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_model_stats_come_from_the_spec_without_weights():
    stats = litesam.get_spec("mobile_sam").stats()
    assert stats.input_size == 1024 and stats.encoder_flops / 1e9 == pytest.approx(77.5, abs=0.05)
