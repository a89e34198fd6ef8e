"""Draw detections on an image: boxes, ``name score`` labels, optional masks and track ids (OpenCV only)."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

from dart.detections import Detections


def color_for(index: int) -> tuple[int, int, int]:
    """A stable, well-separated BGR colour per class (or track) index (golden-ratio hue walk)."""
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def dashed_rectangle(image: np.ndarray, xyxy, color: tuple[int, int, int], width: int, dash: int = 8) -> None:
    """Draw a dashed rectangle in place (OpenCV draws only solid ones)."""
    x1, y1, x2, y2 = (int(round(v)) for v in xyxy)
    for (ax, ay), (bx, by) in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = max(abs(bx - ax), abs(by - ay))
        for start in range(0, max(length, 1), 2 * dash):
            stop = min(start + dash, length)
            p = (ax + (bx - ax) * start // max(length, 1), ay + (by - ay) * start // max(length, 1))
            q = (ax + (bx - ax) * stop // max(length, 1), ay + (by - ay) * stop // max(length, 1))
            cv2.line(image, p, q, color, width, cv2.LINE_AA)


def annotate(image_bgr: np.ndarray, dets: Detections, *, mask_alpha: float = 0.45, line_width: int | None = None,
             color_by_track: bool = False, exemplars=()) -> np.ndarray:
    """Return a copy of ``image_bgr`` with ``dets`` drawn on it, and the exemplar boxes drawn on this image
    (``(xyxy, positive, class_id)`` each) dashed: in the class's colour when positive, grey when negative."""
    out = image_bgr.copy()
    height, width = out.shape[:2]
    lw = line_width or max(1, round((height + width) / 600))
    font_scale = max(0.35, lw / 3)

    def key(i: int) -> int:
        if color_by_track and dets.track_ids is not None:
            return int(dets.track_ids[i])
        return int(dets.class_ids[i])

    if dets.masks is not None and len(dets):
        overlay = out.copy()
        for i in range(len(dets)):
            overlay[dets.masks[i]] = color_for(key(i))
        out = cv2.addWeighted(overlay, mask_alpha, out, 1 - mask_alpha, 0)
    for i in np.argsort(dets.scores):  # best on top
        x1, y1, x2, y2 = (int(round(v)) for v in dets.xyxy[i])
        color = color_for(key(i))
        cv2.rectangle(out, (x1, y1), (x2, y2), color, lw, cv2.LINE_AA)
        label = f"{dets.class_names[i]} {dets.scores[i]:.2f}"
        if dets.track_ids is not None:
            label = f"#{int(dets.track_ids[i])} {label}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, max(1, lw // 2))
        top = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else y1
        cv2.rectangle(out, (x1, top), (x1 + tw + 2, top + th + base + 2), color, -1)
        cv2.putText(out, label, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0),
                    max(1, lw // 2), cv2.LINE_AA)
    for xyxy, positive, class_id in exemplars:
        dashed_rectangle(out, xyxy, color_for(int(class_id)) if positive else (128, 128, 128), lw)
    return out
