"""Zero-shot edge detection: the Sobel/thinning steps on known images, then the whole pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import photo, tiny_sam
from PIL import Image

import litesam
from litesam.cli import main
from litesam.edges import EdgeDetector, boundary_band, edge_image, sobel, thin_edges


def _columns(x: torch.Tensor) -> list[int]:
    return torch.nonzero(x.ne(0).any(0)).flatten().tolist()


def test_sobel_of_a_step_responds_exactly_on_the_two_columns_at_the_step():
    step = torch.zeros(1, 20, 30)
    step[..., 12:] = 1.0
    gx, gy = sobel(step)
    assert _columns(gx[0]) == [11, 12]
    assert torch.allclose(gx[0, :, 11:13], torch.full((20, 2), 0.5))  # kernels scaled by 1/8
    assert gy.abs().max() == 0  # replicate padding: the image border is no edge
    thinned = thin_edges(torch.hypot(gx, gy)[0], gx[0], gy[0], border=0)
    assert _columns(thinned) == [11, 12]  # equal neighbours both survive (slack 1.01)


def test_thinning_reduces_a_soft_step_to_one_pixel_per_row_at_its_centre():
    xs = torch.arange(30.0).expand(20, 30)
    soft = torch.sigmoid((xs - 12.3) / 1.5)[None]
    gx, gy = sobel(soft)
    strength = torch.hypot(gx, gy)[0]
    assert (strength > 0).sum(1).min() >= 20  # the raw response is wide
    thinned = thin_edges(strength, gx[0], gy[0], border=0)
    assert _columns(thinned) == [12]
    assert torch.equal(thinned[:, 12], strength[:, 12])  # kept values are not changed


def test_thinning_follows_the_gradient_direction_on_a_diagonal_edge():
    ys, xs = torch.meshgrid(torch.arange(20.0), torch.arange(30.0), indexing="ij")
    soft = torch.sigmoid((xs + ys - 25) / 1.5)[None]
    gx, gy = sobel(soft)
    thinned = thin_edges(torch.hypot(gx, gy)[0], gx[0], gy[0], border=0)
    for row in range(2, 18):  # away from the corners, where padding bends the ramp
        assert torch.nonzero(thinned[row]).flatten().tolist() == [25 - row]


def test_border_fades_values_linearly_to_zero_at_the_image_edge():
    flat = torch.ones(12, 12)
    faded = thin_edges(flat, torch.ones(12, 12), torch.zeros(12, 12), border=4)
    assert faded[6, 0] == 0 and faded[6, 1] == pytest.approx(0.25) and faded[6, 2] == pytest.approx(0.5)
    assert faded[6, 4:8].eq(1).all() and faded[0].eq(0).all() and faded[11].eq(0).all()


def test_boundary_band_is_the_two_pixel_strip_around_a_mask_outline():
    mask = torch.zeros(1, 8, 10, dtype=torch.bool)
    mask[0, :, 4:] = True
    assert _columns(boundary_band(mask)[0]) == [3, 4]
    assert not boundary_band(torch.ones(1, 5, 5, dtype=torch.bool)).any()  # image border is no outline


def test_edges_trace_the_outline_of_the_mask_the_model_predicts():
    """A model whose every prompt yields a disk of radius 30 px: the thinned edges are that circle."""
    h, w, cx, cy, radius = 120, 160, 80.0, 60.0, 30.0
    per_pixel = 256 / w  # low-res logits per original pixel (long side 160 -> 1024 -> 256)
    v, u = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    x, y = (u + 0.5) / per_pixel - 0.5, (v + 0.5) / per_pixel - 0.5
    disk = 0.5 * (radius - torch.hypot(x - cx, y - cy))  # logits, 0 on the circle

    def decode(features, coords, labels, boxes=None, mask_input=None, multimask_output=True):
        return disk.expand(len(coords), 3, 256, 256), torch.full((len(coords), 3), 0.9)

    model = tiny_sam()
    model.decode = decode
    result = EdgeDetector(model, points_per_side=2, border=0).detect(photo(h, w))
    assert result.num_candidates == 12 and result.num_kept == 1  # identical masks: NMS keeps one
    ys, xs = np.nonzero(result.edges)
    assert np.abs(np.hypot(xs - cx, ys - cy) - radius).max() <= 1.0
    angles = np.degrees(np.arctan2(ys - cy, xs - cx)) % 360
    assert len(np.unique(angles // 5)) == 72  # closed: every 5-degree sector of the circle has edges
    assert len(xs) < 2 * np.pi * radius * 1.5  # about one pixel wide


@pytest.fixture(scope="module")
def detected():
    detector = EdgeDetector(tiny_sam(), points_per_side=2)
    image = photo(60, 80)
    return detector, image, detector.detect(image)


def test_edge_map_has_the_image_size_lies_in_0_1_and_is_thinner_than_before_nms(detected):
    _, _, result = detected
    assert result.edges.shape == result.unthinned.shape == (60, 80)
    assert result.edges.dtype == np.float32
    assert result.edges.min() >= 0 and result.edges.max() <= 1
    assert result.unthinned.max() == pytest.approx(1.0)  # normalised before thinning
    assert result.num_candidates == 12 and 1 <= result.num_kept <= 12  # 2x2 points x 3 masks, then NMS
    before, after = np.count_nonzero(result.unthinned), np.count_nonzero(result.edges)
    assert 0 < after < before
    assert np.all(result.unthinned[result.edges > 0] > 0)  # thinning only removes pixels


def test_edge_detection_is_deterministic(detected):
    detector, image, result = detected
    again = detector.detect(image)
    np.testing.assert_array_equal(again.edges, result.edges)


def test_edge_picture_is_8_bit_white_on_black(detected):
    _, _, result = detected
    picture = edge_image(result.edges)
    assert picture.mode == "L" and picture.size == (80, 60)
    pixels = np.asarray(picture)
    assert pixels.max() == round(255 * result.edges.max()) and pixels[result.edges == 0].max() == 0


@pytest.mark.parametrize(
    "kwargs", [{"points_per_side": 0}, {"nms_thresh": 0.0}, {"nms_radius": 0}, {"border": -1}]
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        EdgeDetector(tiny_sam(), **kwargs)


def test_edges_command_writes_the_png_and_the_float_map(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(litesam, "build_model", lambda *args, **kwargs: tiny_sam())
    image = tmp_path / "photo.png"
    Image.fromarray(photo(60, 80)).save(image)
    out = tmp_path / "maps" / "edges.png"
    assert main(["edges", str(image), "-o", str(out), "--points-per-side", "2"]) == 0
    edges = np.load(out.with_suffix(".npy"))
    assert edges.shape == (60, 80) and 0 <= edges.min() and edges.max() <= 1
    np.testing.assert_array_equal(np.asarray(Image.open(out)), np.round(edges * 255).astype(np.uint8))
    assert "of 12 masks kept" in capsys.readouterr().out
