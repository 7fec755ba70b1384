"""TAP (tokenize-anything) reproduces the official outputs (../shared/fixtures/parity/tap_vit_b).

The fixture's weights are written as the official release is, a pickled OrderedDict of numpy arrays
(every key of the official ``ImageTokenizer``, caption decoder included), and read by ``build_model``
through the real loader: the restricted array unpickler, the registry's key conversion, the strict load.
Every prompt case must give the official embedding, low-res logits, scores and masks; the raw decoder
outputs (all four mask tokens, the semantic tokens and embeddings, the official token choice) must match
too. The CLI segments with that file, the mask generator runs on TAP, and a malicious pickle in place of
the file is refused without running.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import pickle

import numpy as np
import pytest
import torch
from fixture_cases import (
    Fixture,
    assert_allclose,
    assert_case_matches,
    assert_masks_match,
    parity_weights,
    require_fixture,
)
from PIL import Image

import litesam
from litesam.checkpoint import CheckpointError, read_state_dict
from litesam.cli import main
from litesam.modeling.fuse import fuse_modules
from litesam.modeling.tap import PAD_LABEL, select_mask_token, tap_points
from litesam.modeling.tap_encoder import RelPosBias, TapImageEncoder
from litesam.prompts import Prompts

MODEL = "tap_vit_b"


def official_state(fixture: Fixture) -> dict[str, np.ndarray]:
    """The official key set filled by the fixtures' rule (integer buffers as the official model builds
    them: the relative-position index; BatchNorm counters 0), as numpy arrays."""
    integer = {r["key"]: r["shape"] for r in fixture.meta["state_dict"] if r["dtype"] == "int64"}
    shapes = fixture.official_state_dict_shapes
    state = parity_weights().fill_state_dict(
        {k: torch.zeros(s, dtype=torch.long if k in integer else torch.float32) for k, s in shapes.items()}
    )
    index = RelPosBias.relative_index(16)
    for key in integer:
        if key.endswith("rel_pos_embed.index"):
            state[key] = index
    return collections.OrderedDict((k, v.numpy()) for k, v in state.items())


@pytest.fixture(scope="module")
def official_file(tmp_path_factory) -> str:
    """The fixture's weights in the released layout: ``pickle.dump`` of name -> numpy array."""
    fixture = require_fixture(MODEL)
    path = tmp_path_factory.mktemp("tap") / "tap_vit_b_v1_1.pkl"
    with open(path, "wb") as f:
        pickle.dump(official_state(fixture), f, protocol=pickle.HIGHEST_PROTOCOL)
    return str(path)


@pytest.fixture(scope="module")
def tap_run(official_file) -> tuple[Fixture, litesam.Predictor]:
    fixture = require_fixture(MODEL)
    predictor = litesam.Predictor(litesam.build_model(MODEL, checkpoint=official_file, fuse=False))
    predictor.set_image(fixture.image_path)
    yield fixture, predictor
    predictor.reset_image()


def frame_prompts(predictor: litesam.Predictor, case: dict) -> Prompts:
    """The case's prompts in the prompt frame, as the predictor gives them to the model; batched cases
    are one prompt per box / per point (the official demo's batch mode)."""
    if case["name"] == "f_batched_points":
        prompts = Prompts.batch(
            np.array(case["point_coords"])[:, None], np.array(case["point_labels"])[:, None]
        )
    elif case["box"] is not None and np.ndim(case["box"]) == 2:
        prompts = Prompts.batch(boxes=case["box"])
    else:
        prompts = Prompts.single(case["point_coords"], case["point_labels"], case["box"])
    return predictor.state.transform.apply_prompts(prompts, predictor.original_size)


def test_official_keys_load_strictly_and_only_the_caption_decoder_is_left_out(tap_run):
    """The official keys, converted (SAM's names inside the decoder), are exactly the model's; left out:
    the caption decoder and the relative-position index buffers (recomputed). Own keys pass unchanged."""
    fixture, predictor = tap_run
    spec = litesam.get_spec(MODEL)
    official = {k: torch.empty(s) for k, s in fixture.official_state_dict_shapes.items()}
    converted = spec.convert(official)
    ours = {k: tuple(v.shape) for k, v in predictor.model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours
    assert spec.convert(predictor.model.state_dict()).keys() == ours.keys()
    left_out = [k for k in official if k.startswith("text_decoder.") or k.endswith(".rel_pos_embed.index")]
    assert len(converted) == len(official) - len(left_out)


def test_preprocessing_reproduces_the_official_input_bit_for_bit(tap_run):
    """Resized with PIL, padded with the uint8 mean pixel (the official uint8 batch), then normalised in
    BGR by the checkpoint's pixel_mean / pixel_rsig (the official float32 encoder input)."""
    fixture, predictor = tap_run
    pre = fixture.meta["preprocessing"]
    pixels = predictor.model.transform.to_input(np.asarray(Image.open(fixture.image_path).convert("RGB")))
    bgr_batch = pixels.flip(1).permute(0, 2, 3, 1).to(torch.uint8).numpy()
    assert hashlib.sha256(bgr_batch.tobytes()).hexdigest() == pre["img_batch_uint8_sha256"]
    x = predictor.model.normalize(pixels).contiguous().numpy()
    assert hashlib.sha256(x.tobytes()).hexdigest() == pre["encoder_input"]["sha256_float32_nchw_c_order"]


def test_image_embedding_matches_official(tap_run):
    fixture, predictor = tap_run
    assert predictor.original_size == tuple(fixture.index["original_size"])
    assert predictor.input_size == tuple(fixture.meta["input_size"])
    assert_allclose(
        predictor.get_image_embedding(), fixture.features, fixture.tolerance["features_atol"], "features"
    )


@pytest.mark.parametrize("name", ["a_point", "b_box", "c_points_fg_bg", "d_box_point", "e_points_sketch",
                                  "f_batched_boxes", "f_batched_points"])  # fmt: skip
def test_prompt_case_matches_official(tap_run, name):
    """One mask per prompt as the official demo chooses it (box: token 0; points: best of 1-3)."""
    fixture, predictor = tap_run
    case = fixture.case(name)
    if name != "f_batched_points":
        assert_case_matches(predictor, fixture, case)
        return
    coords, labels = np.array(case["point_coords"]), np.array(case["point_labels"])
    masks, scores, logits = predictor.predict_batch(coords[:, None], labels[:, None], multimask_output=False)
    tol = fixture.tolerance
    assert_allclose(logits, fixture.expected(case, "low_res_logits"), tol["low_res_logits_atol"], "logits")
    assert_allclose(scores, fixture.expected(case, "iou_predictions"), tol["iou_atol"], "scores")
    assert_masks_match(masks, fixture.expected(case, "masks"), tol["mask_mismatch_max_fraction"], "masks")


def test_every_case_of_the_fixture_is_covered(tap_run):
    fixture, _ = tap_run
    params = test_prompt_case_matches_official.pytestmark[0].args[1]
    assert sorted(params) == sorted(c["name"] for c in fixture.cases)


def _sem_atol(fixture: Fixture, what: str) -> float:
    """4x the largest difference of the fixture's variant runs (1 thread, plain attention, float64)."""
    variants = fixture.meta["nondeterminism"]["variants"].values()
    return max(1e-4, 4 * max(v["summary"][f"{what}_max_abs_diff"] for v in variants))


def test_raw_outputs_semantic_tokens_and_token_choice_match_official(tap_run):
    """``tokenize``: all four mask tokens' logits and scores, the semantic tokens (4x256) and their
    1024-d embeddings, and the official choice of one token."""
    fixture, predictor = tap_run
    tol = fixture.tolerance
    for case in fixture.cases:
        name, raw = case["name"], fixture.meta["prompt_cases"][case["name"]]["raw_arrays"]
        with torch.inference_mode():
            out = predictor.model.tokenize(predictor.state.features, frame_prompts(predictor, case))
        arrays = fixture.arrays
        assert_allclose(out["iou_pred"], arrays[raw["iou_pred"]], tol["iou_atol"], f"{name} iou_pred")
        if raw["mask_pred"] is not None:
            expected = arrays[raw["mask_pred"]]
            assert_allclose(out["mask_pred"], expected, tol["low_res_logits_atol"], f"{name} mask_pred")
        sem_tokens = out["sem_tokens"][:, :, None]  # official Bx4x1xC
        assert_allclose(
            sem_tokens, arrays[raw["sem_tokens"]], _sem_atol(fixture, "sem_tokens"), f"{name} sem"
        )
        assert_allclose(
            out["sem_embeds"], arrays[raw["sem_embeds"]], _sem_atol(fixture, "sem_embeds"), f"{name} embeds"
        )
        assert out["selected"].tolist() == arrays[raw["selected_index"]].tolist()


def test_prompts_map_to_the_official_point_list(tap_run):
    """Every case's prompts become the official ``inputs["points"]`` (x, y, label) in the input frame:
    box corners (2, 3) first, then the points, then the pad point (0, 0, 4) unless there is a box."""
    fixture, predictor = tap_run
    for case in fixture.cases:
        coords, labels = tap_points(frame_prompts(predictor, case))
        expected = np.array(fixture.meta["prompt_cases"][case["name"]]["tap_points_input_frame_float32"])
        assert labels.tolist() == expected[..., 2].astype(int).tolist(), case["name"]
        assert_allclose(coords, expected[..., :2], 1e-3, f"{case['name']} coords")


def test_points_get_a_pad_point_boxes_none_and_mask_prompts_are_refused():
    coords, labels = tap_points(Prompts.batch([[[10.0, 20.0], [3.0, 4.0]]], [[1, 0]]))
    assert labels.tolist() == [[1, 0, PAD_LABEL]] and coords[0, 2].tolist() == [0.0, 0.0]
    coords, labels = tap_points(Prompts.single([[5, 6]], [1], box=[1, 2, 30, 40]))
    assert labels.tolist() == [[2, 3, 1]] and coords.tolist() == [[[1, 2], [30, 40], [5, 6]]]
    with pytest.raises(litesam.InputError, match="no mask prompt"):
        tap_points(Prompts.single([[1, 1]], [1], mask_input=np.zeros((1, 256, 256))))


def test_one_mask_per_prompt_is_the_official_choice():
    iou = torch.tensor([[9.0, 0.1, 0.7, 0.3], [-5.0, 0.2, 0.1, 0.4]])
    assert select_mask_token(iou, boxed=False).tolist() == [2, 3]
    assert select_mask_token(iou, boxed=True).tolist() == [0, 0]


def test_multimask_gives_three_masks_for_points_and_one_for_boxes(tap_run):
    fixture, predictor = tap_run
    case = fixture.case("a_point")
    masks, scores, logits = predictor.predict(
        case["point_coords"], case["point_labels"], multimask_output=True
    )
    raw = fixture.arrays[fixture.meta["prompt_cases"]["a_point"]["raw_arrays"]["iou_pred"]]
    assert masks.shape == (3, 770, 769) and logits.shape == (3, 256, 256)
    assert_allclose(scores, raw[0, 1:], fixture.tolerance["iou_atol"], "multimask scores")
    masks, scores, _ = predictor.predict(box=fixture.case("b_box")["box"], multimask_output=True)
    assert masks.shape == (1, 770, 769)


def test_mask_generator_runs_on_tap(tap_run):
    fixture, predictor = tap_run
    generator = litesam.MaskGenerator(predictor.model, points_per_side=2, pred_iou_thresh=-1e9,
                                      stability_score_thresh=0.0)  # fmt: skip
    records = generator.generate(np.asarray(Image.open(fixture.image_path).convert("RGB")))
    assert records and all(r["segmentation"].shape == (770, 769) for r in records)


def test_cli_segments_with_the_official_file_fused(tap_run, official_file, tmp_path, capsys):
    """``litesam segment --model tap_vit_b --checkpoint tap_vit_b_v1_1.pkl`` (BatchNorms folded)."""
    fixture, _ = tap_run
    case = fixture.case("b_box")
    out = tmp_path / "out"
    box = ",".join(str(v) for v in case["box"])
    argv = ["segment", str(fixture.image_path), "--model", MODEL, "--checkpoint", official_file,
            "--box", box, "-o", str(out)]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / f"{fixture.image_path.stem}.json").read_text())
    assert summary["model"] == MODEL and len(summary["masks"]) == 1
    mask = np.asarray(Image.open(out / summary["masks"][0]["file"])) > 0
    expected = fixture.expected(case, "masks")[0]
    assert_masks_match(mask, expected, fixture.tolerance["mask_mismatch_max_fraction"], "cli mask")


def test_a_malicious_pickle_in_place_of_the_tap_file_is_refused(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "tap_vit_b_v1_1.pkl"
    path.write_bytes(pickle.dumps(collections.OrderedDict(a=np.zeros(2), b=Payload()), protocol=4))
    with pytest.raises(CheckpointError, match="refusing the global"):
        litesam.build_model(MODEL, checkpoint=path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_array_pickles_of_every_protocol_are_read_as_tensors(tmp_path, protocol):
    arrays = collections.OrderedDict(w=np.arange(6, dtype=np.float16).reshape(2, 3), i=np.arange(4))
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps(arrays, protocol=protocol))
    state = read_state_dict(path)
    assert state.keys() == arrays.keys()
    assert state["w"].dtype == torch.float16 and state["w"].tolist() == arrays["w"].tolist()
    assert state["i"].tolist() == [0, 1, 2, 3]


def test_pickles_of_python_objects_are_refused(tmp_path):
    path = tmp_path / "objects.pkl"
    path.write_bytes(pickle.dumps({"w": np.array([1, "x"], dtype=object)}, protocol=2))
    with pytest.raises(CheckpointError, match="Python objects"):
        read_state_dict(path)
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    with pytest.raises(CheckpointError, match="not a mapping of names to numeric arrays"):
        read_state_dict(path)


def test_a_file_without_the_index_buffers_loads_too():
    """Checkpoints written from the official key list without integer buffers still load strictly."""
    fixture = require_fixture(MODEL)
    spec = litesam.get_spec(MODEL)
    with torch.device("meta"):
        model = spec.instantiate()
        official = {k: torch.empty(s) for k, s in fixture.official_state_dict_shapes.items()}
    state = spec.convert({k: v for k, v in official.items() if not k.endswith(".index")})
    assert state.keys() == model.state_dict().keys()


def test_fusing_folds_every_batchnorm_of_the_encoder_and_keeps_its_output():
    torch.manual_seed(0)
    encoder = TapImageEncoder(depth=4, embed_dim=64, num_heads=2, image_size=256).eval()
    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.normal_()
            module.bias.data.normal_()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        reference = encoder(x)
        fuse_modules(encoder)
        fused = encoder(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.modules())
    assert_allclose(fused, reference.numpy(), 1e-5 * reference.abs().max().item(), "fused encoder")
