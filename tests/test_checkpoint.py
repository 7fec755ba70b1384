"""Checkpoint files: common containers load; anything wrong is a clear error naming file, model and keys."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from helpers import photo, tiny_sam

import litesam
from litesam.checkpoint import CheckpointError, load_into, read_state_dict


@pytest.fixture()
def state():
    return tiny_sam(seed=1).state_dict()


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"model": sd},
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"module." + k: v for k, v in sd.items()},
        lambda sd: {"model": {"module." + k: v for k, v in sd.items()}, "optimizer": {}},
    ],
    ids=["plain", "model", "state_dict", "module-prefix", "nested"],
)
def test_common_containers_load_exactly(tmp_path, state, wrap):
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(state), path)
    model = tiny_sam(seed=2)
    load_into(model, read_state_dict(path), "tiny", str(path))
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")


def test_a_folder_is_called_a_folder(tmp_path):
    (tmp_path / "weights.pth").mkdir()
    with pytest.raises(CheckpointError, match="weights.pth is a folder, not a checkpoint file"):
        read_state_dict(tmp_path / "weights.pth")


def test_empty_file(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_state_dict(tmp_path / "empty.pth")


@pytest.mark.parametrize(
    "content",
    [b"this is not a checkpoint", random.Random(0).randbytes(5000), b"PK\x03\x04" + bytes(3000)],
    ids=["text", "random bytes", "broken zip"],
)
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "photo.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    message = str(err.value)
    assert "photo.pth is not a PyTorch checkpoint, or it is corrupt" in message
    assert "safe" not in message and "weights_only" not in message and "\n" not in message


def test_truncated_download(tmp_path, state):
    path = tmp_path / "cut.pth"
    torch.save(state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth is not a PyTorch checkpoint, or it is corrupt"):
        read_state_dict(path)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("zipped", [True, False], ids=["zip format", "legacy format"])
def test_a_malicious_pickle_is_refused_naming_its_global(tmp_path, zipped):
    path = tmp_path / "evil.pth"
    torch.save({"model": Evil()}, path, _use_new_zipfile_serialization=zipped)
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    message = str(err.value)
    assert f"refuses to load the global {os.system.__module__}.system" in message
    assert "weights_only" not in message and "\n" not in message


def test_no_state_dict_inside(tmp_path):
    path = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(CheckpointError, match="does not contain a state_dict"):
        read_state_dict(path)


def test_wrong_model_names_file_model_and_keys(tmp_path, state):
    path = tmp_path / "other.pth"
    torch.save({"backbone.conv.weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError) as err:
        litesam.build_model("mobile_sam", checkpoint=path)
    msg = str(err.value)
    assert "other.pth" in msg and "'mobile_sam'" in msg
    assert "missing keys (first: image_encoder." in msg
    assert "1 unexpected keys (first: backbone.conv.weight)" in msg


def test_shape_mismatch_is_reported_not_skipped(tmp_path, state):
    bad = dict(state)
    bad["mask_decoder.iou_token.weight"] = torch.zeros(1, 8)
    model = tiny_sam()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        CheckpointError, match=r"mask_decoder.iou_token.weight: checkpoint \(1, 8\) vs model \(1, 256\)"
    ):
        load_into(model, bad, "tiny", "bad.pth")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), (
        "a failed load changed weights"
    )


def test_unknown_model_name_suggests_close_matches():
    with pytest.raises(ValueError, match="unknown model 'sam_vit_x'.*Did you mean.*sam_vit_b"):
        litesam.build_model("sam_vit_x")


def test_official_layout_round_trip_through_build_model(tmp_path):
    reference = litesam.build_model("mobile_sam")
    path = tmp_path / "mobile_sam.pt"
    torch.save(reference.state_dict(), path)
    loaded = litesam.build_model("mobile_sam", checkpoint=path, fuse=False)
    for key, value in reference.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


@pytest.mark.parametrize("name", ["mobile_sam", "edge_sam"])
def test_checkpoint_models_are_prepared_for_inference_with_the_same_outputs(tmp_path, name):
    reference = litesam.build_model(name)
    path = tmp_path / "model.pt"
    torch.save(reference.state_dict(), path)
    fused = litesam.build_model(name, checkpoint=path)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert fused.channels_last
    image = photo(300, 400)
    ours, theirs = litesam.Predictor(fused), litesam.Predictor(reference)
    ours.set_image(image)
    theirs.set_image(image)
    torch.testing.assert_close(ours.features, theirs.features, atol=1e-4, rtol=1e-4)
    for got, want in zip(ours.predict([[200, 150]], [1]), theirs.predict([[200, 150]], [1]), strict=True):
        assert np.abs(got.astype(np.float64) - want).mean() < 1e-4


def test_offline_auto_checkpoint_says_what_to_pass(monkeypatch, tmp_path):
    monkeypatch.setenv("LITESAM_OFFLINE", "1")
    monkeypatch.setenv("LITESAM_HOME", str(tmp_path))
    with pytest.raises(Exception, match="--checkpoint") as err:
        litesam.build_model("sam_vit_b", checkpoint="auto")
    assert str(tmp_path) in str(err.value)
