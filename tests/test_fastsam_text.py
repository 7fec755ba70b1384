"""FastSAM's text prompt: the official crop rule, size filter and index bookkeeping, with CLIP from
transformers (a tiny random configuration) or a stand-in whose choice is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from litesam.errors import InputError
from litesam.modeling import clip_text
from litesam.modeling.clip_text import ClipRanker, box_picture, select_by_text


def masks_and_image() -> tuple[torch.Tensor, np.ndarray]:
    """Four masks on a 60x80 image: a 10x10 speck (100 px: left out), then three 20x20 squares."""
    masks = torch.zeros(4, 60, 80, dtype=torch.bool)
    masks[0, 0:10, 0:10] = True
    masks[1, 5:25, 5:25] = True
    masks[2, 30:50, 10:30] = True
    masks[3, 30:50, 50:70] = True
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    return masks, image


class KnownChoice(ClipRanker):
    """Scores pictures by how much of the pixel (40, 60) area they keep: the mask 3 crop wins."""

    def __init__(self) -> None:
        self.size = 224

    def probabilities(self, pictures, text):
        self.seen = pictures
        return torch.tensor(
            [float(p[40, 60].mean() != 255) + 0.1 * i for i, p in enumerate(pictures)]
        ).softmax(0)


def test_a_crop_is_the_image_inside_the_mask_box_and_white_elsewhere():
    masks, image = masks_and_image()
    mask = np.zeros((60, 80), bool)
    mask[10, 20] = mask[14, 31] = True  # two pixels: box x 20..31, y 10..14 (exclusive max)
    picture = box_picture(image, mask)
    assert (picture[10:15, 20:32] == image[10:15, 20:32]).all()
    picture[10:15, 20:32] = 255
    assert (picture == 255).all()


def test_small_masks_are_left_out_and_the_official_index_shift_is_kept():
    masks, image = masks_and_image()
    clip = KnownChoice()
    index, score = select_by_text(image, masks, "the square on the right", clip)
    assert len(clip.seen) == 3  # the 100-pixel speck takes no part
    # the winner is the third kept mask (mask 3); the official shift adds the left-out masks with an
    # index <= 2 (the speck), so the answer is mask 3
    assert index == 3 and 0 < score <= 1


def test_empty_text_or_no_large_mask_is_an_input_error():
    masks, image = masks_and_image()
    with pytest.raises(InputError, match="empty"):
        select_by_text(image, masks, " ", KnownChoice())
    with pytest.raises(InputError, match="no mask of more than 100"):
        select_by_text(image, masks[:1], "a speck", KnownChoice())


def test_a_tiny_transformers_clip_ranks_the_crops():
    transformers = pytest.importorskip("transformers")
    config = transformers.CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
                     "num_hidden_layers": 2, "vocab_size": 99, "max_position_embeddings": 16},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
                       "num_hidden_layers": 2, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(0)
    clip = ClipRanker(transformers.CLIPModel(config), lambda text: torch.tensor([[1, 5, 7, 2]]), size=32)
    masks, image = masks_and_image()
    pictures = [box_picture(image, masks[i].numpy()) for i in (1, 2, 3)]
    probabilities = clip.probabilities(pictures, "a square")
    assert probabilities.shape == (3,) and torch.isclose(probabilities.sum(), torch.tensor(1.0))
    index, score = select_by_text(image, masks, "a square", clip)
    assert index == 1 + int(torch.argmax(probabilities)) and score == pytest.approx(
        float(probabilities.max())
    )


def test_clip_input_is_the_bicubic_shorter_side_resize_and_centre_crop():
    clip = ClipRanker.__new__(ClipRanker)
    clip.size = 8
    picture = np.zeros((10, 20, 3), np.uint8)
    picture[:, 8:12] = 255  # a white band in the middle survives the centre crop
    x = clip.pixels(picture)
    assert x.shape == (3, 8, 8)
    white = (1.0 - torch.tensor(clip_text.CLIP_MEAN)) / torch.tensor(clip_text.CLIP_STD)
    torch.testing.assert_close(x[:, 4, 3:5], white[:, None].expand(3, 2), atol=0.05, rtol=0)


def test_without_transformers_the_error_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_transformers(name, *args, **kwargs):
        if name.startswith("transformers"):
            raise ImportError("no transformers")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    with pytest.raises(InputError, match=r"pip install 'litesam\[text\]'"):
        ClipRanker.from_pretrained("somewhere")


def test_fastsam_text_prompt_returns_the_chosen_everything_mask():
    import litesam

    torch.manual_seed(0)
    model = litesam.build_model("fastsam_s")
    image = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    state = litesam.Predictor(model).encode(image)
    found = model.instances(state.features)
    clip = KnownChoice()
    if not (found.masks.flatten(1).sum(1) > 100).any():
        pytest.skip("random weights left no mask of more than 100 pixels")
    mask, score = model.text_prompt(state.features, image, "anything", clip)
    index, expected = select_by_text(image, found.masks, "anything", KnownChoice())
    assert torch.equal(mask, found.masks[index]) and score == pytest.approx(expected)
