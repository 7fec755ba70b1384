"""The ``litesam`` command as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import photo
from PIL import Image

import litesam
from litesam.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "mobile_sam.pt"
    torch.manual_seed(0)
    torch.save(litesam.build_model("mobile_sam").state_dict(), path)
    return path


@pytest.fixture()
def image_file(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(photo(90, 130)).save(path)
    return path


def test_segment_writes_masks_overlay_and_json(tmp_path, image_file, checkpoint, capsys):
    out = tmp_path / "out"
    argv = [
        "segment", str(image_file), "--model", "mobile_sam", "--checkpoint", str(checkpoint),
        "--point", "60,40", "--point", "5,5,0", "--box", "10,10,100,80", "--multimask", "-o", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "photo.json").read_text())
    assert summary["model"] == "mobile_sam" and summary["size_hw"] == [90, 130]
    assert summary["prompts"] == {
        "points": [[60, 40], [5, 5]],
        "labels": [1, 0],
        "boxes": [[10, 10, 100, 80]],
    }
    assert len(summary["masks"]) == 3
    for record in summary["masks"]:
        mask = np.asarray(Image.open(out / record["file"]))
        assert mask.shape == (90, 130) and set(np.unique(mask)) <= {0, 255}
        assert record["area"] == int((mask > 0).sum())
    overlay = Image.open(out / "photo_overlay.png")
    assert overlay.size[0] > 3 * 130 and overlay.size[1] == 90 and overlay.mode == "RGB"  # one panel per mask
    assert "3 mask(s) written" in capsys.readouterr().out


def test_several_boxes_give_one_mask_each(tmp_path, image_file, checkpoint):
    out = tmp_path / "out"
    argv = ["segment", str(image_file), "--model", "mobile_sam", "--checkpoint", str(checkpoint)]
    assert main(argv + ["--box", "0,0,50,50", "--box", "40,30,120,85", "-o", str(out)]) == 0
    assert len(json.loads((out / "photo.json").read_text())["masks"]) == 2
    assert Image.open(out / "photo_overlay.png").size == (130, 90)


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "at least one prompt"),
        (["--point", "500,10"], "outside the image"),
        (["--box", "0,0,5,5", "--box", "1,1,6,6", "--point", "3,3"], "cannot be combined"),
    ],
)
def test_prompt_errors_exit_2_with_a_message(tmp_path, image_file, checkpoint, capsys, extra, message):
    argv = ["segment", str(image_file), "--model", "mobile_sam", "--checkpoint", str(checkpoint)]
    assert main(argv + extra + ["-o", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "option, message",
    [
        (["--point", "1;2"], "--point X,Y[,LABEL] expects 2 or 3"),
        (["--box", "nan,0,5,5"], "--box X0,Y0,X1,Y1 expects finite numbers, got 'nan,0,5,5'"),
        (["--point", "inf,3"], "--point X,Y[,LABEL] expects finite numbers"),
    ],
)
def test_bad_prompt_syntax_is_an_argparse_error(capsys, image_file, option, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", str(image_file), *option])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


PROC = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")


@pytest.mark.parametrize(
    "output",
    [
        pytest.param(lambda tmp: tmp / "photo.jpg", id="an existing file"),
        pytest.param(lambda tmp: "/proc/litesam-out", id="no folder can be made", marks=PROC),
        pytest.param(lambda tmp: "/proc/self", id="no file can be made", marks=PROC),
    ],
)
def test_segment_refuses_an_unwritable_output_before_building_the_model(
    tmp_path, image_file, monkeypatch, capsys, output
):
    monkeypatch.setattr(litesam, "build_model", lambda *a, **k: pytest.fail("the model was built"))
    out = output(tmp_path)
    before = image_file.read_bytes()
    assert main(["segment", str(image_file), "--point", "5,5", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("litesam segment: error: ") and str(out) in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.jpg"] and image_file.read_bytes() == before


def test_edges_refuses_a_folder_as_its_output_file(tmp_path, image_file, monkeypatch, capsys):
    monkeypatch.setattr(litesam, "build_model", lambda *a, **k: pytest.fail("the model was built"))
    assert main(["edges", str(image_file), "-o", str(tmp_path)]) == 2
    assert f"{tmp_path} is a folder: -o takes the file name of the edge PNG" in capsys.readouterr().err


def test_a_bug_is_not_disguised_as_a_user_error(image_file, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("an internal inconsistency")

    monkeypatch.setattr(litesam, "build_model", broken)
    with pytest.raises(ValueError, match="an internal inconsistency"):
        main(["segment", str(image_file), "--point", "5,5"])


def test_wrong_checkpoint_and_unreadable_image(tmp_path, image_file, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    assert (
        main(
            ["segment", str(image_file), "--model", "mobile_sam", "--checkpoint", str(bad), "--point", "1,1"]
        )
        == 2
    )
    assert "bad.pt is not a PyTorch checkpoint" in capsys.readouterr().err
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 nope")
    assert main(["segment", str(broken), "--point", "1,1"]) == 2
    assert "cannot read image" in capsys.readouterr().err


def test_models_lists_the_registry(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in litesam.list_models():
        assert name in out


@pytest.mark.slow
def test_models_stats_counts_every_model(capsys):
    assert main(["models", "--stats"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert rows["sam_vit_b"][1:5] == ["89.67", "/", "93.74", "972.1"]  # test_stats: the official counts
    for name in litesam.list_models():
        assert float(rows[name][4]) > 0  # encoder GFLOPs


def test_offline_download_says_what_to_do(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("LITESAM_OFFLINE", "1")
    monkeypatch.setenv("LITESAM_HOME", str(tmp_path))
    assert main(["download", "sam_vit_b"]) == 2
    err = capsys.readouterr().err
    assert "sam_vit_b_01ec64.pth" in err and "--checkpoint" in err


def test_a_litesam_home_that_is_a_file_is_named(monkeypatch, tmp_path, capsys):
    (tmp_path / "home").write_text("")
    monkeypatch.setenv("LITESAM_HOME", str(tmp_path / "home"))
    assert main(["download", "mobile_sam"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"litesam download: error: LITESAM_HOME={tmp_path / 'home'} cannot hold downloads")
    assert "is a file, not a folder" in err and err.count("\n") == 1


def test_console_script_help(capsys):
    done = subprocess.run([sys.executable, "-m", "litesam", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "usage: litesam" in done.stdout
    for sub in ("segment", "models", "download", "everything", "edges", "distill", "eval", "serve", "bench"):
        with pytest.raises(SystemExit) as exit_:
            main([sub, "--help"])
        assert exit_.value.code == 0 and f"usage: litesam {sub}" in capsys.readouterr().out
