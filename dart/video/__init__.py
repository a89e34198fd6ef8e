"""Video and streams: frame sources with decode-ahead, sequential and pipelined detection runners, outputs
(annotated video, JSONL, MOT) that survive interruptions, and the live preview.

The names below are imported from their modules on first use, so that a command can check its output files with
:mod:`dart.video.writers` before the runners (and torch) are imported."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_MODULES = {
    "pipeline": ("FrameSink", "VideoResult", "benchmark_video", "run_video", "same_detections",
                 "track_saved_detections"),
    "sources": ("DecodeAhead", "Frame", "StreamError", "VideoSource", "open_source"),
    "writers": ("JsonlWriter", "MotWriter", "VideoWriter", "read_jsonl"),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_HOME)

if TYPE_CHECKING:  # pragma: no cover
    from dart.video.pipeline import (FrameSink, VideoResult, benchmark_video, run_video, same_detections,
                                     track_saved_detections)
    from dart.video.sources import DecodeAhead, Frame, StreamError, VideoSource, open_source
    from dart.video.writers import JsonlWriter, MotWriter, VideoWriter, read_jsonl


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'dart.video' has no attribute '{name}'")
    return getattr(importlib.import_module(f"dart.video.{_HOME[name]}"), name)
