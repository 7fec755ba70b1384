"""SlimSAM reproduces the official outputs (../shared/fixtures/parity/slimsam_*): uniform (plain SAM
state_dicts with pruned widths, read from the file) and global (a whole pickled ``Sam`` with per-block
q/k/v and MLP widths, read by a restricted unpickler)."""

from __future__ import annotations

import os
import sys
import types

import pytest
import torch
from fixture_cases import Fixture, assert_allclose, assert_case_matches, fill_parity_weights, require_fixture

import litesam
from litesam.checkpoint import CheckpointError
from litesam.identify import identify
from litesam.zoo.slimsam import build_uniform

UNIFORM = ["slimsam_50_uniform", "slimsam_77_uniform"]


@pytest.fixture(scope="module", params=UNIFORM)
def uniform_run(request, tmp_path_factory) -> tuple[Fixture, litesam.Predictor]:
    """The official-layout file (rule-filled, plain state_dict) loaded by ``build_model`` without a name."""
    fixture = require_fixture(request.param)
    state = fill_parity_weights(litesam.build_model(request.param)).state_dict()
    path = tmp_path_factory.mktemp("slimsam") / f"{request.param}.pth"
    torch.save(state, path)
    model = litesam.build_model(checkpoint=path, fuse=False)
    predictor = litesam.Predictor(model)
    predictor.set_image(fixture.image_path)
    yield fixture, predictor


def test_uniform_state_dict_has_the_official_keys_and_shapes(uniform_run):
    fixture, predictor = uniform_run
    ours = {k: tuple(v.shape) for k, v in predictor.model.state_dict().items()}
    assert ours == fixture.official_state_dict_shapes


def test_uniform_matches_official(uniform_run):
    fixture, predictor = uniform_run
    tol = fixture.tolerance["features_atol"]
    assert_allclose(predictor.get_image_embedding(), fixture.features, tol, "features")
    for case in fixture.cases:
        assert_case_matches(predictor, fixture, case)


def test_uniform_widths_come_from_the_checkpoint(tmp_path):
    """A file pruned to other widths than the published ones (width 96, 6 heads of 16, MLP 200, global
    attention in blocks 0 and 6) builds a model of exactly those widths, identified as SlimSAM."""
    spec = litesam.get_spec("slimsam_50_uniform")
    with torch.device("meta"):
        state = build_uniform(96, 200, spec.transform, num_heads=6, global_attn=(0, 6)).state_dict()
    found = identify(state, "pruned.pth")
    assert found.spec.name == "slimsam_50_uniform" and found.sized_from_file
    with torch.device("meta"):
        model = spec.instantiate(state)
    blocks = model.image_encoder.blocks
    assert [b.window_size for b in blocks][:2] == [0, 14] and blocks[6].window_size == 0
    assert blocks[0].attn.num_heads == 6 and blocks[0].mlp.lin1.out_features == 200


@pytest.fixture(scope="module")
def global_run() -> tuple[Fixture, litesam.Predictor]:
    """The official-layout pickled file (whole ``Sam`` module, DataParallel, cuda:0 storages) loaded by
    ``build_model`` without a name: no SlimSAM class imported, widths from the tensors."""
    fixture = require_fixture("slimsam_50_global")
    model = litesam.build_model(checkpoint=fixture.folder / "slimsam_global_format.pth", fuse=False)
    predictor = litesam.Predictor(model)
    predictor.set_image(fixture.image_path)
    yield fixture, predictor


def test_global_widths_are_the_files(global_run):
    fixture, predictor = global_run
    pattern = fixture.meta["global_pruning_pattern"]
    blocks = predictor.model.image_encoder.blocks
    assert [b.attn.q.out_features for b in blocks] == [b["q_k_v_out"] for b in pattern["blocks"]]
    assert [b.mlp.lin1.out_features for b in blocks] == [b["mlp_dim"] for b in pattern["blocks"]]
    assert [b.window_size == 0 for b in blocks] == [b["global_attn"] for b in pattern["blocks"]]
    expected = {
        k.replace("image_encoder.module.", "image_encoder."): v
        for k, v in fixture.official_state_dict_shapes.items()
    }
    assert {k: tuple(v.shape) for k, v in predictor.model.state_dict().items()} == expected


def test_global_matches_official(global_run):
    fixture, predictor = global_run
    tol = fixture.tolerance["features_atol"]
    assert_allclose(predictor.get_image_embedding(), fixture.features, tol, "features")
    for case in fixture.cases:
        assert_case_matches(predictor, fixture, case)


def test_a_malicious_pickle_in_place_of_a_slimsam_file_is_refused(tmp_path, monkeypatch):
    """A file that names a SlimSAM class (so the restricted reader takes it) and also calls os.system."""
    for name in ("segment_anything_kd", "segment_anything_kd.modeling", "segment_anything_kd.modeling.sam"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules["segment_anything_kd.modeling.sam"].Sam = SlimSamStandIn
    marker = tmp_path / "ran"
    path = tmp_path / "SlimSAM-50.pth"
    payload = Payload(f"touch {marker}")
    torch.save({"model": FakeSlimSam(), "x": payload}, path)
    with pytest.raises(CheckpointError, match="refusing the global (posix|os|nt).system"):
        litesam.build_model("slimsam_50_global", checkpoint=path)
    assert not marker.exists()


class Payload:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class FakeSlimSam:
    """Pickles as ``segment_anything_kd.modeling.sam.Sam`` (the class the released files name)."""

    def __reduce__(self):
        return (SlimSamStandIn, ())


class SlimSamStandIn:
    pass


SlimSamStandIn.__module__ = "segment_anything_kd.modeling.sam"
SlimSamStandIn.__qualname__ = "Sam"
