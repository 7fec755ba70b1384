"""``chart`` (line / scatter) and ``bars`` (grouped bars): small charts drawn with PIL (no plotting
dependency), for reports."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip


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


def bars(
    groups: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    title: str,
    y_label: str,
    log: bool = True,
    size: tuple[int, int] = (960, 520),
) -> Image.Image:
    """An RGB grouped bar chart: one group of bars per name in ``groups``, one bar per (label, values)
    series (a value per group; None leaves a gap), on a log10 axis with ``log``; a legend on the right."""
    width, height = size
    left, right, top, bottom = 70, 220, 40, 70
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    values = [v for _, vs in series for v in vs if v is not None and v > 0] or [1.0]
    scale = (lambda v: math.log10(v)) if log else (lambda v: v)
    lo = math.floor(scale(min(values))) if log else 0.0
    hi = math.ceil(scale(max(values))) if log else max(values) * 1.1
    hi = hi if hi > lo else lo + 1

    def y_at(v: float) -> float:
        return height - bottom - (scale(v) - lo) / (hi - lo) * (height - top - bottom)

    draw.rectangle((left, top, width - right, height - bottom), outline="black")
    decades = range(int(lo), int(hi) + 1)
    ticks = [m * 10**e for e in decades for m in (1, 2, 5) if m * 10**e <= 10**hi] if log else _ticks(lo, hi)
    for t in ticks:
        y = y_at(t) if t > 0 else height - bottom
        draw.line((left - 4, y, width - right, y), fill=(225, 225, 225))
        draw.text((left - 50, y - 6), f"{t:.4g}", fill="black")
    slot = (width - left - right) / max(len(groups), 1)
    bar = slot * 0.8 / max(len(series), 1)
    for g, name in enumerate(groups):
        x = left + g * slot + slot * 0.1
        draw.text((x, height - bottom + 8), name[: int(slot / 6)], fill="black")
        for i, (_, vs) in enumerate(series):
            v = vs[g]
            if v is not None and v > 0:
                x0 = x + i * bar
                draw.rectangle((x0, y_at(v), x0 + bar - 1, height - bottom), fill=PALETTE[i % len(PALETTE)])
    draw.text((left, 12), title, fill="black")
    draw.text((6, top - 16), y_label + (" (log scale)" if log else ""), fill="black")
    for i, (label, _) in enumerate(series):
        ly = top + 18 * i
        draw.rectangle(
            (width - right + 12, ly + 2, width - right + 24, ly + 12), fill=PALETTE[i % len(PALETTE)]
        )
        draw.text((width - right + 30, ly), label[:30], fill="black")
    return image
