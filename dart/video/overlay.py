"""Drawing on video frames (boxes, track IDs and their trails, a status line) and the live preview window."""

from __future__ import annotations

import os
import sys
from collections import deque

import cv2
import numpy as np

from dart.annotate import annotate, color_for
from dart.detections import Detections
from dart.errors import DependencyError


class TrackOverlay:
    """Boxes coloured by track, ``#id name score`` labels and a trail of each track's recent positions
    (bottom-centre of the box, the point that touches the ground for people and vehicles)."""

    def __init__(self, trail: int = 30, forget_after: int = 30):
        self.trail = trail
        self.forget_after = forget_after
        self.frame = 0
        self._points: dict[int, deque[tuple[int, int]]] = {}
        self._last_seen: dict[int, int] = {}

    def draw(self, image: np.ndarray, dets: Detections, exemplars=()) -> np.ndarray:
        """``exemplars``: exemplar boxes drawn on this frame, ``(xyxy, positive, class_id)`` (shown dashed)."""
        self.frame += 1
        tracked = dets.track_ids is not None
        out = annotate(image, dets, color_by_track=tracked, exemplars=exemplars)
        if not tracked or self.trail <= 0:
            return out
        for i, tid in enumerate(dets.track_ids.tolist()):
            x1, _, x2, y2 = dets.xyxy[i]
            self._points.setdefault(tid, deque(maxlen=self.trail)).append((int((x1 + x2) / 2), int(y2)))
            self._last_seen[tid] = self.frame
        for tid in [t for t, seen in self._last_seen.items() if self.frame - seen > self.forget_after]:
            del self._points[tid], self._last_seen[tid]
        thickness = max(1, round(sum(out.shape[:2]) / 800))
        for tid, points in self._points.items():
            if len(points) > 1:
                cv2.polylines(out, [np.array(points, dtype=np.int32)], False, color_for(tid), thickness, cv2.LINE_AA)
        return out


def draw_status(image: np.ndarray, text: str) -> np.ndarray:
    """A small status line (e.g. live FPS) in the top-left corner, drawn in place."""
    scale = max(0.4, image.shape[0] / 900)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(image, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
    cv2.putText(image, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image


NO_GUI = ("--display needs OpenCV with window support, but this OpenCV cannot open windows (the headless build "
          "dart installs): run `pip uninstall -y opencv-python-headless && pip install opencv-python`, or save the "
          "annotated video with -o out.mp4 instead.")
NO_SCREEN = ("--display needs a graphical session, and there is none here (DISPLAY is not set): save the annotated "
             "video with -o out.mp4 instead.")


def display_problem() -> str | None:
    """Why a preview window cannot be opened here (one sentence), or None when it can be tried."""
    info = cv2.getBuildInformation()
    gui = info[info.find("GUI:"):].split("\n", 1)[0] if "GUI:" in info else ""
    if gui.split(":", 1)[-1].strip().upper() == "NONE":
        return NO_GUI
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return NO_SCREEN
    return None


class Display:
    """A live OpenCV window; :meth:`show` returns False once the user pressed ``q`` or ``Esc`` (or closed it).

    opencv-python-headless (dart's default OpenCV) has no window support: creating a Display then raises a
    one-sentence :class:`DependencyError` saying what to install."""

    def __init__(self, title: str = "dart"):
        self.title = title
        problem = display_problem()
        if problem:
            raise DependencyError(problem)
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise DependencyError(NO_GUI) from exc
        self._open = True

    def show(self, image: np.ndarray) -> bool:
        if not self._open:
            return False
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF
        try:
            visible = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1
        except cv2.error:
            visible = False
        return key not in (ord("q"), ord("Q"), 27) and visible

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:
                pass
