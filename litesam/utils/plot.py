"""``chart``: a small line / scatter chart drawn with PIL (no plotting dependency), for reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75))


@dataclass(frozen=True)
class Series:
    """One labelled series: points (xs[i], ys[i]), joined by a line or drawn as dots."""

    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    dots: bool = False


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    return [lo + (hi - lo) * i / n for i in range(n + 1)]


def chart(
    series: Sequence[Series],
    title: str,
    x_label: str,
    y_label: str,
    x_range: tuple[float, float] | None = None,
    y_range: tuple[float, float] | None = None,
    size: tuple[int, int] = (720, 480),
) -> Image.Image:
    """An RGB chart of ``series`` with axes, ticks, labels and a legend; ranges default to the data's."""
    width, height = size
    left, right, top, bottom = 70, 200, 40, 60
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    xs = [x for s in series for x in s.xs] or [0.0, 1.0]
    ys = [y for s in series for y in s.ys] or [0.0, 1.0]
    x0, x1 = x_range or (min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1)
    y0, y1 = y_range or (min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1)

    def at(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - x0) / (x1 - x0) * (width - left - right),
            height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom),
        )

    draw.rectangle((left, top, width - right, height - bottom), outline="black")
    for t in _ticks(x0, x1):
        px, py = at(t, y0)
        draw.line((px, py, px, py + 4), fill="black")
        draw.text((px - 12, py + 6), f"{t:.4g}", fill="black")
    for t in _ticks(y0, y1):
        px, py = at(x0, t)
        draw.line((px - 4, py, px, py), fill="black")
        draw.text((px - 40, py - 6), f"{t:.4g}", fill="black")
    draw.text((left, 12), title, fill="black")
    draw.text(((left + width - right) / 2 - 3 * len(x_label), height - 24), x_label, fill="black")
    draw.text((6, top - 16), y_label, fill="black")
    for i, s in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        points = [at(x, y) for x, y in zip(s.xs, s.ys, strict=True)]
        if s.dots:
            for px, py in points:
                draw.ellipse((px - 5, py - 5, px + 5, py + 5), fill=colour)
        elif len(points) > 1:
            draw.line(points, fill=colour, width=2)
        ly = top + 18 * i
        draw.rectangle((width - right + 12, ly + 2, width - right + 24, ly + 12), fill=colour)
        draw.text((width - right + 30, ly), s.label[:28], fill="black")
    return image
