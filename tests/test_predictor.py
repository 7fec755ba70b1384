"""The Predictor's contract: accepted inputs, output shapes and types, and clear errors for bad prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import photo, tiny_sam
from PIL import Image

import litesam
from litesam.build import prepare_for_inference
from litesam.prompts import Prompts


@pytest.fixture(scope="module")
def predictor():
    p = litesam.Predictor(tiny_sam())
    p.set_image(photo(120, 160))
    return p


def test_predict_before_set_image_is_an_error():
    with pytest.raises(RuntimeError, match="set_image"):
        litesam.Predictor(tiny_sam()).predict(point_coords=[[1, 1]], point_labels=[1])


def test_embedding_and_sizes(predictor):
    assert predictor.get_image_embedding().shape == (1, 256, 64, 64)
    assert predictor.original_size == (120, 160)
    assert predictor.input_size == (768, 1024)


@pytest.mark.parametrize("multimask, count", [(True, 3), (False, 1)])
def test_outputs_shapes_and_types(predictor, multimask, count):
    masks, scores, logits = predictor.predict([[80, 60]], [1], multimask_output=multimask)
    assert masks.shape == (count, 120, 160) and masks.dtype == bool
    assert scores.shape == (count,) and scores.dtype == np.float32
    assert logits.shape == (count, 256, 256)


def test_return_logits_thresholds_to_the_masks(predictor):
    masks, _, _ = predictor.predict([[80, 60]], [1])
    logits, _, _ = predictor.predict([[80, 60]], [1], return_logits=True)
    assert logits.dtype == np.float32
    np.testing.assert_array_equal(logits > 0.0, masks)


def test_mask_input_accepts_previous_logits(predictor):
    _, scores, logits = predictor.predict([[80, 60]], [1])
    masks, _, _ = predictor.predict(
        [[80, 60]], [1], mask_input=logits[np.argmax(scores)][None], multimask_output=False
    )
    assert masks.shape == (1, 120, 160)


def test_predict_batch_equals_one_by_one(predictor):
    boxes = np.array([[10, 10, 90, 70], [40, 30, 150, 110], [0, 0, 160, 120]])
    masks, scores, logits = predictor.predict_batch(boxes=boxes, batch_size=2)
    assert masks.shape == (3, 1, 120, 160) and scores.shape == (3, 1)
    for k, box in enumerate(boxes):
        m, s, lg = predictor.predict(box=box, multimask_output=False)
        np.testing.assert_allclose(logits[k], lg, atol=1e-5)
        assert (masks[k] != m).mean() < 1e-4


BAD_PROMPTS = {
    "no prompt": (dict(), "no prompt"),
    "coords without labels": (dict(point_coords=[[1, 1]]), "together"),
    "label count": (dict(point_coords=[[1, 1], [2, 2]], point_labels=[1]), r"shape \(2,\)"),
    "label value": (dict(point_coords=[[1, 1]], point_labels=[2]), "1 \\(foreground\\) or 0"),
    "coords shape": (dict(point_coords=[1, 1], point_labels=[1]), "Nx2"),
    "point outside": (
        dict(point_coords=[[161, 10]], point_labels=[1]),
        r"point \(161, 10\) is outside the image",
    ),
    "negative point": (dict(point_coords=[[-1, 10]], point_labels=[1]), "outside the image"),
    "nan point": (dict(point_coords=[[np.nan, 10]], point_labels=[1]), "NaN"),
    "box outside": (dict(box=[0, 0, 200, 100]), "reaches outside the image"),
    "box inverted": (dict(box=[50, 50, 10, 10]), "x0 <= x1"),
    "box shape": (dict(box=[1, 2, 3]), "4 numbers"),
    "mask shape": (dict(point_coords=[[1, 1]], point_labels=[1], mask_input=np.zeros((64, 64))), "1x256x256"),
    "text coords": (dict(point_coords="here", point_labels=[1]), "numeric"),
}


@pytest.mark.parametrize("kwargs, message", BAD_PROMPTS.values(), ids=BAD_PROMPTS.keys())
def test_bad_prompts_are_clear_value_errors(predictor, kwargs, message):
    with pytest.raises(ValueError, match=message):
        predictor.predict(**kwargs)


def test_predict_batch_rejects_unpaired_prompts(predictor):
    with pytest.raises(ValueError, match="pair up"):
        predictor.predict_batch(
            point_coords=[[[1, 1]]], point_labels=[[1]], boxes=[[0, 0, 5, 5], [0, 0, 9, 9]]
        )


def _embedding_of(image) -> torch.Tensor:
    p = litesam.Predictor(tiny_sam())
    p.set_image(image)
    return p.get_image_embedding()


def test_image_formats_give_the_same_embedding(tmp_path):
    rgb = photo(60, 80)
    reference = _embedding_of(rgb)
    Image.fromarray(rgb).save(tmp_path / "p.png")
    for variant in [
        Image.fromarray(rgb),
        tmp_path / "p.png",
        str(tmp_path / "p.png"),
        np.concatenate([rgb, np.full((60, 80, 1), 255, np.uint8)], axis=2),  # RGBA
        rgb.astype(np.uint16) * 257,  # 16-bit
        rgb.astype(np.float32) / 255.0,  # float 0-1
    ]:
        torch.testing.assert_close(_embedding_of(variant), reference)


def test_bgr_arrays(tmp_path):
    rgb = photo(60, 80)
    p = litesam.Predictor(tiny_sam())
    p.set_image(np.ascontiguousarray(rgb[..., ::-1]), image_format="BGR")
    torch.testing.assert_close(p.get_image_embedding(), _embedding_of(rgb))


def test_reset_image_forgets_the_embedding(predictor):
    p = litesam.Predictor(tiny_sam())
    p.set_image(photo())
    p.reset_image()
    assert not p.is_image_set
    with pytest.raises(RuntimeError):
        p.get_image_embedding()


# ---- the stateless core: encode once, decode anywhere ------------------------------------------------


def test_decode_on_an_encoded_state_equals_predict(predictor):
    state = predictor.encode(photo(120, 160))
    prediction = predictor.decode(state, litesam.Prompts.single([[80, 60]], [1], box=[10, 10, 100, 90]))
    masks, scores, low_res = predictor.predict([[80, 60]], [1], box=[10, 10, 100, 90])
    np.testing.assert_array_equal(prediction.low_res[0].numpy(), low_res)
    np.testing.assert_array_equal(prediction.scores[0].numpy(), scores)
    np.testing.assert_array_equal((prediction.logits()[0] > predictor.mask_threshold).numpy(), masks)


def test_image_state_is_immutable(predictor):
    state = predictor.encode(photo(120, 160))
    with pytest.raises(TypeError):
        state.features["image_embeddings"] = torch.zeros(1)
    with pytest.raises(AttributeError):
        state.original_size = (1, 1)
    assert state.original_size == (120, 160) and state.input_size == (768, 1024)


def test_one_model_serves_several_images_from_several_threads(predictor):
    import concurrent.futures

    images = [photo(120, 160, seed=s) for s in range(3)]
    prompts = litesam.Prompts.single([[80, 60]], [1])
    states = [predictor.encode(image) for image in images]
    serial = [predictor.decode(state, prompts).low_res for state in states]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        parallel = list(pool.map(lambda s: predictor.decode(s, prompts).low_res, states * 2))
    for i, low_res in enumerate(parallel):
        torch.testing.assert_close(low_res, serial[i % 3], rtol=0, atol=0)
    assert not torch.equal(serial[0], serial[1])  # the states really are different images


def test_decode_refuses_prompts_outside_the_state_image(predictor):
    state = predictor.encode(photo(50, 40))
    with pytest.raises(litesam.InputError, match="outside the image"):
        predictor.decode(state, litesam.Prompts.single([[45, 10]], [1]))


@pytest.mark.parametrize("batch_size", [0, -1, 1.5])
def test_predict_batch_refuses_a_batch_size_below_one(predictor, batch_size):
    with pytest.raises(litesam.InputError, match="batch size"):
        predictor.predict_batch(boxes=[[10, 10, 50, 50]], batch_size=batch_size)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_mask_input_with_nan_or_inf_is_refused(predictor, bad):
    mask = np.zeros((1, 256, 256), np.float32)
    mask[0, 3, 4] = bad
    with pytest.raises(litesam.InputError, match="mask_input contains NaN"):
        predictor.predict([[80, 60]], [1], mask_input=mask)


@pytest.mark.parametrize("fast", [False, True], ids=["reference", "prepared"])
def test_the_image_memo_leaves_decodes_unchanged_and_follows_the_weights(fast):
    """Decodes keep the decoder's image side in ``state.memo``: later clicks on the same image give what a
    freshly encoded image gives, also with a mask prompt and after the weights change."""
    model = tiny_sam(image_size=256)
    if fast:
        prepare_for_inference(model)
    predictor = litesam.Predictor(model)
    image = photo(60, 80)
    state = predictor.encode(image)
    clicks = [Prompts.single([[20, 30]], [1]), Prompts.single([[50, 10], [5, 5]], [1, 0], box=[0, 0, 70, 50])]

    def same_as_fresh() -> None:
        for prompts in clicks:
            kept = predictor.decode(state, prompts)
            fresh = predictor.decode(predictor.encode(image), prompts)
            torch.testing.assert_close(kept.low_res, fresh.low_res, rtol=0, atol=1e-5)
            torch.testing.assert_close(kept.scores, fresh.scores, rtol=0, atol=1e-6)

    same_as_fresh()
    assert state.memo  # the image side is kept
    logits = predictor.decode(state, clicks[0]).low_res[:, :1]
    with_mask = Prompts.single([[20, 30]], [1], mask_input=logits[0])
    torch.testing.assert_close(
        predictor.decode(state, with_mask).low_res,
        predictor.decode(predictor.encode(image), with_mask).low_res,
    )
    with torch.no_grad():
        for p in model.mask_decoder.transformer.parameters():
            p.mul_(1.5)
        model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.mul_(0.5)
    same_as_fresh()
