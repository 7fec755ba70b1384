"""Segment everything: box prompts, folder runs (JSON, overlays, summary, resume, corrupt images, runs
sharing a folder), CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import photo, tiny_sam
from PIL import Image

import litesam
from litesam import Predictor
from litesam.cli import main
from litesam.errors import InputError
from litesam.everything import boxes_for, read_boxes, segment_everything, segmentation_mask
from litesam.utils.amg import masks_to_boxes
from litesam.utils.io import ImageJob, find_images

# Settings that keep every decoded mask of the random-weight tiny model (no score filtering).
KEEP_ALL = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
BOXES = np.array([[10, 10, 70, 50], [40, 25, 150, 110], [0, 0, 159, 119], [90, 5, 130, 60]], dtype=float)


@pytest.fixture(scope="module")
def model():
    return tiny_sam()


def test_box_prompted_masks_equal_per_box_predictor_masks(model):
    image = photo()
    generator = litesam.MaskGenerator(model, points_per_batch=3, output_mode="binary_mask", **KEEP_ALL)
    records = generator.generate(image, boxes=BOXES)
    assert len(records) == len(BOXES)  # one mask per box, decoded in batches of 3
    predictor = Predictor(model)
    predictor.set_image(image)
    centres = (BOXES[:, :2] + BOXES[:, 2:]) / 2
    found = sorted(int(np.flatnonzero((centres == r["point_coords"][0]).all(1))[0]) for r in records)
    assert found == [0, 1, 2, 3]  # point_coords is the box centre: every box has its record
    for record in records:
        i = int(np.flatnonzero((centres == record["point_coords"][0]).all(1))[0])
        masks, scores, _ = predictor.predict(box=BOXES[i], multimask_output=False)
        np.testing.assert_array_equal(record["segmentation"], masks[0])
        assert record["predicted_iou"] == pytest.approx(float(scores[0]), abs=1e-5)
        assert record["crop_box"] == [0, 0, 160, 120]


def test_box_prompts_go_through_the_generators_filters(model):
    strict = litesam.MaskGenerator(model, pred_iou_thresh=1.5, stability_score_thresh=0.0)
    assert strict.generate(photo(), boxes=BOXES) == []  # no predicted IoU reaches 1.5
    assert litesam.MaskGenerator(model).generate(photo(), boxes=np.zeros((0, 4))) == []
    with pytest.raises(ValueError, match="x0 <= x1"):
        strict.generate(photo(), boxes=[[50, 0, 10, 10]])
    with pytest.raises(ValueError, match="Kx4"):
        strict.generate(photo(), boxes=[1, 2, 3])


def test_find_images_names_outputs_and_keeps_clashing_suffixes(tmp_path):
    for name in ("a.jpg", "a.png", "b.JPG", "notes.txt", "sub/c.png", "summary.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    flat = find_images([tmp_path])
    assert [j.name for j in flat] == ["a_jpg", "a_png", "b", "summary_png"]
    deep = find_images([tmp_path], recursive=True)
    assert [j.name for j in deep] == ["a_jpg", "a_png", "b", "sub/c", "summary_png"]
    assert find_images([tmp_path / "notes.txt"]) == [ImageJob(tmp_path / "notes.txt", "notes")]
    assert [j.name for j in find_images([tmp_path], recursive=True, exclude=tmp_path / "sub")] == [
        "a_jpg", "a_png", "b", "summary_png",
    ]  # fmt: skip
    with pytest.raises(InputError, match="no such file or folder"):
        find_images([tmp_path / "missing"])


def test_read_boxes_takes_xyxy_lists_coco_detections_and_per_image_maps(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text("[[1, 2, 30, 40], [0, 0, 5.5, 6]]")
    np.testing.assert_array_equal(read_boxes(path), [[1, 2, 30, 40], [0, 0, 5.5, 6]])
    path.write_text('[{"bbox": [1, 2, 29, 38], "score": 0.9, "category_id": 3}]')
    np.testing.assert_array_equal(read_boxes(path), [[1, 2, 30, 40]])  # XYWH -> XYXY
    path.write_text('{"a.jpg": [[1, 2, 3, 4]], "b": [{"bbox": [0, 0, 1, 1]}]}')
    per_image = read_boxes(path)
    np.testing.assert_array_equal(boxes_for(per_image, tmp_path / "a.jpg"), [[1, 2, 3, 4]])
    np.testing.assert_array_equal(boxes_for(per_image, tmp_path / "b.png"), [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="no entry for c.jpg"):
        boxes_for(per_image, tmp_path / "c.jpg")


@pytest.mark.parametrize(
    "text, message",
    [
        ("[[1, 2, 3]]", "item 0"),
        ('[{"box": [1, 2, 3, 4]}]', 'COCO detections with "bbox"'),
        ("[[5, 5, 1, 1]]", "negative width or height"),
        ('"boxes"', "got str"),
        ("[[1, 2,", "cannot read boxes"),
        ("[[0, 0, 5, 5], [NaN, 1, 2, 3]]", "item 1 .* NaN or infinite"),
        ('[{"bbox": [0, 0, Infinity, 3]}]', "item 0 .* NaN or infinite"),
        ("[[0, 0, 5, 1e999]]", "NaN or infinite"),
        ("[]", "holds no boxes"),
        ("{}", "holds no boxes"),
    ],
)
def test_bad_boxes_files_get_a_clear_error(tmp_path, text, message):
    path = tmp_path / "boxes.json"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_boxes(path)


@pytest.fixture()
def folder(tmp_path):
    images = tmp_path / "photos"
    images.mkdir()
    Image.fromarray(photo(60, 80, seed=1)).save(images / "one.jpg")
    Image.fromarray(photo(50, 70, seed=2)).save(images / "two.png")
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return images


@pytest.fixture()
def counted(monkeypatch, model):
    """The CLI builds the tiny model; ``calls`` lists the images whose masks were generated."""
    calls: list[tuple[int, ...]] = []

    class CountingGenerator(litesam.MaskGenerator):
        def generate(self, image, **kwargs):
            calls.append(np.asarray(image).shape)
            return super().generate(image, **kwargs)

    monkeypatch.setattr(litesam, "build_model", lambda *args, **kwargs: model)
    monkeypatch.setattr(litesam, "MaskGenerator", CountingGenerator)
    return calls


GRID = ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--no-progress"]


def test_folder_run_writes_json_and_overlay_per_image_and_reports_the_corrupt_one(
    tmp_path, folder, counted, capsys
):
    out = tmp_path / "out"
    assert main(["everything", str(folder), "-o", str(out), *GRID]) == 1  # 1: some image failed
    assert sorted(p.name for p in out.iterdir()) == [
        "one.json", "one_overlay.png", "summary.json", "two.json", "two_overlay.png",
    ]  # fmt: skip
    assert "broken.jpg" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["images"], summary["done"], summary["skipped"], summary["failed"]) == (3, 2, 0, 1)
    assert summary["failures"][0]["image"].endswith("broken.jpg")
    assert "cannot read image" in summary["failures"][0]["error"]
    assert summary["info"]["settings"]["points_per_side"] == 2

    doc = json.loads((out / "two.json").read_text())
    assert doc["image"] == {
        "file_name": "two.png",
        "path": str(folder / "two.png"),
        "height": 50,
        "width": 70,
    }
    assert len(doc["annotations"]) > 0
    for ann in doc["annotations"]:
        assert isinstance(ann["segmentation"]["counts"], str)  # COCO compressed RLE
        mask = segmentation_mask(ann["segmentation"])
        assert mask.shape == (50, 70) and ann["area"] == int(mask.sum())
        x0, y0, x1, y1 = masks_to_boxes(torch_bool(mask))[0].tolist()
        assert ann["bbox"] == [x0, y0, x1 - x0, y1 - y0]
        assert {"predicted_iou", "stability_score", "point_coords", "crop_box", "id"} <= set(ann)
    picture = Image.open(out / "two_overlay.png")
    assert picture.size == (70, 50) and picture.mode == "RGB"
    assert not np.array_equal(np.asarray(picture), np.asarray(Image.open(folder / "two.png")))


def test_second_run_skips_done_images_and_overwrite_redoes_them(tmp_path, folder, counted):
    out = tmp_path / "out"
    main(["everything", str(folder), "-o", str(out), *GRID])
    assert len(counted) == 2
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json") if p.name != "summary.json"}
    assert main(["everything", str(folder), "-o", str(out), *GRID]) == 1  # broken.jpg still fails
    assert len(counted) == 2  # nothing recomputed
    assert stamps == {p.name: p.stat().st_mtime_ns for p in out.glob("*.json") if p.name != "summary.json"}
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["skipped"], summary["failed"]) == (0, 2, 1)
    main(["everything", str(folder / "one.jpg"), "-o", str(out), "--overwrite", *GRID])
    assert len(counted) == 3


def test_boxes_file_on_the_command_line(tmp_path, folder, counted, capsys):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"one.jpg": [{"bbox": [5, 5, 30, 20]}, {"bbox": [40, 10, 30, 40]}]}))
    out = tmp_path / "out"
    argv = ["everything", str(folder / "one.jpg"), "-o", str(out), "--boxes", str(boxes), *GRID]
    assert main(argv + ["--box-nms-thresh", "1"]) == 0
    doc = json.loads((out / "one.json").read_text())
    assert sorted(a["point_coords"] for a in doc["annotations"]) == [[[20, 15]], [[55, 30]]]  # box centres
    boxes.write_text('[{"bbox": [1, 2]}]')
    assert main(argv) == 2  # a malformed boxes file stops before any work
    boxes.write_text("[[NaN, 0, 10, 10]]")
    assert main(argv) == 2
    assert "item 0 ([nan, 0, 10, 10]) has a NaN or infinite coordinate" in capsys.readouterr().err


def test_an_image_without_boxes_gets_an_empty_result_and_a_note(tmp_path, folder, counted, capsys):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"one.jpg": [], "two.png": [[5, 5, 30, 20]]}))
    out = tmp_path / "out"
    argv = ["everything", str(folder / "one.jpg"), str(folder / "two.png"), "-o", str(out), *GRID]
    assert main([*argv, "--boxes", str(boxes)]) == 0
    assert json.loads((out / "one.json").read_text())["annotations"] == []
    assert len(json.loads((out / "two.json").read_text())["annotations"]) == 1
    assert len(counted) == 1  # the model does not run for an image without boxes
    assert f"note: no boxes for {folder / 'one.jpg'}, empty result written" in capsys.readouterr().err
    boxes.write_text("[]")
    assert main([*argv, "--boxes", str(boxes)]) == 2
    assert f"{boxes} holds no boxes: nothing to segment" in capsys.readouterr().err


def test_uncompressed_rle_output_mode(tmp_path, folder, counted):
    out = tmp_path / "out"
    assert (
        main(
            [
                "everything",
                str(folder / "one.jpg"),
                "-o",
                str(out),
                "--output-mode",
                "uncompressed_rle",
                *GRID,
            ]
        )
        == 0
    )
    ann = json.loads((out / "one.json").read_text())["annotations"][0]
    assert isinstance(ann["segmentation"]["counts"], list)
    assert segmentation_mask(ann["segmentation"]).sum() == ann["area"]


PROC = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")


@pytest.mark.parametrize(
    "output",
    [
        pytest.param(lambda tmp: tmp / "photos" / "one.jpg", id="an existing file"),
        pytest.param(lambda tmp: tmp / "photos" / "one.jpg" / "out", id="under a file"),
        pytest.param(lambda tmp: "/proc/litesam-out", id="no folder can be made", marks=PROC),
        pytest.param(lambda tmp: "/proc/self", id="no file can be made", marks=PROC),
    ],
)
def test_an_unwritable_output_is_refused_before_the_model_is_built(
    tmp_path, folder, monkeypatch, capsys, output
):
    out = output(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    monkeypatch.setattr(litesam, "build_model", lambda *a, **k: pytest.fail("the model was built"))
    assert main(["everything", str(folder), "-o", str(out), *GRID]) == 2
    err = capsys.readouterr().err
    assert err.startswith("litesam everything: error: ") and str(out) in err and err.count("\n") == 1
    assert sorted(tmp_path.rglob("*")) == before


def test_an_output_that_cannot_be_written_midway_stops_the_run_with_one_line(
    tmp_path, folder, counted, capsys
):
    out = tmp_path / "out"
    (out / "one_overlay.png").mkdir(parents=True)  # a folder in the way of one.jpg's overlay
    argv = ["everything", str(folder / "one.jpg"), str(folder / "two.png"), "-o", str(out), *GRID]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"litesam everything: error: cannot write {out / 'one_overlay.png'}: ")
    assert err.count("\n") == 1
    assert len(counted) == 1  # two.png was not tried
    assert sorted(p.name for p in out.iterdir()) == ["one_overlay.png"]  # no JSON, lock or temporary file


ROOT = Path(litesam.__file__).parents[1]
TAKE_LOCK_AND_WAIT = (
    "import sys, time\n"
    "from litesam.utils.io import try_lock\n"
    "assert try_lock(sys.argv[1])\n"
    "print('locked', flush=True)\n"
    "time.sleep(600)\n"
)


@pytest.fixture()
def other_run():
    """``start(lock)``: another process that takes the lock file and keeps running, as a second
    ``litesam everything`` at work on that image; it is killed (as by kill -9) with ``.kill()`` or at the end
    of the test."""
    started: list[subprocess.Popen] = []

    def start(lock: Path) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-c", TAKE_LOCK_AND_WAIT, str(lock)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        started.append(process)
        assert process.stdout.readline() == "locked\n"
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_an_image_locked_by_a_live_run_is_left_to_it_and_a_killed_runs_lock_is_taken_over(
    tmp_path, folder, counted, capsys, other_run
):
    out = tmp_path / "out"
    lock = out / "one.json.lock"
    out.mkdir()
    other = other_run(lock)
    argv = ["everything", str(folder / "one.jpg"), str(folder / "two.png"), "-o", str(out), *GRID]
    assert main(argv) == 0
    assert len(counted) == 1 and not (out / "one.json").exists() and (out / "two.json").exists()
    assert lock.exists() and not (out / "two.json.lock").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert [r["status"] for r in summary["results"]] == ["in progress elsewhere", "done"]
    assert (summary["in_progress_elsewhere"], summary["done"], summary["in_folder"]) == (1, 1, ["two"])
    assert "0 done and 1 in progress by another run" in capsys.readouterr().out

    other.kill()
    other.wait()
    assert main(argv) == 0  # the lock of the dead run is taken over
    assert len(counted) == 2 and (out / "one.json").exists() and not lock.exists()
    summary = json.loads((out / "summary.json").read_text())
    assert [r["status"] for r in summary["results"]] == ["done", "skipped"]
    assert summary["in_folder"] == ["one", "two"]


def test_the_summary_shows_what_another_run_finished_meanwhile(tmp_path, folder, model, other_run):
    out = tmp_path / "out"
    out.mkdir()
    other_run(out / "one.json.lock")

    class OtherRunFinishesOneMeanwhile(litesam.MaskGenerator):
        def generate(self, image, **kwargs):
            Image.fromarray(photo(8, 8)).save(out / "one_overlay.png")
            (out / "one.json").write_text("{}")
            return super().generate(image, **kwargs)

    generator = OtherRunFinishesOneMeanwhile(model, points_per_side=2, output_mode="coco_rle")
    jobs = find_images([folder / "one.jpg", folder / "two.png"])
    summary = segment_everything(generator, jobs, out, progress=False)
    assert [r["status"] for r in summary["results"]] == ["done elsewhere", "done"]
    assert (summary["done_elsewhere"], summary["in_progress_elsewhere"]) == (1, 0)
    assert summary["in_folder"] == ["one", "two"]
    assert json.loads((out / "summary.json").read_text()) == summary


@pytest.mark.parametrize("command", ["everything", "edges"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0 and f"usage: litesam {command}" in capsys.readouterr().out


def torch_bool(mask: np.ndarray):
    import torch

    return torch.from_numpy(mask)[None]


def _everything_worker(rank: int, init: str, folder: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        generator = litesam.MaskGenerator(tiny_sam(), points_per_side=2, pred_iou_thresh=0,
                                          stability_score_thresh=0, output_mode="coco_rle")  # fmt: skip
        segment_everything(generator, find_images([folder]), out, progress=False, rank=dist.get_rank(),
                           world_size=dist.get_world_size())  # fmt: skip
    finally:
        dist.destroy_process_group()


def test_two_processes_split_the_images_and_write_one_summary(tmp_path, folder):
    import torch.multiprocessing as mp

    generator = litesam.MaskGenerator(tiny_sam(), points_per_side=2, pred_iou_thresh=0,
                                      stability_score_thresh=0, output_mode="coco_rle")  # fmt: skip
    single = segment_everything(generator, find_images([folder]), tmp_path / "one", progress=False)
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_everything_worker, args=(init, str(folder), str(tmp_path / "two")), nprocs=2, join=True)
    for name in ("one.json", "two.json"):
        assert json.loads((tmp_path / "two" / name).read_text()) == json.loads(
            (tmp_path / "one" / name).read_text()
        )
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    for key in ("images", "done", "failed", "masks", "in_folder"):
        assert summary[key] == single[key], key
    assert [r["image"] for r in summary["results"]] == [r["image"] for r in single["results"]]
