"""Small PNG charts drawn with OpenCV (no plotting library needed): lines of y vs x, one per series, and bars."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from dart.io import write_image

# Distinct colours (BGR), readable on white.
PALETTE = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148), (75, 86, 140),
           (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23)]
FONT = cv2.FONT_HERSHEY_SIMPLEX
WIDTH, HEIGHT = 960, 600
LEFT, RIGHT, TOP, BOTTOM = 80, 250, 60, 70


def nice_ticks(high: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``high``."""
    if high <= 0 or not math.isfinite(high):
        return [0.0, 1.0]
    raw = high / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(int(math.ceil(high / step)) + 1)]


def _label(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e5 else f"{value:.2e}"


def line_plot(series: dict[str, Sequence[tuple[float, float]]], path: str | Path, *, title: str, xlabel: str,
              ylabel: str, log_x: bool = True, subtitle: str = "") -> Path:
    """One line with markers per series (``{name: [(x, y), ...]}``); x on a log2 scale by default."""
    img = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    xs = sorted({float(x) for pts in series.values() for x, _ in pts})
    ys = [float(y) for pts in series.values() for _, y in pts if math.isfinite(y)]
    if not xs:
        xs = [1.0]
    yticks = nice_ticks(max(ys) * 1.05 if ys else 1.0)
    fx = (lambda v: math.log2(max(v, 1e-9))) if log_x else float
    x0, x1 = fx(min(xs)), fx(max(xs))
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> int:
        return int(LEFT + (fx(x) - x0) / (x1 - x0) * plot_w)

    def py(y: float) -> int:
        return int(TOP + plot_h - y / yticks[-1] * plot_h)

    for y in yticks:  # grid and y labels
        cv2.line(img, (LEFT, py(y)), (LEFT + plot_w, py(y)), (225, 225, 225), 1)
        cv2.putText(img, _label(y), (8, py(y) + 5), FONT, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    for x in xs:
        cv2.line(img, (px(x), TOP), (px(x), TOP + plot_h), (235, 235, 235), 1)
        text = _label(x)
        size = cv2.getTextSize(text, FONT, 0.45, 1)[0]
        cv2.putText(img, text, (px(x) - size[0] // 2, TOP + plot_h + 20), FONT, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.rectangle(img, (LEFT, TOP), (LEFT + plot_w, TOP + plot_h), (90, 90, 90), 1)
    for i, (name, pts) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        points = [(px(x), py(y)) for x, y in sorted(pts) if math.isfinite(y)]
        if len(points) > 1:
            cv2.polylines(img, [np.array(points, np.int32)], False, color, 2, cv2.LINE_AA)
        for p in points:
            cv2.circle(img, p, 4, color, -1, cv2.LINE_AA)
        ly = TOP + 14 + 24 * i
        cv2.line(img, (WIDTH - RIGHT + 15, ly - 4), (WIDTH - RIGHT + 40, ly - 4), color, 3, cv2.LINE_AA)
        cv2.putText(img, _fit(name, 26), (WIDTH - RIGHT + 46, ly), FONT, 0.45, (30, 30, 30), 1, cv2.LINE_AA)
    _titles(img, title, subtitle, xlabel + (" (log scale)" if log_x else ""), ylabel)
    write_image(path, img)
    return Path(path)


def bar_plot(bars: Sequence[tuple[str, float]], path: str | Path, *, title: str, xlabel: str,
             subtitle: str = "") -> Path:
    """Horizontal bars, one per ``(name, value)``, longest scale at the right."""
    height = max(HEIGHT // 2, TOP + BOTTOM + 34 * len(bars))
    img = np.full((height, WIDTH, 3), 255, np.uint8)
    left = 230
    plot_w = WIDTH - left - 60
    values = [v for _, v in bars if math.isfinite(v)]
    ticks = nice_ticks(max(values) * 1.05 if values else 1.0)
    for t in ticks:
        x = int(left + t / ticks[-1] * plot_w)
        cv2.line(img, (x, TOP), (x, height - BOTTOM), (230, 230, 230), 1)
        cv2.putText(img, _label(t), (x - 10, height - BOTTOM + 20), FONT, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    for i, (name, value) in enumerate(bars):
        y = TOP + 10 + 34 * i
        cv2.putText(img, _fit(name, 28), (10, y + 17), FONT, 0.5, (30, 30, 30), 1, cv2.LINE_AA)
        if math.isfinite(value):
            x = int(left + value / ticks[-1] * plot_w)
            cv2.rectangle(img, (left, y), (max(left + 1, x), y + 24), PALETTE[i % len(PALETTE)], -1)
            cv2.putText(img, f"{value:.2f}", (x + 6, y + 17), FONT, 0.45, (30, 30, 30), 1, cv2.LINE_AA)
    _titles(img, title, subtitle, xlabel, "")
    write_image(path, img)
    return Path(path)


def _titles(img: np.ndarray, title: str, subtitle: str, xlabel: str, ylabel: str) -> None:
    h, w = img.shape[:2]
    cv2.putText(img, title, (LEFT, 28), FONT, 0.7, (20, 20, 20), 2, cv2.LINE_AA)
    if subtitle:
        cv2.putText(img, _fit(subtitle, 120), (LEFT, 48), FONT, 0.4, (90, 90, 90), 1, cv2.LINE_AA)
    size = cv2.getTextSize(xlabel, FONT, 0.55, 1)[0]
    cv2.putText(img, xlabel, ((w - size[0]) // 2, h - 20), FONT, 0.55, (20, 20, 20), 1, cv2.LINE_AA)
    if ylabel:
        cv2.putText(img, ylabel, (8, TOP - 10), FONT, 0.5, (20, 20, 20), 1, cv2.LINE_AA)


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "~"
