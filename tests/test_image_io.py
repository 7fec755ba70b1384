"""Images of every common kind become HxWx3 uint8 RGB; unreadable ones are clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import photo
from PIL import Image

from litesam.utils.image import ImageError, load_image


def test_grayscale_is_replicated():
    gray = photo()[..., 0]
    out = load_image(gray)
    assert out.shape == (*gray.shape, 3) and out.dtype == np.uint8
    assert (out == gray[..., None]).all()
    assert (load_image(gray[..., None]) == out).all()


def test_rgba_drops_alpha_and_16_bit_scales(tmp_path):
    rgb = photo()
    rgba = Image.fromarray(np.concatenate([rgb, np.zeros_like(rgb[..., :1])], axis=2), "RGBA")
    rgba.save(tmp_path / "a.png")
    assert (load_image(tmp_path / "a.png") == rgb).all()
    sixteen = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    sixteen.save(tmp_path / "g16.png")
    assert (load_image(tmp_path / "g16.png") == rgb[..., :1]).all()


def test_exif_orientation_is_applied(tmp_path):
    rgb = photo(40, 70)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    Image.fromarray(rgb).save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").shape == (70, 40, 3)


def test_palette_and_cmyk(tmp_path):
    rgb = photo()
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.gif")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg")
    assert load_image(tmp_path / "p.gif").shape == rgb.shape
    assert load_image(tmp_path / "c.jpg").shape == rgb.shape


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "cannot read image"),
        (b"GIF89a-broken", "cannot read image"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 10, "cannot"),
    ],
    ids=["empty", "broken gif", "truncated jpeg"],
)
def test_corrupt_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message):
        load_image(path)


def test_truncated_real_jpeg(tmp_path):
    Image.fromarray(photo(200, 200)).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match="cut.jpg"):
        load_image(tmp_path / "cut.jpg")


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((4, 4, 2), np.uint8), "shape"),
        (np.zeros((0, 4, 3), np.uint8), "no pixels"),
        (np.full((4, 4, 3), np.nan, np.float32), "NaN"),
        (np.full((4, 4, 3), -3, np.int32), "negative"),
    ],
    ids=["two channels", "empty", "nan", "negative"],
)
def test_bad_arrays(array, message):
    with pytest.raises(ImageError, match=message):
        load_image(array)


def test_missing_path_and_wrong_type(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="path, PIL image or numpy array"):
        load_image(42)


def test_decompression_bomb_is_a_clear_error(tmp_path, monkeypatch):
    Image.fromarray(photo(100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="too large"):
        load_image(tmp_path / "big.png")
