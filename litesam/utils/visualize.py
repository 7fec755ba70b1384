"""Pictures a person can look at: masks coloured, outlined and blended over the image, with prompts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

PALETTE = np.array(
    [
        (30, 144, 255),
        (255, 99, 71),
        (50, 205, 50),
        (255, 215, 0),
        (186, 85, 211),
        (0, 206, 209),
        (255, 140, 0),
        (240, 128, 128),
        (154, 205, 50),
        (100, 149, 237),
        (255, 105, 180),
        (72, 209, 204),
    ],
    dtype=np.float32,
)


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """HxW bool -> HxW bool of the mask's boundary pixels (inside pixels with an outside 4-neighbour)."""
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def color(i: int) -> np.ndarray:
    """The i-th colour of the palette (RGB floats)."""
    return PALETTE[i % len(PALETTE)]


def overlay(
    image: np.ndarray,
    masks: Sequence[np.ndarray] | np.ndarray,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    alpha: float = 0.5,
) -> Image.Image:
    """HxWx3 uint8 image + N HxW bool masks -> RGB picture with coloured, outlined masks.

    Points (Nx2 x, y) are drawn green (label 1) or red (label 0); boxes (Kx4 XYXY) as yellow frames.
    Larger masks are painted first so small ones stay visible on top.
    """
    out = image.astype(np.float32).copy()
    order = sorted(range(len(masks)), key=lambda i: -int(np.count_nonzero(masks[i])))
    for i in order:
        mask = np.asarray(masks[i], dtype=bool)
        c = color(i)
        out[mask] = (1 - alpha) * out[mask] + alpha * c
        out[mask_outline(mask)] = c
    pic = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pic)
    radius = max(4, round(max(image.shape[:2]) / 120))
    for box in [] if boxes is None else np.asarray(boxes).reshape(-1, 4):
        draw.rectangle([float(v) for v in box], outline=(255, 255, 0), width=max(2, radius // 2))
    if points is not None:
        labels = np.ones(len(points)) if labels is None else np.asarray(labels)
        for (x, y), label in zip(np.asarray(points).reshape(-1, 2), labels, strict=True):
            fill = (0, 220, 0) if label == 1 else (230, 0, 0)
            draw.ellipse(
                [x - radius, y - radius, x + radius, y + radius], fill=fill, outline=(255, 255, 255), width=2
            )
    return pic


def candidate_panels(
    image: np.ndarray,
    masks: np.ndarray,
    scores: np.ndarray,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
) -> Image.Image:
    """Alternative masks for one prompt side by side, one panel each, captioned with the predicted IoU."""
    panels = [overlay(image, [m], points, labels, boxes) for m in masks]
    w, h = panels[0].size
    gap = max(4, w // 100)
    strip = Image.new("RGB", (len(panels) * w + (len(panels) - 1) * gap, h), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for i, (panel, score) in enumerate(zip(panels, scores, strict=True)):
        x = i * (w + gap)
        strip.paste(panel, (x, 0))
        caption = f"mask {i}: IoU {float(score):.3f}"
        draw.rectangle([x, 0, x + 8 * len(caption) + 8, 18], fill=(0, 0, 0))
        draw.text((x + 4, 3), caption, fill=(255, 255, 255))
    return strip
