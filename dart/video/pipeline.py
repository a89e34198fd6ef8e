"""Run a :class:`~dart.detector.Detector` (and optionally a tracker) over a video source and write the results.

Two runners produce the same detections, frame for frame:

- **sequential** — decode, detect, track, draw and write one frame after the other on the calling thread.
- **pipelined** (default) — decoding runs ahead in its own thread, and tracking, drawing and writing of frame t
  overlap the detection of frame t+1. On CUDA the detector is split in two workers on separate CUDA streams: the
  backbone of frame t+1 runs while the encoder-decoder (and post-processing) of frame t runs, and the calling
  thread handles the results. On the CPU detection stays on the calling thread (PyTorch's CPU kernels run
  fastest there) and a worker thread handles the results — unless a preview window is open, which must live on
  the calling thread; detection then moves to a worker. Queues between the stages are bounded (memory stays
  flat on long streams) and frames leave the pipeline in order.

However a run ends — the end of the source, ``max_frames``, ``q``/``Esc`` in the preview window, Ctrl-C or a
stream that dies — every output is flushed and closed, so what was processed is kept and valid.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np  # (torch is imported where it is used: importing dart.video to check files stays light)
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from dart.detections import Detections
from dart.errors import DartError, InputError
from dart.io import interrupt_deferred
from dart.timing import StageTimer
from dart.tracking.base import takes_image
from dart.video.overlay import Display, TrackOverlay, draw_status
from dart.video.sources import _END, DecodeAhead, Frame, VideoSource, _Failure, open_source
from dart.video.writers import JsonlWriter, MotWriter, VideoWriter

FrameCallback = Callable[[Frame, Detections], Any]


@dataclass
class VideoResult:
    """What a run did: frames processed, wall time, how it stopped, per-stage milliseconds, files written."""

    source: str
    mode: str
    frames: int = 0
    seconds: float = 0.0
    stopped: str = "end"  # end | user (q / Esc / callback) | interrupted (Ctrl-C) | error
    expected: int | None = None  # frames the source announced (files), when known
    ended_early: bool = False  # the source ran out of frames before ``expected`` (a truncated or damaged file)
    error: DartError | None = None
    dropped: int = 0  # live frames dropped because inference was slower than the source
    reconnects: int = 0  # times a live source was reopened after it stopped sending frames
    detections: int = 0
    track_ids: set[int] = field(default_factory=set)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "mode": self.mode, "frames": self.frames, "seconds": round(self.seconds, 4),
                "fps": round(self.fps, 3), "stopped": self.stopped, "error": str(self.error) if self.error else None,
                "dropped": self.dropped, "reconnects": self.reconnects, "detections": self.detections,
                "tracks": len(self.track_ids), "expected": self.expected, "ended_early": self.ended_early,
                "stages": self.stages, "outputs": self.outputs}


# ----------------------------------------------------------------------------------------------- the sink
class _FpsMeter:
    def __init__(self, window: int = 30):
        self.times: deque[float] = deque(maxlen=window)

    def tick(self) -> float:
        self.times.append(time.perf_counter())
        if len(self.times) < 2:
            return 0.0
        return (len(self.times) - 1) / max(self.times[-1] - self.times[0], 1e-9)


class FrameSink:
    """Everything that happens to a frame after detection, always on the calling thread and in frame order:
    tracking, drawing, writing (video, JSONL, MOT), the preview window, progress and the user callback."""

    def __init__(self, *, tracker=None, output: str | Path | None = None, save_jsonl: str | Path | None = None,
                 save_mot: str | Path | None = None, display: bool = False, fps: float = 30.0,
                 on_frame: FrameCallback | None = None, timer: StageTimer | None = None):
        if save_mot is not None and tracker is None:
            raise InputError("--save-mot writes track IDs: turn tracking on (--track, or use `dart track`).")
        self.tracker = tracker
        # trackers that look at the frame (camera motion compensation) get it; others keep update(detections)
        self._tracker_image = tracker is not None and takes_image(tracker)
        self.timer = timer or StageTimer()
        self.on_frame = on_frame
        self.video = VideoWriter(output, fps) if output is not None else None
        self.jsonl = JsonlWriter(save_jsonl) if save_jsonl is not None else None
        self.mot = MotWriter(save_mot) if save_mot is not None else None
        self.display = Display() if display else None
        self.overlay = TrackOverlay() if (self.video or self.display) else None
        self.meter = _FpsMeter()
        self.fps = 0.0
        self.frames = 0
        self.detections = 0
        self.track_ids: set[int] = set()
        self.first_frame_marks: list = []  # exemplar boxes drawn on the first frame, shown dashed on it

    def handle(self, frame: Frame, dets: Detections) -> bool:
        """Process one frame; False when the user asked to stop (q / Esc, or the callback returned False)."""
        if self.tracker is not None:
            with self.timer("track"):
                dets = (self.tracker.update(dets, image=frame.image) if self._tracker_image
                        else self.tracker.update(dets))
            self.track_ids.update(dets.track_ids.tolist())
        keep_going = True
        with interrupt_deferred():  # a frame is counted and in every output, or in none of them
            self.frames += 1
            self.detections += len(dets)
            if self.jsonl or self.mot:
                with self.timer("write"):
                    size = frame.image.shape[:2]
                    if self.jsonl:
                        self.jsonl.write(frame.index, frame.time, dets, size)
                    if self.mot:
                        self.mot.write(frame.index, dets)
            if self.overlay is not None:
                with self.timer("draw"):
                    drawn = self.overlay.draw(frame.image, dets, self.first_frame_marks if self.frames == 1 else ())
                if self.video:
                    with self.timer("write"):
                        self.video.write(drawn)
        if self.overlay is not None:
            if self.display:
                with self.timer("display"):
                    draw_status(drawn, f"{self.fps:.1f} FPS  frame {frame.index}  {len(dets)} objects")
                    keep_going = self.display.show(drawn)
        self.fps = self.meter.tick()
        if self.on_frame is not None and self.on_frame(frame, dets) is False:
            keep_going = False
        return keep_going

    def close(self) -> dict[str, str]:
        """Flush and close every output (safe to call more than once); returns what was written."""
        written = {}
        errors = []
        for key, writer in (("video", self.video), ("jsonl", self.jsonl), ("mot", self.mot)):
            if writer is None:
                continue
            try:
                if writer.close():
                    written[key] = str(writer.path)
            except OSError as exc:  # keep closing the others
                errors.append(f"{writer.path}: {exc}")
        if self.display:
            self.display.close()
        if errors:
            raise DartError(f"could not finish writing {errors[0]}.")
        return written


# ------------------------------------------------------------------------------------------- the threads
# the end marker and the forwarded-failure wrapper are the decoder thread's (dart.video.sources)


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _drain(q: queue.Queue, stop: threading.Event) -> Iterator[Any]:
    """Items of ``q`` until the end marker; a forwarded failure is re-raised here, in order."""
    while not stop.is_set():
        try:
            item = q.get(timeout=0.1)
        except queue.Empty:
            continue
        if item is _END:
            return
        if isinstance(item, _Failure):
            raise item.exc
        yield item


class _Worker(threading.Thread):
    """Apply ``fn`` to each item of ``inbox`` and queue the results; errors are queued too, after the results."""

    def __init__(self, name: str, fn: Callable[[Any], Any], inbox: Iterable[Any], outbox: queue.Queue,
                 stop: threading.Event):
        super().__init__(name=name, daemon=True)
        self.fn, self.inbox, self.outbox, self.stop = fn, inbox, outbox, stop

    def run(self) -> None:
        import torch

        try:
            with torch.inference_mode():
                for item in self.inbox:
                    if self.stop.is_set() or not _put(self.outbox, self.fn(item), self.stop):
                        return
            _put(self.outbox, _END, self.stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            _put(self.outbox, _Failure(exc), self.stop)


def _is_cuda(detector) -> bool:
    import torch

    return torch.device(str(detector.backend.device)).type == "cuda"


def _pipelined_stages(detector, frames: Iterable[Frame], stop: threading.Event, depth: int,
                      overlap_stages: bool) -> tuple[list[_Worker], queue.Queue]:
    """Start the detection workers; returns them and the queue of ``(frame, detections)`` in frame order."""
    results: queue.Queue = queue.Queue(maxsize=depth)
    if not overlap_stages:
        def detect(frame: Frame):
            return frame, detector.detect(frame.image)

        worker = _Worker("dart-detect", detect, frames, results, stop)
        return [worker], results

    import torch

    cuda = _is_cuda(detector)
    device = torch.device(str(detector.backend.device))
    backbone_stream = torch.cuda.Stream(device) if cuda else None
    heads_stream = torch.cuda.Stream(device) if cuda else None
    middle: queue.Queue = queue.Queue(maxsize=2)

    def backbone(frame: Frame):
        with torch.cuda.stream(backbone_stream) if cuda else nullcontext():
            pixels, sizes = detector.prepare([frame.image])
            features = detector.run_backbone(pixels)
            event = None
            if cuda:
                event = torch.cuda.Event()
                event.record(backbone_stream)
        return frame, features, sizes, event

    def heads(item):
        frame, features, sizes, event = item
        with torch.cuda.stream(heads_stream) if cuda else nullcontext():
            if cuda:
                heads_stream.wait_event(event)  # the backbone of this frame is done
                for tensor in features:
                    if isinstance(tensor, torch.Tensor) and tensor.is_cuda:
                        tensor.record_stream(heads_stream)  # memory made on the other stream, used here
            raw = detector.run_heads(features, 1, sizes)
            dets = detector.finish(raw, sizes)[0]
        return frame, dets

    first = _Worker("dart-backbone", backbone, frames, middle, stop)
    second = _Worker("dart-heads", heads, _drain(middle, stop), results, stop)
    return [first, second], results


# ------------------------------------------------------------------------------------------------ runner
def _progress(source: VideoSource, enabled: bool, console: Console | None) -> Progress:
    columns = [TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[fps]:.1f} FPS"), TimeElapsedColumn()]
    if source.total is not None:
        columns.append(TimeRemainingColumn())
    return Progress(*columns, console=console, disable=not enabled, transient=False)


class _FirstFrameExemplars:
    """A source whose first frame becomes the reference image of the detector's exemplar boxes that have none
    (boxes drawn "on the detected image" mean, in a video, on its first frame); everything else is the source's."""

    def __init__(self, source: VideoSource, detector):
        self._source, self._detector = source, detector

    def __iter__(self) -> Iterator[Frame]:
        for index, frame in enumerate(self._source):
            if index == 0:
                self._detector.anchor_exemplars(frame.image)
            yield frame

    def __getattr__(self, name: str):
        return getattr(self._source, name)


def run_video(
    detector,
    source: VideoSource | str | int | Path,
    *,
    tracker=None,
    output: str | Path | None = None,
    save_jsonl: str | Path | None = None,
    save_mot: str | Path | None = None,
    display: bool = False,
    sequential: bool = False,
    progress: bool = True,
    console: Console | None = None,
    on_frame: FrameCallback | None = None,
    depth: int = 4,
    overlap_stages: bool | None = None,
) -> VideoResult:
    """Detect (and track) every frame of ``source``; write ``output`` (annotated video), ``save_jsonl``,
    ``save_mot``; show a preview window with ``display``.

    ``sequential=True`` turns the pipelining off. ``overlap_stages`` (default: on CUDA; never for a detector with
    ``splits_stages = False`` such as :class:`~dart.tiling.TiledDetector`) splits detection into a
    backbone worker and an encoder-decoder worker on separate CUDA streams. ``on_frame(frame, detections)`` is
    called for every frame in order (return False to stop). Ctrl-C stops cleanly (``result.stopped ==
    "interrupted"``); a source that dies mid-stream raises its :class:`~dart.errors.DartError` after every
    output is closed, with the partial :class:`VideoResult` as ``exc.result``.
    """
    if not isinstance(source, VideoSource):
        source = open_source(source)
    marks = []
    if getattr(detector, "has_in_image_exemplars", False):
        marks = detector.exemplar_marks()  # the boxes as drawn on the first frame, before they become its tokens
        source = _FirstFrameExemplars(source, detector)  # type: ignore[assignment]
    mode = "sequential" if sequential else "pipelined"
    result = VideoResult(source=source.name, mode=mode)
    timer = StageTimer()
    stride = getattr(source, "stride", 1)
    try:
        sink = FrameSink(tracker=tracker, output=output, save_jsonl=save_jsonl, save_mot=save_mot, display=display,
                         fps=source.fps / stride, on_frame=on_frame, timer=timer)
    except BaseException:
        source.close()
        raise
    sink.first_frame_marks = marks
    previous_timer, detector.timer = detector.timer, StageTimer()
    stop = threading.Event()
    workers: list[_Worker] = []
    reader: DecodeAhead | None = None
    bar = _progress(source, progress, console)
    start = time.perf_counter()
    try:
        with bar:
            task = bar.add_task(f"{mode} {Path(source.name).name or source.name}", total=source.total, fps=0.0)
            def advance() -> None:
                bar.update(task, advance=1, fps=sink.fps)

            if sequential:
                result.stopped = _consume(_sequential(detector, source, timer), sink, advance)
            else:
                reader = DecodeAhead(source, depth=depth)
                overlap = _is_cuda(detector) if overlap_stages is None else overlap_stages
                overlap = overlap and getattr(detector, "splits_stages", True)  # a tiled detector runs whole
                if overlap or display:
                    # detection in worker threads (on CUDA: backbone and encoder-decoder on their own streams);
                    # the caller's thread handles the frames (a preview window must live on it)
                    workers, results = _pipelined_stages(detector, reader, stop, depth, overlap)
                    for worker in workers:
                        worker.start()
                    result.stopped = _consume(_drain(results, stop), sink, advance)
                else:
                    # CPU: detection stays on the caller's thread (PyTorch's CPU kernels are fastest there) and a
                    # worker thread tracks, draws and writes the previous frames
                    result.stopped = _detect_here_handle_there(detector, reader, sink, advance, depth)
    except KeyboardInterrupt:
        result.stopped = "interrupted"
    except DartError as exc:
        result.stopped = "error"
        result.error = exc
    finally:
        result.seconds = time.perf_counter() - start
        stop.set()
        for worker in workers:
            worker.join(timeout=5.0)
        if reader is not None:
            reader.close()
            result.dropped = reader.dropped
            timer.records["decode"] = list(reader.decode_ms)
        source.close()
        result.reconnects = getattr(source, "reconnects", 0)
        result.expected = source.total
        result.ended_early = bool(source.ended_early) and result.stopped == "end"
        detector_timer, detector.timer = detector.timer, previous_timer
        result.outputs = sink.close()
        result.frames = sink.frames
        result.detections = sink.detections
        result.track_ids = sink.track_ids
        result.stages = {**_summary(timer, ("decode",)), **detector_timer.summary(),
                         **_summary(timer, ("track", "draw", "write", "display"))}
    if result.error is not None:
        result.error.result = result  # type: ignore[attr-defined]
        raise result.error
    return result


def _consume(pairs: Iterable[tuple[Frame, Detections]], sink: FrameSink, advance: Callable[[], None]) -> str:
    for frame, dets in pairs:
        keep_going = sink.handle(frame, dets)
        advance()
        if not keep_going:
            return "user"
    return "end"


class _SinkWorker(threading.Thread):
    """Hands ``(frame, detections)`` pairs to the sink in order, on its own thread."""

    def __init__(self, sink: FrameSink, inbox: queue.Queue, advance: Callable[[], None]):
        super().__init__(name="dart-output", daemon=True)
        self.sink, self.inbox, self.advance = sink, inbox, advance
        self.abort = threading.Event()  # set by the caller: stop now (Ctrl-C)
        self.done = threading.Event()  # set here when the thread ends, for whatever reason
        self.failure: BaseException | None = None
        self.stopped = "end"

    def run(self) -> None:
        try:
            self.stopped = _consume(_drain(self.inbox, self.abort), self.sink, self.advance)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            self.failure = exc
        finally:
            self.done.set()


def _detect_here_handle_there(detector, frames: Iterable[Frame], sink: FrameSink, advance: Callable[[], None],
                              depth: int) -> str:
    """Detect on the calling thread while a worker handles the previous frames; every frame detected before an
    error of the source is handled before the error propagates."""
    inbox: queue.Queue = queue.Queue(maxsize=depth)
    worker = _SinkWorker(sink, inbox, advance)
    worker.start()
    try:
        for frame in frames:
            if worker.done.is_set():
                break
            dets = detector.detect(frame.image)
            if not _put(inbox, (frame, dets), worker.done):
                break
    except KeyboardInterrupt:
        worker.abort.set()
        raise
    finally:
        _put(inbox, _END, worker.done)
        worker.join()
    if worker.failure is not None:
        raise worker.failure
    return worker.stopped


def _summary(timer: StageTimer, stages: tuple[str, ...]) -> dict[str, dict[str, float]]:
    full = timer.summary()
    return {s: full[s] for s in stages if s in full}


def _sequential(detector, source: VideoSource, timer: StageTimer) -> Iterator[tuple[Frame, Detections]]:
    frames = iter(source)
    while True:
        with timer("decode"):
            frame = next(frames, None)
        if frame is None:
            return
        yield frame, detector.detect(frame.image)


# --------------------------------------------------------------------------------------------- benchmark
def benchmark_video(detector, source: str | int | Path, max_frames: int = 100, warmup: int = 5, *,
                    start: int = 0, stride: int = 1, depth: int = 4) -> dict[str, Any]:
    """Sequential vs pipelined FPS of ``detector`` on the same frames of ``source`` (no outputs written).

    Returns ``{"source", "frames", "device", "backend", "classes", "imgsz", "sequential": {...},
    "pipelined": {...}, "speedup", "identical"}`` where each mode has ``fps``, ``ms_per_frame``, ``seconds`` and
    per-stage ``stages`` (median ms), and ``identical`` says whether both modes gave the same detections.
    """
    if isinstance(source, VideoSource):
        raise InputError("benchmark_video needs a source it can open twice: pass a path, URL or camera index.")
    if warmup > 0:
        with open_source(source, start=start, stride=stride, max_frames=warmup) as warm:
            for frame in warm:
                detector.detect(frame.image)
    runs: dict[str, VideoResult] = {}
    outputs: dict[str, list[Detections]] = {}
    for mode in ("sequential", "pipelined"):
        collected: list[Detections] = []
        src = open_source(source, start=start, stride=stride, max_frames=max_frames)
        runs[mode] = run_video(detector, src, sequential=mode == "sequential", progress=False, depth=depth,
                               on_frame=lambda _frame, dets, out=collected: out.append(dets))
        outputs[mode] = collected
    seq, pip = runs["sequential"], runs["pipelined"]

    def entry(run: VideoResult) -> dict[str, Any]:
        return {"fps": run.fps, "ms_per_frame": 1000.0 / run.fps if run.fps else float("nan"),
                "seconds": run.seconds, "frames": run.frames,
                "stages": {k: v["median"] for k, v in run.stages.items()}}

    return {
        "source": str(source),
        "frames": seq.frames,
        "device": str(detector.backend.device),
        "backend": detector.backend.name,
        "classes": len(detector.classes),
        "imgsz": detector.backend.imgsz,
        "sequential": entry(seq),
        "pipelined": entry(pip),
        "speedup": pip.fps / seq.fps if seq.fps else float("nan"),
        "identical": same_detections(outputs["sequential"], outputs["pipelined"]),
    }


bench_video = benchmark_video


def same_detections(a: list[Detections], b: list[Detections], atol: float = 0.0) -> bool:
    """Whether two runs gave the same boxes, scores and classes on every frame (exactly, by default)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if len(x) != len(y) or not np.array_equal(x.class_ids, y.class_ids):
            return False
        if not (np.allclose(x.xyxy, y.xyxy, atol=atol, rtol=0) and np.allclose(x.scores, y.scores, atol=atol, rtol=0)):
            return False
    return True


# ------------------------------------------------------------------------------------- saved detections
def track_saved_detections(path: str | Path, tracker, *, save_mot: str | Path | None = None,
                           save_jsonl: str | Path | None = None, start: int = 0, stride: int = 1,
                           max_frames: int | None = None, progress: bool = True,
                           console: Console | None = None) -> dict[str, Any]:
    """Run ``tracker`` over the frames of a ``dart video --save-jsonl`` file (no model involved) and write MOT
    rows and/or tracked JSONL. Track IDs already in the file are ignored; masks are not carried over.

    Returns ``{"frames", "detections", "tracked", "tracks", "ms_per_frame", "outputs"}``.
    """
    from dart.video.writers import read_jsonl

    records = read_jsonl(path)[start::stride][:max_frames]
    mot = MotWriter(save_mot) if save_mot is not None else None
    jsonl = JsonlWriter(save_jsonl) if save_jsonl is not None else None
    stats: dict[str, Any] = {"frames": 0, "detections": 0, "tracked": 0, "tracks": 0, "ms_per_frame": 0.0,
                             "outputs": {}}
    ids: set[int] = set()
    spent = 0.0
    columns = [TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn()]
    try:
        with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
            task = bar.add_task(f"track {Path(path).name}", total=len(records))
            for frame, when, size, rows in records:
                rows = [{k: v for k, v in r.items() if k not in ("mask", "track_id")} for r in rows]
                dets = Detections.from_json(rows, image_size=size)
                t0 = time.perf_counter()
                tracked = tracker.update(dets)
                spent += time.perf_counter() - t0
                ids.update(tracked.track_ids.tolist())
                if mot:
                    mot.write(frame, tracked)
                if jsonl:
                    jsonl.write(frame, when, tracked, size)
                stats["frames"] += 1
                stats["detections"] += len(dets)
                stats["tracked"] += len(tracked)
                bar.advance(task)
    finally:
        for key, writer in (("mot", mot), ("jsonl", jsonl)):
            if writer is not None and writer.close():
                stats["outputs"][key] = str(writer.path)
    stats["tracks"] = len(ids)
    stats["ms_per_frame"] = 1000.0 * spent / max(1, stats["frames"])
    return stats
