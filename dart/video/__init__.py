"""Video and streams: frame sources with decode-ahead, sequential and pipelined detection runners, outputs
(annotated video, JSONL, MOT) that survive interruptions, and the live preview."""

from dart.video.pipeline import (FrameSink, VideoResult, benchmark_video, run_video, same_detections,
                                 track_saved_detections)
from dart.video.sources import DecodeAhead, Frame, StreamError, VideoSource, open_source
from dart.video.writers import JsonlWriter, MotWriter, VideoWriter, read_jsonl

__all__ = ["DecodeAhead", "Frame", "FrameSink", "JsonlWriter", "MotWriter", "StreamError", "VideoResult",
           "VideoSource", "VideoWriter", "benchmark_video", "open_source", "read_jsonl", "run_video",
           "same_detections", "track_saved_detections"]
