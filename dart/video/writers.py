"""Outputs of a video run that stay valid however the run ends.

Every writer writes into a temporary file beside its destination and moves it into place on :meth:`close`
— at the end of the video, on Ctrl-C, on a dead stream — so a previous good file is never replaced by a broken
one, and what was processed up to the stop is kept: the annotated video is finalised (playable), the JSONL has
one complete line per frame (each written in one call and flushed), the MOT file one row per tracked object.
JSONL can also go to standard output (``"-"``) for piping into another program.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np

from dart.detections import Detections
from dart.errors import DependencyError, InputError, WriteError
from dart.io import commit, redact, temp_beside, write_error

FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}


def check_video_name(path: str | Path) -> Path:
    """A video output name dart can encode (.mp4, .avi, .mov, .m4v, .mkv), or one sentence."""
    path = Path(path)
    if path.suffix.lower() not in FOURCC:
        raise InputError(f"cannot write the video '{path.name}': use a .mp4, .avi, .mov, .m4v or .mkv file name.")
    if path.is_dir():
        raise InputError(f"'{path}' is a folder; give a video file name such as out.mp4.")
    return path


class VideoWriter:
    """Annotated frames -> a video file with the source's fps and frame size (opened on the first frame)."""

    def __init__(self, path: str | Path, fps: float):
        self.path = check_video_name(path)
        self.fps = float(fps)
        self.frames = 0
        self.size: tuple[int, int] | None = None
        self._tmp: Path | None = None
        self._writer: cv2.VideoWriter | None = None

    def write(self, image: np.ndarray) -> None:
        height, width = image.shape[:2]
        if self._writer is None:
            self._tmp = temp_beside(self.path)
            fourcc = cv2.VideoWriter_fourcc(*FOURCC[self.path.suffix.lower()])
            self._writer = cv2.VideoWriter(str(self._tmp), fourcc, self.fps, (width, height))
            if not self._writer.isOpened():
                self._discard()
                raise DependencyError(f"OpenCV cannot encode '{self.path.suffix}' video here (no FFmpeg writer for "
                                      f"{FOURCC[self.path.suffix.lower()]}); try an .avi output.")
            self.size = (width, height)
        elif (width, height) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.frames += 1

    def _discard(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._tmp is not None and self._tmp.exists():
            self._tmp.unlink()
        self._tmp = None

    def close(self) -> bool:
        """Finalise the container (index written) and move it into place; nothing is written for zero frames.
        Returns whether the file was written."""
        if self._writer is None:
            return False
        self._writer.release()
        self._writer = None
        if self.frames and self._tmp is not None:
            if self._tmp.stat().st_size == 0:
                self._discard()
                raise WriteError(f"cannot write '{redact(str(self.path))}': OpenCV's video encoder wrote nothing for "
                                 f"{self.frames} frames (disk full, or the codec failed); an earlier file there is "
                                 "left as it was.")
            commit(self._tmp, self.path)
            self._tmp = None
            return True
        self._discard()
        return False


class LineWriter:
    """Text lines, flushed one by one, into a temporary file moved into place on :meth:`close` (or stdout)."""

    def __init__(self, path: str | Path):
        self.to_stdout = str(path) == "-"
        self.path = Path(path)
        self.lines = 0
        self._tmp: Path | None = None
        self._file: TextIO | None = None
        if not self.to_stdout and self.path.is_dir():
            raise InputError(f"'{self.path}' is a folder; give a file name.")

    def _open(self) -> TextIO:
        if self._file is None:
            if self.to_stdout:
                self._file = sys.stdout
            else:
                self._tmp = temp_beside(self.path)
                try:
                    self._file = open(self._tmp, "w", encoding="utf-8", newline="\n")  # noqa: SIM115
                except OSError as exc:
                    self._tmp.unlink(missing_ok=True)
                    raise write_error(exc, self.path) from exc
        return self._file

    def write_lines(self, lines: list[str]) -> None:
        """Write whole lines in one call and flush, so a reader (or a crash) never sees half a line. Called once
        per frame, even with no lines, so a run that saw frames always leaves a file."""
        handle = self._open()
        if lines:
            try:
                handle.write("".join(line + "\n" for line in lines))
                handle.flush()
            except OSError as exc:
                raise write_error(exc, self.path) from exc
            self.lines += len(lines)

    def close(self) -> bool:
        """Move the file into place; a writer that never saw a frame leaves the destination untouched.
        Returns whether a file was written."""
        if self._file is None:
            return False
        handle, self._file = self._file, None
        if self.to_stdout:
            handle.flush()
            return False
        try:
            handle.close()
        except OSError as exc:
            self._tmp.unlink(missing_ok=True)  # type: ignore[union-attr]
            raise write_error(exc, self.path) from exc
        commit(self._tmp, self.path)  # type: ignore[arg-type]
        self._tmp = None
        return True


class JsonlWriter(LineWriter):
    """One JSON object per frame: ``{"frame", "time", "width", "height", "detections": [...]}`` where each
    detection is a :meth:`Detections.to_json` row (``box_xyxy``, ``score``, ``class_id``, ``class_name``, and
    ``track_id`` when tracking, ``mask`` RLE with ``--masks``)."""

    def write(self, frame: int, time: float, dets: Detections, size: tuple[int, int] | None = None) -> None:
        height, width = size if size is not None else (dets.image_size or (None, None))
        record: dict[str, Any] = {"frame": int(frame), "time": round(float(time), 4), "width": width,
                                  "height": height, "detections": dets.to_json()}
        self.write_lines([json.dumps(record, separators=(",", ":"))])


class MotWriter(LineWriter):
    """MOTChallenge rows ``frame,id,x,y,w,h,score,class,-1,-1``; frames count from 1 (source frame index + 1)."""

    def write(self, frame: int, dets: Detections) -> None:
        self.write_lines(dets.to_mot(int(frame) + 1))


def read_jsonl(path: str | Path) -> list[tuple[int, float, tuple[int, int] | None, list[dict[str, Any]]]]:
    """Read a ``--save-jsonl`` file back: ``(frame, time, (height, width) or None, detection rows)`` per line.

    A line that is not such a JSON object is one sentence naming the line."""
    from dart.io import read_text

    path = Path(path)
    out = []
    for number, line in enumerate(read_text(path, "detections file").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            frame = int(record["frame"])
            rows = record["detections"]
            if not isinstance(rows, list):
                raise TypeError("detections is not a list")
            for row in rows:
                if len(row["box_xyxy"]) != 4:
                    raise ValueError("box_xyxy needs 4 numbers")
                float(row["score"]), int(row["class_id"]), str(row["class_name"])
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise InputError(f"line {number} of '{path}' is not a frame record written by `dart video "
                             f"--save-jsonl` ({type(exc).__name__}: {exc}).") from exc
        size = (record["height"], record["width"]) if record.get("height") and record.get("width") else None
        out.append((frame, float(record.get("time", 0.0)), size, rows))
    return out
