"""Where frames come from: a video file, a folder (or glob) of frames, a camera index or an RTSP/HTTP stream.

:func:`open_source` turns what the user typed into a :class:`VideoSource` — an iterator of :class:`Frame` (BGR
``uint8`` images with their frame number and time) that knows its fps, size and, for files, how many frames it
will yield. A source that cannot be opened is one sentence (:class:`~dart.errors.InputError`); a stream that dies
mid-way raises :class:`StreamError` *after* every frame decoded before, so what was processed stays valid.

:class:`DecodeAhead` decodes in a background thread into a bounded queue. For live sources (cameras, RTSP) it
drops the oldest queued frame instead of blocking, so the picture stays current when inference is slower than
the camera. A live source opened with ``reconnect=N`` is reopened (up to N tries in a row, 1, 2, 4, 8, 10 s
apart) when it stops sending frames, and frame numbers carry on.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dart.errors import DartError, InputError
from dart.images import expand_images
from dart.io import redact
from dart.preprocess import is_image_file, load_image

STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
DEFAULT_FOLDER_FPS = 30.0
LIVE_READ_RETRIES = 5
RECONNECT_FIRST_DELAY = 1.0  # seconds before the first reopening; doubled for each further try, up to 10 s
RECONNECT_MAX_DELAY = 10.0


class StreamError(DartError):
    """A source that stopped delivering frames part-way (network drop, unplugged camera, corrupt frame file)."""

    exit_code = 1


@dataclass
class Frame:
    index: int  # frame number in the source, from 0 (before --stride: frame 10 is the 11th frame of the file)
    image: np.ndarray  # BGR uint8 [H, W, 3]
    time: float  # seconds since the start of the source (index / fps for files, wall time for live sources)


class VideoSource:
    """Base class: iterate to get :class:`Frame` objects; ``close()`` (or ``with``) releases the device/file."""

    name: str = ""
    fps: float = DEFAULT_FOLDER_FPS
    size: tuple[int, int] | None = None  # (width, height), when known before the first frame
    total: int | None = None  # frames this source will yield (after start/stride/max_frames), when known
    live: bool = False
    decoded: int = 0  # frames delivered so far
    ended_early: bool = False  # a file whose frames ran out before the count its container announces

    def __iter__(self) -> Iterator[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass

    def interrupt(self) -> None:
        """Ask a source that is waiting (to reconnect, say) to stop waiting; called from another thread."""

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> str:
        size = f"{self.size[0]}x{self.size[1]}" if self.size else "size unknown"
        count = f"{self.total} frames" if self.total is not None else ("live" if self.live else "length unknown")
        return f"{self.name} ({size}, {self.fps:.2f} fps, {count})"


def _count_after(total: int, start: int, stride: int, max_frames: int | None) -> int:
    n = max(0, -(-(total - start) // stride))
    return n if max_frames is None else min(n, max_frames)


class CaptureSource(VideoSource):
    """A video file, camera or network stream read with OpenCV's ``VideoCapture`` (FFmpeg backend)."""

    def __init__(self, spec: str | int, *, start: int = 0, stride: int = 1, max_frames: int | None = None,
                 reconnect: int = 0):
        self.spec = spec
        self.start, self.stride, self.max_frames = start, stride, max_frames
        self.kind = "camera" if isinstance(spec, int) else ("stream" if str(spec).startswith(STREAM_PREFIXES) else "file")
        self.name = f"camera {spec}" if self.kind == "camera" else redact(str(spec))  # no password is ever shown
        self.reconnect = reconnect
        self.reconnects = 0  # successful reopenings
        self._tries = 0  # reopenings tried since the last frame
        self._interrupted = threading.Event()
        self.cap = self._open()
        if not self.cap.isOpened():
            self.cap.release()
            raise InputError(self._cannot_open())
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and 0 < fps < 1000 else DEFAULT_FOLDER_FPS
        width, height = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.size = (width, height) if width > 0 and height > 0 else None
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 and self.kind != "camera" else None
        self.live = self.kind == "camera" or (self.kind == "stream" and self.frame_count is None)
        if self.frame_count is not None:
            if start >= self.frame_count:
                self.cap.release()
                raise InputError(f"--start {start} is past the end of '{self.name}' ({self.frame_count} frames).")
            self.total = _count_after(self.frame_count, start, stride, max_frames)
        self.decoded = 0  # frames actually delivered
        self.ended_early = False  # a file that stopped before the frame count its container announces
        self._t0: float | None = None
        self._closed = False

    def _open(self) -> cv2.VideoCapture:
        if self.kind == "camera":
            return cv2.VideoCapture(self.spec)
        return cv2.VideoCapture(str(self.spec), cv2.CAP_FFMPEG)

    def _reopen(self) -> bool:
        """A live source stopped sending frames: reopen it, waiting longer before each try (``reconnect`` tries
        in a row at most; a frame received resets the count)."""
        while self.live and self._tries < self.reconnect:
            delay = min(RECONNECT_FIRST_DELAY * 2 ** self._tries, RECONNECT_MAX_DELAY)
            self._tries += 1
            if self._interrupted.wait(delay):
                return False
            self.cap.release()
            self.cap = self._open()
            if self.cap.isOpened():
                self.reconnects += 1
                return True
        return False

    def interrupt(self) -> None:
        self._interrupted.set()

    def _cannot_open(self) -> str:
        if self.kind == "camera":
            return f"cannot open camera {self.spec}: no such device, or another program is using it."
        if self.kind == "stream":
            return f"cannot open the stream '{self.name}': check the address, the credentials and the network."
        return (f"cannot read video '{self.name}': OpenCV could not open it (corrupt file, or a format/codec its "
                "FFmpeg does not know).")

    def _read(self) -> np.ndarray | None:
        tries = LIVE_READ_RETRIES if self.live else 1
        for attempt in range(tries):
            ok, image = self.cap.read()
            if ok and image is not None:
                return image
            if attempt + 1 < tries:
                time.sleep(0.05)
        return None

    def _skip(self, n: int) -> bool:
        for _ in range(n):
            if not self.cap.grab():
                return False
        return True

    def __iter__(self) -> Iterator[Frame]:
        if self.start and not self._skip(self.start):
            raise InputError(f"--start {self.start} is past the end of '{self.name}'.")
        index = self.start
        while self.max_frames is None or self.decoded < self.max_frames:
            image = self._read()
            if image is None and self.decoded and self._reopen():
                continue
            if image is None:
                self._end_of_stream(index)
                return
            self._tries = 0
            if self._t0 is None:
                self._t0 = time.monotonic()
            t = (time.monotonic() - self._t0) if self.live else index / self.fps
            if self.size is None:
                self.size = (image.shape[1], image.shape[0])
            yield Frame(index, image, t)
            self.decoded += 1
            index += 1
            if self.stride > 1:
                if not self._skip(self.stride - 1):
                    self._end_of_stream(index)
                    return
                index += self.stride - 1

    def _end_of_stream(self, index: int) -> None:
        if self.decoded == 0:
            raise InputError(f"cannot read video '{self.name}': no frame could be decoded." if self.kind == "file"
                             else f"'{self.name}' opened but sent no frames.")
        if self.total is not None and self.total - self.decoded > max(1, self.total // 100):
            # the container promised more frames than could be decoded (a frame or two short is a count estimate)
            self.ended_early = True
        if self.live:
            tried = f", and {self._tries} reconnection attempts failed" if self._tries else ""
            raise StreamError(f"'{self.name}' stopped sending frames after {self.decoded} frames{tried} "
                              f"(the results up to frame {index - 1} are saved).")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.cap.release()


class FolderSource(VideoSource):
    """Image files as frames, in name order: a folder, a glob (``'frames/*.jpg'``) or a single image."""

    def __init__(self, files: list[Path], name: str, *, start: int = 0, stride: int = 1, max_frames: int | None = None,
                 fps: float = DEFAULT_FOLDER_FPS):
        if start >= len(files):
            raise InputError(f"--start {start} is past the end of '{name}' ({len(files)} frames).")
        self.files = files
        self.indices = list(range(start, len(files), stride))[: max_frames]
        self.name = name
        self.fps = fps
        self.total = len(self.indices)
        first = load_image(files[self.indices[0]])
        self.size = (first.shape[1], first.shape[0])
        self.decoded = 0

    def __iter__(self) -> Iterator[Frame]:
        for index in self.indices:
            try:
                image = load_image(self.files[index])
            except InputError as exc:
                raise StreamError(f"frame {index} ({self.files[index].name}) cannot be read: {exc}") from exc
            yield Frame(index, image, index / self.fps)
            self.decoded += 1


def open_source(spec: str | int | Path, *, start: int = 0, stride: int = 1, max_frames: int | None = None,
                fps: float | None = None, reconnect: int = 0) -> VideoSource:
    """Open a video file, a folder/glob of images, a camera (``0`` or ``"0"``) or a URL (``rtsp://...``).

    ``start`` skips the first frames, ``stride`` keeps every n-th frame, ``max_frames`` caps the frames yielded,
    ``fps`` sets the rate of image folders (default 30), ``reconnect`` is how many times in a row a live camera or
    stream is reopened when it stops sending frames (0: stop with a :class:`StreamError`).
    """
    if reconnect < 0:
        raise InputError(f"--reconnect must be 0 or more, got {reconnect}.")
    if start < 0:
        raise InputError(f"--start must be 0 or more, got {start}.")
    if stride < 1:
        raise InputError(f"--stride must be 1 or more, got {stride}.")
    if max_frames is not None and max_frames < 1:
        raise InputError(f"--max-frames must be 1 or more, got {max_frames}.")
    opts = dict(start=start, stride=stride, max_frames=max_frames)
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        return CaptureSource(int(spec), reconnect=reconnect, **opts)
    text = str(spec)
    if text.startswith(STREAM_PREFIXES):
        return CaptureSource(text, reconnect=reconnect, **opts)
    folder_fps = fps or DEFAULT_FOLDER_FPS
    path = Path(text).expanduser()
    if any(ch in text for ch in "*?[") or path.is_dir():
        return FolderSource(expand_images([text]), text, fps=folder_fps, **opts)
    if not path.exists():
        raise InputError(f"video '{text}' does not exist.")
    if is_image_file(path):
        return FolderSource([path], text, fps=folder_fps, **opts)
    return CaptureSource(str(path), **opts)


# ------------------------------------------------------------------------------------------- decode ahead
_END = object()  # end of a queue of frames or results (also used by dart.video.pipeline's workers)


class _Failure:  # an exception handed from a worker thread to the consumer, in order
    def __init__(self, exc: BaseException):
        self.exc = exc


class DecodeAhead:
    """Iterate over ``source`` with decoding in a background thread, ``depth`` frames ahead.

    Frames come out in order; the source's errors come out after the frames decoded before them. Live sources
    drop their oldest queued frame rather than wait (``dropped`` counts them). ``close()`` stops the thread and
    releases the source (the thread owns it, so a blocked network read never races with the release).
    """

    def __init__(self, source: VideoSource, depth: int = 4, drop_when_full: bool | None = None):
        self.source = source
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.drop_when_full = source.live if drop_when_full is None else drop_when_full
        self.dropped = 0
        self.decode_ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dart-decode", daemon=True)
        self._started = False

    def _put(self, item) -> bool:
        drop = self.drop_when_full and isinstance(item, Frame)
        while not self._stop.is_set():
            try:
                if drop:
                    self.queue.put_nowait(item)
                else:
                    self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                if drop:  # a live source: make room by dropping the oldest frame, never wait
                    try:
                        self.queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass
        return False

    def _run(self) -> None:
        try:
            it = iter(self.source)
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    frame = next(it)
                except StopIteration:
                    break
                self.decode_ms.append((time.perf_counter() - t0) * 1000.0)
                if not self._put(frame):
                    return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, in order
            self._put(_Failure(exc))
        finally:
            self.source.close()

    def __iter__(self) -> Iterator[Frame]:
        if not self._started:
            self._started = True
            self._thread.start()
        while True:
            try:
                item = self.queue.get(timeout=0.1)
            except queue.Empty:
                if not self._thread.is_alive() and self.queue.empty():
                    return
                continue
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def close(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self.source.interrupt()  # a source waiting to reconnect gives up at once
        if self._started:
            self._thread.join(timeout)
        else:
            self.source.close()
