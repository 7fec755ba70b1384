"""``Prompts``: one checked batch of prompt sets, the same type in the original and the model frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from litesam import ImageTransform, InputError, Prompts


def test_single_prompt_set_gets_a_batch_axis_and_float64_pixels():
    p = Prompts.single([[1, 2], [3, 4]], [1, 0], box=[0, 0, 5, 6], mask_input=np.zeros((256, 256)))
    assert p.points.shape == (1, 2, 2) and p.points.dtype == torch.float64
    assert p.labels.tolist() == [[1, 0]] and p.labels.dtype == torch.int64
    assert p.boxes.shape == (1, 4) and p.mask.shape == (1, 1, 256, 256) and p.mask.dtype == torch.float32
    assert len(p) == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "no prompt given"),
        ({"point_coords": [[1, 2]]}, "given together"),
        ({"point_coords": [[1, 2]], "point_labels": [2]}, "1 .foreground. or 0"),
        ({"point_coords": [[1, 2]], "point_labels": [1, 1]}, "point_labels must have shape"),
        ({"point_coords": [[np.nan, 2]], "point_labels": [1]}, "NaN"),
        ({"point_coords": [1, 2], "point_labels": [1]}, "Nx2"),
        ({"box": [1, 2, 3]}, "4 numbers"),
        ({"box": [5, 5, 1, 1]}, "x0 <= x1"),
        ({"box": ["a", 1, 2, 3]}, "numeric"),
        ({"mask_input": np.zeros((2, 8, 8))}, "1xSxS"),
    ],
)
def test_malformed_prompts_are_input_errors_that_say_what_is_wrong(kwargs, message):
    with pytest.raises(InputError, match=message):
        Prompts.single(**kwargs)


def test_batched_fields_must_pair_up():
    with pytest.raises(InputError, match="pair up"):
        Prompts.batch(np.zeros((2, 1, 2)), np.ones((2, 1)), boxes=np.zeros((3, 4)))


def test_split_slices_every_field_alike():
    p = Prompts.batch(np.arange(10.0).reshape(5, 1, 2), np.ones((5, 1)), boxes=np.arange(20.0).reshape(5, 4))
    chunks = list(p.split(2))
    assert [len(c) for c in chunks] == [2, 2, 1]
    assert chunks[2].points.tolist() == [[[8.0, 9.0]]] and chunks[2].boxes.tolist() == [[16, 17, 18, 19]]


def test_inside_check_allows_the_border_and_names_the_first_offender():
    Prompts.single([[160, 120]], [1], box=[0, 0, 160, 120]).check_inside((120, 160))
    with pytest.raises(InputError, match=r"point \(161, 5\) is outside"):
        Prompts.single([[3, 3], [161, 5]], [1, 1]).check_inside((120, 160))
    with pytest.raises(InputError, match="box .* reaches outside"):
        Prompts.single(box=[-1, 0, 10, 10]).check_inside((120, 160))


@pytest.mark.parametrize(
    "transform, expected",
    [
        (ImageTransform(1024), [[512.0, 256.0, 1024.0, 512.0]]),  # longest side 200 -> 1024: x5.12
        (ImageTransform(512, prompt_size=1024), [[512.0, 256.0, 1024.0, 512.0]]),  # prompts in 1024
        (ImageTransform(1024, resize="stretch"), [[512.0, 512.0, 1024.0, 1024.0]]),  # each axis alone
    ],
)
def test_the_transform_maps_prompts_into_the_model_frame(transform, expected):
    p = Prompts.single([[100, 50]], [1], box=[100, 50, 200, 100])
    frame = transform.apply_prompts(p, (100, 200))
    assert frame.boxes.tolist() == expected
    assert frame.points.tolist() == [[expected[0][:2]]] and frame.labels is p.labels
