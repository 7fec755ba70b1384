"""ONNX / OpenVINO export, the onnxruntime and openvino backends, and ``litesam bench``.

Small models throughout (a 256-pixel tiny SAM: 16x16 embeddings), so every export takes a second or two.
Tolerances: exported graphs compute in float32 like torch but in another order: features within 1e-4,
low-res logits within 1e-3 (values of order 1-10), scores within 1e-4.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import photo, tiny_sam
from PIL import Image

import litesam
from litesam import MaskGenerator, Predictor, Prompts
from litesam.build import prepare_for_inference
from litesam.cli import main
from litesam.errors import InputError, MissingDependency
from litesam.export import export_onnx, export_openvino
from litesam.export.onnx import export_official_decoder
from litesam.modeling import Sam

OFFICIAL_INPUTS = ["point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size"]

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[1]
SIZE = 256  # encoder input of the test model
FEATURES_ATOL, LOGITS_ATOL, SCORES_ATOL = 1e-4, 1e-3, 1e-4


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One $LITESAM_HOME for the module: backends share their cached exports."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("home")
        mp.setenv("LITESAM_HOME", str(path))
        yield path


@pytest.fixture(scope="module")
def model():
    return tiny_sam(image_size=SIZE)


@pytest.fixture(scope="module")
def image():
    return photo(120, 160)


@pytest.fixture(scope="module")
def reference(model, image):
    predictor = Predictor(model)
    predictor.set_image(image)
    return predictor


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("onnx"), quantize="int8")


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _official_inputs(model, image, embeddings, points, labels, box=None, mask=None):
    """The official decoder's inputs as its notebook builds them: coordinates through the transform,
    a box as two points labelled 2 and 3, else a padding point (0, 0) labelled -1."""
    coords = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    labels = np.asarray(labels, dtype=np.float32).reshape(-1)
    if box is not None:
        coords = np.concatenate([coords, np.asarray(box, dtype=np.float64).reshape(2, 2)])
        labels = np.concatenate([labels, [2, 3]]).astype(np.float32)
    else:
        coords = np.concatenate([coords, [[0.0, 0.0]]])
        labels = np.concatenate([labels, [-1]]).astype(np.float32)
    frame = model.transform.apply_coords(coords, image.shape[:2])
    side = 4 * embeddings.shape[-1]
    return {
        "image_embeddings": embeddings,
        "point_coords": frame[None].astype(np.float32),
        "point_labels": labels[None],
        "mask_input": np.zeros((1, 1, side, side), np.float32)
        if mask is None
        else mask[None].astype(np.float32),
        "has_mask_input": np.array([0.0 if mask is None else 1.0], np.float32),
        "orig_im_size": np.array(image.shape[:2], np.float32),
    }


def test_export_writes_checked_encoder_and_official_decoder(exported):
    import onnx

    assert {"encoder", "decoder", "encoder_int8", "meta"} <= set(exported)
    decoder = onnx.load(str(exported["decoder"]))
    inputs = {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in decoder.graph.input
    }
    assert list(inputs) == ["image_embeddings", *OFFICIAL_INPUTS]
    assert inputs["point_coords"] == [1, "num_points", 2] and inputs["point_labels"] == [1, "num_points"]
    assert inputs["mask_input"] == [1, 1, 4 * SIZE // 16, 4 * SIZE // 16]
    assert [o.name for o in decoder.graph.output] == ["masks", "iou_predictions", "low_res_masks"]
    meta = json.loads(exported["meta"].read_text())
    assert meta["features"] == {"image_embeddings": [1, 256, SIZE // 16, SIZE // 16]}


def test_onnx_encoder_and_official_decoder_equal_the_torch_predictor(model, image, reference, exported):
    (embeddings,) = _session(exported["encoder"]).run(
        None, {"image": model.transform.to_input(image).numpy()}
    )
    np.testing.assert_allclose(embeddings, reference.features.numpy(), atol=FEATURES_ATOL)
    decoder = _session(exported["decoder"])
    cases = [  # (points, labels, box, multimask token slice): 1 point, 3 points, points + box
        ([[40, 50]], [1], None),
        ([[40, 50], [100, 30], [20, 90]], [1, 0, 1], None),
        ([[60, 60]], [1], [30, 20, 110, 100]),
    ]
    for points, labels, box in cases:
        masks, iou, low_res = decoder.run(
            None, _official_inputs(model, image, embeddings, points, labels, box)
        )
        assert masks.shape == (1, 4, *image.shape[:2])  # every mask token, at the original size
        for multimask, tokens in ((True, slice(1, None)), (False, slice(0, 1))):
            want, scores, want_low = reference.predict(points, labels, box, multimask_output=multimask,
                                                       return_logits=True)  # fmt: skip
            np.testing.assert_allclose(low_res[0, tokens], want_low, atol=LOGITS_ATOL)
            np.testing.assert_allclose(masks[0, tokens], want, atol=LOGITS_ATOL)
            np.testing.assert_allclose(iou[0, tokens], scores, atol=SCORES_ATOL)
    # a previous low-res mask as mask_input (has_mask_input = 1)
    previous = reference.predict([[40, 50]], [1], multimask_output=False)[2]
    feeds = _official_inputs(model, image, embeddings, [[40, 50]], [1], mask=previous)
    _, iou, low_res = decoder.run(None, feeds)
    want_low = reference.predict([[40, 50]], [1], mask_input=previous, multimask_output=False)[2]
    np.testing.assert_allclose(low_res[0, :1], want_low, atol=LOGITS_ATOL)


def test_return_single_mask_picks_as_the_official_graph(model, image, reference, tmp_path):
    embeddings = reference.features.numpy()
    export_official_decoder(
        model, tmp_path / "decoder.onnx", {"image_embeddings": list(embeddings.shape)}, True
    )
    decoder = _session(tmp_path / "decoder.onnx")
    # one click (+ padding = 2 points): the best of the multimask outputs
    masks, iou, low_res = decoder.run(None, _official_inputs(model, image, embeddings, [[40, 50]], [1]))
    _, scores, multi = reference.predict([[40, 50]], [1], multimask_output=True)
    assert masks.shape == (1, 1, *image.shape[:2])
    np.testing.assert_allclose(low_res[0, 0], multi[scores.argmax()], atol=LOGITS_ATOL)
    # three clicks (+ padding): token 0, the single-mask output
    points, labels = [[40, 50], [100, 30], [20, 90]], [1, 0, 1]
    _, iou, low_res = decoder.run(None, _official_inputs(model, image, embeddings, points, labels))
    single = reference.predict(points, labels, multimask_output=False)[2]
    np.testing.assert_allclose(low_res[0], single, atol=LOGITS_ATOL)


HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
BACKENDS = [
    "onnxruntime",
    pytest.param("openvino", marks=pytest.mark.skipif(not HAS_OPENVINO, reason="no openvino")),
]
PROMPTS = {  # two prompt kinds: one decoder graph each, any number of prompts and points
    "one point": (Prompts.single([[40, 50]], [1]), True),
    "three points": (Prompts.single([[40, 50], [100, 30], [20, 90]], [1, 0, 1]), True),
    "two sets of a point and a box": (
        Prompts.batch([[[60, 60]], [[10, 20]]], [[1], [0]], boxes=[[30, 20, 110, 100], [0, 0, 150, 110]]),
        False,
    ),
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_match_torch(home, model, image, reference, backend):
    predictor = Predictor(model, backend=backend)
    state = predictor.encode(image)
    np.testing.assert_allclose(state.image_embeddings, reference.features, atol=FEATURES_ATOL)
    for name, (prompts, multimask) in PROMPTS.items():
        got = predictor.decode(state, prompts, multimask)
        want = reference.decode(reference.state, prompts, multimask)
        assert got.low_res.shape == want.low_res.shape, name
        torch.testing.assert_close(got.low_res, want.low_res, atol=LOGITS_ATOL, rtol=0, msg=name)
        torch.testing.assert_close(got.scores, want.scores, atol=SCORES_ATOL, rtol=0, msg=name)
    # the drop-in interface: masks over the original image
    predictor.set_image(image)
    masks, scores, _ = predictor.predict([[40, 50]], [1])
    want_masks, want_scores, _ = reference.predict([[40, 50]], [1])
    assert (masks != want_masks).mean() < 1e-3
    np.testing.assert_allclose(scores, want_scores, atol=SCORES_ATOL)


def test_exports_are_cached_once_per_model_and_kind(home, model, image, monkeypatch):
    first = Predictor(model, backend="onnxruntime")
    first.decode(first.encode(image), *PROMPTS["one point"])
    folder = first.backend.folder
    assert folder.parent == home / "runtimes"

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    again = Predictor(model, backend="onnxruntime")  # cache hit: encoder and decoder files reused
    assert again.backend.folder == folder
    again.decode(again.encode(image), *PROMPTS["three points"])  # same prompt kind: same graph
    other = tiny_sam(seed=1, image_size=SIZE)  # other weights: another cache folder, exported anew
    with pytest.raises(AssertionError, match="exported again"):
        Predictor(other, backend="onnxruntime")


class FrozenBatchSam(Sam):
    """A model whose decode turns the number of prompts into a Python number: tracing freezes it."""

    def decode(self, features, prompts, multimask_output=True, min_score=None):
        low_res, scores = super().decode(features, prompts, multimask_output, min_score)
        return low_res.reshape(len(prompts.points), -1, *low_res.shape[-2:]), scores


def test_a_decoder_that_freezes_a_prompt_count_is_refused(home, image):
    tiny = tiny_sam(image_size=SIZE)
    model = FrozenBatchSam(tiny.image_encoder, tiny.prompt_encoder, tiny.mask_decoder, tiny.transform)
    predictor = Predictor(model, backend="onnxruntime")
    with pytest.raises(InputError, match="does not take other numbers of prompts"):
        predictor.decode(predictor.encode(image), *PROMPTS["one point"])
    assert not list(predictor.backend.folder.glob("decode-*.onnx"))  # not cached


def test_int8_encoder_runs_close_to_fp32(home, model, image, reference):
    state = Predictor(model, backend="onnxruntime", precision="int8").encode(image)
    error = (state.image_embeddings - reference.features).norm() / reference.features.norm()
    assert 0 < error < 0.1


def test_mask_generator_on_a_backend(home, model, image):
    """A model prepared for inference (its fast paths branch on shapes in Python) exports its reference
    paths: the graph takes a batch of 9 prompts though traced with 2."""
    fused = prepare_for_inference(copy.deepcopy(model))
    settings = dict(points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    want = MaskGenerator(fused, **settings).generate(image)
    got = MaskGenerator(fused, backend="onnxruntime", **settings).generate(image)
    assert len(got) == len(want) > 0
    for a, b in zip(got, want, strict=True):
        assert (a["segmentation"] != b["segmentation"]).mean() < 1e-3
        assert a["predicted_iou"] == pytest.approx(b["predicted_iou"], abs=SCORES_ATOL)


def test_a_fixture_model_matches_on_onnxruntime(home):
    """EfficientViT-SAM-L0 (512 px encoder, 1024 px prompt frame) with the fixtures' weights on
    onnxruntime meets the official outputs' tolerances (one and two points: one decoder graph, any
    number of points)."""
    from fixture_cases import assert_case_matches, predictor_for, require_fixture

    fixture = require_fixture("efficientvit_sam_l0")
    reference = predictor_for(fixture, "efficientvit_sam_l0")
    predictor = Predictor(reference.model, backend="onnxruntime")
    predictor.set_image(fixture.image_path)
    np.testing.assert_allclose(
        predictor.features, reference.features, atol=fixture.tolerance["features_atol"]
    )
    for name in ("a_point", "c_two_points"):
        assert_case_matches(predictor, fixture, fixture.case(name))


def test_missing_runtime_is_a_one_line_error_naming_the_extra(model, monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a)
    )
    with pytest.raises(MissingDependency, match=r"litesam\[openvino\]"):
        Predictor(model, backend="openvino")
    with pytest.raises(MissingDependency, match=r"litesam\[openvino\]"):
        export_openvino(model, tmp_path)


def test_user_mistakes_are_input_errors(model, image):
    with pytest.raises(InputError, match="unknown backend"):
        Predictor(model, backend="tensorrt")
    with pytest.raises(InputError, match="int8"):
        Predictor(model, backend="onnxruntime", precision="bf16")
    with pytest.raises(InputError, match="build_model"):
        Predictor(model, precision="int8")


def test_requires_grad_needs_the_torch_backend(home, model, image):
    predictor = Predictor(model, backend="onnxruntime")
    with pytest.raises(InputError, match="torch backend"):
        predictor.decode(predictor.encode(image), PROMPTS["one point"][0], requires_grad=True)


def test_instance_segmenters_do_not_export(tmp_path, capsys):
    fastsam = litesam.build_model("fastsam_s")
    with pytest.raises(InputError, match="instance segmenter"):
        export_onnx(fastsam, tmp_path)
    assert main(["export", "fastsam_s", "--checkpoint", "auto", "-o", str(tmp_path)]) == 2
    assert "only promptable models export" in capsys.readouterr().err


@pytest.fixture(scope="module")
def registered(model, tmp_path_factory):
    """The test model in the registry, as ``tiny_test_sam``, with a checkpoint file."""
    spec = litesam.ModelSpec(
        "tiny_test_sam",
        build=lambda transform: tiny_sam(image_size=SIZE),
        source="tests",
        transform=model.transform,
    )
    litesam.register_model(spec, replace=True)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(model.state_dict(), path)
    return path


def test_cli_export_onnx_and_openvino(registered, tmp_path, capsys):
    assert (
        main(["export", "tiny_test_sam", "--checkpoint", str(registered), "-o", str(tmp_path / "onnx")]) == 0
    )
    assert {p.name for p in (tmp_path / "onnx").iterdir()} == {"encoder.onnx", "decoder.onnx", "export.json"}
    if not HAS_OPENVINO:
        return
    out = tmp_path / "ov"
    assert main(["export", "tiny_test_sam", "--checkpoint", str(registered), "-o", str(out), "--format",
                 "openvino", "--precision", "bf16"]) == 0  # fmt: skip
    assert {"encoder.xml", "encoder.bin", "decoder.xml", "decoder.bin", "export.json"} <= {
        p.name for p in out.iterdir()
    }
    assert json.loads((out / "export.json").read_text())["inference_precision_hint"] == "bf16"


def test_cli_segment_on_a_backend(home, registered, tmp_path, capsys):
    image = tmp_path / "photo.png"
    Image.fromarray(photo(90, 130)).save(image)
    argv = [
        "segment",
        str(image),
        "--model",
        "tiny_test_sam",
        "--checkpoint",
        str(registered),
        "--point",
        "40,40",
    ]
    assert main([*argv, "--backend", "onnxruntime", "-o", str(tmp_path / "a")]) == 0
    assert main([*argv, "-o", str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / d / "photo.json").read_text())["masks"][0] for d in "ab")
    assert a["score"] == pytest.approx(b["score"], abs=SCORES_ATOL)


def test_bench_writes_a_record_with_every_field(registered, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec  # no runtimes installed: the peers are skipped, the run goes on
    missing = ("onnxruntime", "openvino")
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a)
    )
    out = tmp_path / "bench.json"
    argv = ["bench", "--model", "tiny_test_sam", "--repeat", "1", "--warmup", "0", "--points-per-side", "2",
            "--matmul-size", "128", "--peers", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    record = json.loads(out.read_text())
    assert record["random_weights"] is True and record["model"] == "tiny_test_sam"
    assert record["matmul_peak_gflops"]["fp32"] > 0 and record["flops"]["encoder"] > 0
    (row,) = record["rows"]
    assert row["label"] == "litesam torch fp32" and row["peak_rss_mib"] > 0
    for task in ("encoder", "decode", "everything"):
        timing = row[task]
        assert timing["min_s"] <= timing["median_s"] <= timing["max_s"] and len(timing["runs_s"]) == 1
        assert timing["gflops_per_s"] > 0 and timing["peak_fraction"] > 0
    skipped = {s["label"]: s["reason"] for s in record["skipped"]}
    assert "no official implementation" in skipped["official torch fp32"]
    assert "litesam[onnx]" in skipped["onnxruntime fp32"] and "litesam[openvino]" in skipped["openvino bf16"]
    printed = capsys.readouterr().out
    assert "random weights" in printed and "litesam torch fp32" in printed and "x peer" in printed
    # benchmarks/README.md and its plot from the records
    make_readme = runpy.run_path(str(REPO / "benchmarks" / "make_readme.py"))["main"]
    assert make_readme([str(out), "-o", str(tmp_path / "README.md")]) == 0
    text = (tmp_path / "README.md").read_text()
    assert "### tiny_test_sam" in text and "| litesam torch fp32 | fp32 |" in text and "skipped" in text
    assert Image.open(tmp_path / "latency.png").size == (960, 520)


def test_auto_picks_the_fastest_agreeing_setting_and_remembers_it(home, model, image, monkeypatch):
    from litesam.runtimes import auto

    choice = auto.choose_backend(model)
    rows = {(m.backend, m.precision): m for m in choice.measured}
    assert rows[("torch", None)].lowest_iou == 1.0 and ("onnxruntime", "fp32") in rows
    fine = [m for m in choice.measured if m.skipped is None and m.lowest_iou >= auto.AGREEMENT]
    assert (choice.backend, choice.precision) == min((m.seconds, m.backend, m.precision) for m in fine)[1:]
    assert rows[("onnxruntime", "fp32")].lowest_iou >= 0.99  # float32 in another order: same masks
    # measured once per machine: the next model with these weights reads the choice
    monkeypatch.setattr(auto, "measure", lambda *a, **k: pytest.fail("measured again"))
    predictor = Predictor(copy.deepcopy(model), backend="auto")
    assert getattr(predictor.backend, "name", "torch") == choice.backend  # torch: the model, unnamed
    predictor.set_image(image)
    masks, _, _ = predictor.predict([[40, 50]], [1])
    assert masks.shape == (3, 120, 160)


def test_auto_never_picks_a_setting_whose_masks_disagree(home, model, monkeypatch):
    from litesam.runtimes import auto

    fast_and_wrong = [
        auto.Measured("torch", None, encode_s=1.0, decode_s=0.1, lowest_iou=1.0),
        auto.Measured("onnxruntime", "int8", encode_s=0.1, decode_s=0.01, lowest_iou=0.5),
        auto.Measured("openvino", "fp32", encode_s=0.9, decode_s=0.1, lowest_iou=0.999),
        auto.Measured("openvino", "int8", skipped="nncf is not installed"),
    ]
    monkeypatch.setattr(auto, "measure", lambda model, settings: fast_and_wrong)
    settings = [(m.backend, m.precision) for m in fast_and_wrong]
    choice = auto.choose_backend(model, settings=settings, refresh=True)
    assert (choice.backend, choice.precision) == ("openvino", "fp32")
    assert auto.choose_backend(model, agreement=0.4, settings=settings).backend == "onnxruntime"
    with pytest.raises(InputError, match="chooses the precision too"):
        Predictor(model, backend="auto", precision="int8")


def test_x_peer_compares_with_the_fastest_peer_setting_also_when_litesam_ran_it():
    from litesam.bench.report import ratios

    def row(label, group, backend, seconds):
        return {"label": label, "group": group, "backend": backend, "precision": "fp32", "ran": "fp32",
                "encoder": {"median_s": seconds}}  # fmt: skip

    record = {"rows": [row("litesam torch fp32", "litesam", "torch", 1.0),
                       row("litesam openvino fp32", "litesam", "openvino", 0.8),  # OpenVINO's own setting
                       row("official torch fp32", "peer", "official", 2.0)]}  # fmt: skip
    x_peer = ratios(record)
    assert x_peer["litesam torch fp32"]["encoder"] == 1.25
    assert x_peer["official torch fp32"]["encoder"] == 2.5
