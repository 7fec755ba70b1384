"""Auto-detection: a checkpoint's keys and shapes name its registered model (every model, every layout),
``build_model(checkpoint=path)`` needs no name, ``litesam inspect`` says what a file is, and a file that
fits nothing is refused with the closest candidates."""

from __future__ import annotations

import pytest
import torch
from helpers import photo
from PIL import Image

import litesam
from litesam.cli import main
from litesam.identify import candidates, identify
from litesam.transformers_layout import is_transformers_sam


def meta_state(name: str) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return litesam.get_spec(name).instantiate().state_dict()


@pytest.mark.parametrize("name", litesam.list_models())
def test_every_registered_model_is_identified_from_its_state_dict(name):
    """The model itself, or an earlier-registered model of the same architecture (EdgeSAM / -3x)."""
    found = identify(meta_state(name), name)
    fitting = [m.spec.name for m in candidates(meta_state(name)) if m.fits]
    assert name in fitting
    assert found.spec.name == name or found.spec.name == fitting[0]
    assert litesam.list_models().index(found.spec.name) <= litesam.list_models().index(name)


def test_a_transformers_file_is_identified_through_the_convert_hook():
    transformers = pytest.importorskip("transformers", reason="needs transformers (the test extra)")
    with torch.device("meta"):
        hf = transformers.SamModel(transformers.SamConfig()).state_dict()  # facebook/sam-vit-base's config
    assert is_transformers_sam(hf)
    found = identify(hf, "model.safetensors")
    assert found.spec.name == "sam_vit_b" and found.converted


def test_a_file_that_fits_nothing_names_the_closest_models():
    state = meta_state("sam_vit_b")
    del state["mask_decoder.iou_token.weight"]
    with pytest.raises(
        litesam.InputError, match=r"fits no registered model; closest: sam_vit_b \(99\.\d% of keys\)"
    ):
        identify(state, "broken.pth")


@pytest.fixture(scope="module")
def mobile_sam_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "weights.pt"
    torch.save(litesam.build_model("mobile_sam").state_dict(), path)
    return path


def test_build_model_without_a_name_identifies_the_checkpoint(mobile_sam_file, caplog):
    model = litesam.build_model(checkpoint=mobile_sam_file, fuse=False)
    assert "identified as mobile_sam" in caplog.text
    expected = litesam.build_model("mobile_sam").state_dict()
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in expected.items()}


def test_inspect_prints_model_layout_dtype_and_parameters(mobile_sam_file, capsys):
    assert main(["inspect", str(mobile_sam_file)]) == 0
    out = capsys.readouterr().out
    assert "model:      mobile_sam" in out
    assert "layout:     the model's own keys" in out
    assert "float32" in out and "parameters: 10.1" in out


def test_inspect_of_a_foreign_file_lists_the_closest_models(tmp_path, capsys):
    path = tmp_path / "other.pth"
    torch.save({"backbone.weight": torch.zeros(3, 3)}, path)
    assert main(["inspect", str(path)]) == 1
    assert "none fits; closest:" in capsys.readouterr().out


def test_segment_without_model_refuses_a_foreign_checkpoint_in_one_line(tmp_path, capsys):
    path = tmp_path / "other.pth"
    torch.save({"backbone.weight": torch.zeros(3, 3)}, path)
    image = tmp_path / "photo.png"
    Image.fromarray(photo()).save(image)
    assert (
        main(["segment", str(image), "--checkpoint", str(path), "--point", "1,1", "-o", str(tmp_path)]) == 2
    )
    assert "fits no registered model" in capsys.readouterr().err
