"""COCO box-prompted AP: known answers on a generated data set, agreement with pycocotools, resume, errors."""

import json

import numpy as np
import pytest
from eval_data import OBJECTS, BoxOracle, box_mask, make_coco, rle
from pycocotools.cocoeval import COCOeval

import litesam
from litesam.cli import main
from litesam.errors import InputError
from litesam.evaluation.coco import evaluate_coco, load_coco, read_detections
from litesam.evaluation.resume import ResultLog, log_path


@pytest.fixture
def dataset(tmp_path):
    return make_coco(tmp_path / "coco")


def evaluate(dataset, model, **kwargs):
    images, annotations = dataset
    return evaluate_coco(litesam.Predictor(model), load_coco(annotations), images, **kwargs)


def pycocotools_ap(annotations, results):
    """AP, AP50, AP75 of hand-made results, by pycocotools directly."""
    gt = load_coco(annotations)
    evaluator = COCOeval(gt, gt.loadRes(results), "segm")
    evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
    return evaluator.stats[:3]


def test_masks_that_fill_their_boxes_score_ap_one(dataset):
    model = BoxOracle()
    report = evaluate(dataset, model)
    assert report["metrics"]["AP"] == pytest.approx(1.0) and report["metrics"]["AP50"] == pytest.approx(1.0)
    assert report["metrics"]["APl"] is None  # no object over 96^2 pixels: nothing to measure
    assert report["images"] == 3 and report["instances"] == 6
    assert model.encodes == 3  # one embedding per image, its boxes decoded together


def test_a_model_that_returns_nothing_scores_zero(dataset):
    report = evaluate(dataset, BoxOracle(fraction=0.0))
    assert report["metrics"]["AP"] == 0.0 and report["metrics"]["AP50"] == 0.0


def test_partial_masks_score_what_pycocotools_gives_for_the_same_masks(dataset):
    # 72% of each box's width: IoU ~0.72, a match at IoU thresholds 0.50 .. 0.70 only -> AP = 5/10
    report = evaluate(dataset, BoxOracle(fraction=0.72))
    assert report["metrics"]["AP"] == pytest.approx(0.5)
    assert report["metrics"]["AP50"] == pytest.approx(1.0) and report["metrics"]["AP75"] == pytest.approx(0.0)
    results = [{"image_id": i, "category_id": c, "segmentation": rle(box_mask(x, y, w * 0.72, h)), "score": 1}
               for i, objs in OBJECTS.items() for c, x, y, w, h in objs]  # fmt: skip
    expected = pycocotools_ap(dataset[1], results)
    np.testing.assert_allclose([report["metrics"][k] for k in ("AP", "AP50", "AP75")], expected)


def test_detector_boxes_keep_their_scores_and_categories(dataset, tmp_path):
    # every true object found, plus a confident false positive and a wrong-category box
    detections = [{"image_id": i, "category_id": c, "bbox": [x, y, w, h], "score": 0.5}
                  for i, objs in OBJECTS.items() for c, x, y, w, h in objs]  # fmt: skip
    detections += [{"image_id": 1, "category_id": 1, "bbox": [40, 50, 10, 10], "score": 0.99},
                   {"image_id": 2, "category_id": 2, "bbox": [10, 30, 40, 24], "score": 0.7}]  # fmt: skip
    path = tmp_path / "detections.json"
    path.write_text(json.dumps(detections))
    images, annotations = dataset
    coco = load_coco(annotations)
    report = evaluate_coco(litesam.Predictor(BoxOracle()), coco, images, read_detections(path, coco))
    hand = [{**d, "segmentation": rle(box_mask(*d["bbox"]))} for d in detections]
    np.testing.assert_allclose([report["metrics"][k] for k in ("AP", "AP50", "AP75")],
                               pycocotools_ap(annotations, hand))  # fmt: skip
    assert report["metrics"]["AP"] < 1.0 and report["instances"] == 8


def test_limit_takes_the_first_images_by_id(dataset):
    report = evaluate(dataset, BoxOracle(), limit=2)
    assert report["images"] == 2 and report["instances"] == 3


def test_a_rerun_continues_from_the_log_and_drops_a_torn_line(dataset, tmp_path):
    path = tmp_path / "run.log.jsonl"
    first = evaluate(dataset, BoxOracle(), limit=2, log=ResultLog(path, {"model": "oracle"}))
    with open(path, "ab") as f:
        f.write(b'{"key": "3", "result": {"resu')  # a run killed mid-write
    model = BoxOracle()
    report = evaluate(dataset, model, log=ResultLog(path, {"model": "oracle"}))
    assert model.encodes == 1  # only image 3 was left
    assert report["metrics"]["AP"] == pytest.approx(1.0) and first["images"] == 2
    assert len(path.read_text().splitlines()) == 4  # header + 3 images, the torn line gone
    with pytest.raises(InputError, match="other settings.*model"):
        ResultLog(path, {"model": "another"})


def test_bad_inputs_are_one_line_errors(dataset, tmp_path):
    images, annotations = dataset
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(InputError, match="not COCO instances annotations"):
        load_coco(tmp_path / "list.json")
    data = json.loads(annotations.read_text())
    (tmp_path / "empty.json").write_text(json.dumps({**data, "annotations": []}))
    with pytest.raises(InputError, match="no annotations"):
        load_coco(tmp_path / "empty.json")
    with pytest.raises(InputError, match="not found"):
        load_coco(tmp_path / "missing.json")
    (images / "000000000002.png").unlink()
    with pytest.raises(InputError, match="1 of 3 annotated image.*missing.*000000000002.png"):
        evaluate(dataset, BoxOracle())
    coco = load_coco(annotations)
    (tmp_path / "dets.json").write_text(json.dumps([{"image_id": 9, "category_id": 1, "bbox": [0, 0, 1, 1],
                                                      "score": 1}]))  # fmt: skip
    with pytest.raises(InputError, match="image_id 9"):
        read_detections(tmp_path / "dets.json", coco)
    (tmp_path / "dets.json").write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 1, 1]}]))
    with pytest.raises(InputError, match="lacks"):
        read_detections(tmp_path / "dets.json", coco)


def test_cli_writes_a_resumable_json_report(dataset, tmp_path, monkeypatch, capsys):
    images, annotations = dataset
    monkeypatch.setattr(litesam, "build_model", lambda *a, **k: BoxOracle())
    out = tmp_path / "runs" / "oracle.json"
    argv = ["eval", "coco", "--model", "oracle", "--images", str(images), "--annotations", str(annotations),
            "--json", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["protocol"] == "coco" and report["model"] == "oracle"
    assert report["metrics"]["AP"] == pytest.approx(1.0) and "AP" in capsys.readouterr().out
    assert log_path(out).is_file()
    assert main([*argv[:-3], "--checkpoint", "other.pt", "--json", str(out)]) == 2
    assert "other settings" in capsys.readouterr().err
    (images / "000000000001.png").unlink()
    monkeypatch.setattr(litesam, "build_model", lambda *a, **k: pytest.fail("the model was built"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("litesam eval: error: 1 of 3 annotated image(s) missing") and err.count("\n") == 1


def test_processes_share_the_images_and_their_logs_make_one_report(dataset, tmp_path, monkeypatch, capsys):
    # torchrun's processes, one after the other: each segments every 2nd image into its own log, and the
    # last (rank 0) reads the other's log, so its report covers every image and nothing is done twice.
    images, annotations = dataset
    models = []

    def build(*args, **kwargs):
        models.append(BoxOracle())
        return models[-1]

    monkeypatch.setattr(litesam, "build_model", build)
    out = tmp_path / "oracle.json"
    argv = ["eval", "coco", "--model", "oracle", "--images", str(images), "--annotations", str(annotations),
            "--json", str(out), "--no-progress"]  # fmt: skip
    for rank in (1, 0):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setattr("litesam.utils.parallel.join_process_group", lambda device, r=rank: (r, 2, "cpu"))
        assert main(argv) == 0
    assert [m.encodes for m in models] == [1, 2]  # 3 images: ids 1 and 3 to rank 0, id 2 to rank 1
    report = json.loads(out.read_text())
    assert report["images"] == 3 and report["metrics"]["AP"] == pytest.approx(1.0)
    assert log_path(out).with_name(log_path(out).stem + ".rank1.jsonl").is_file()
