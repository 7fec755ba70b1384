"""Segment everything: box prompts, folder runs (JSON, overlays, summary, resume, corrupt images), CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import photo, tiny_sam
from PIL import Image

import litesam
from litesam import Predictor
from litesam.cli import main
from litesam.everything import ImageJob, boxes_for, find_images, read_boxes, segmentation_mask
from litesam.utils.amg import masks_to_boxes

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
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
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
    ],
)
def test_bad_boxes_files_get_a_clear_error(tmp_path, text, message):
    path = tmp_path / "boxes.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
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


def test_boxes_file_on_the_command_line(tmp_path, folder, counted):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"one.jpg": [{"bbox": [5, 5, 30, 20]}, {"bbox": [40, 10, 30, 40]}]}))
    out = tmp_path / "out"
    argv = ["everything", str(folder / "one.jpg"), "-o", str(out), "--boxes", str(boxes), *GRID]
    assert main(argv + ["--box-nms-thresh", "1"]) == 0
    doc = json.loads((out / "one.json").read_text())
    assert sorted(a["point_coords"] for a in doc["annotations"]) == [[[20, 15]], [[55, 30]]]  # box centres
    boxes.write_text('[{"bbox": [1, 2]}]')
    assert main(argv) == 2  # a malformed boxes file stops before any work


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


@pytest.mark.parametrize("command", ["everything", "edges"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0 and f"usage: litesam {command}" in capsys.readouterr().out


def torch_bool(mask: np.ndarray):
    import torch

    return torch.from_numpy(mask)[None]
