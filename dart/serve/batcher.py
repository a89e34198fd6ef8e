"""Dynamic batching for the server: one worker thread owns the detector; requests wait on futures.

Requests are queued (at most ``queue_size``; a full queue is :class:`Busy`, which the app answers with 503 and
``Retry-After``). The worker takes the first request, waits at most ``max_wait_ms`` for more (up to ``max_batch``),
and runs each group of requests that share classes and thresholds as one :meth:`Detector.detect_batch`: one
backbone batch, one encoder-decoder pass per class chunk. Text features are cached per prompt by the detector's
text cache, so a vocabulary is encoded once.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from dart.detections import Detections


class Busy(Exception):
    """The request queue is full."""


@dataclass(frozen=True)
class Settings:
    """What a request asks of the detector besides its image (requests with equal settings share a batch)."""

    classes: tuple[str, ...]
    conf: float
    nms: float | None
    masks: bool


@dataclass
class Job:
    image: np.ndarray  # BGR
    settings: Settings
    future: Future = field(default_factory=Future)


class Batcher:
    def __init__(self, detector: Any, *, max_batch: int = 4, max_wait_ms: float = 5.0, queue_size: int = 64):
        self.detector = detector
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=max(1, int(queue_size)))
        self.batches: list[int] = []  # sizes of the batches run (for tests and the load test)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dart-serve-batcher", daemon=True)
        self._thread.start()

    def submit(self, image: np.ndarray, settings: Settings) -> Future:
        job = Job(image, settings)
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise Busy from None
        return job.future

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    # ------------------------------------------------------------------------------------------ worker
    def _take(self) -> list[Job]:
        try:
            first = self.queue.get(timeout=0.1)
        except queue.Empty:
            return []
        jobs = [first]
        deadline = time.monotonic() + self.max_wait
        while len(jobs) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                jobs.append(self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait())
            except queue.Empty:
                break
        return jobs

    def _run(self) -> None:
        while not self._stop.is_set():
            jobs = self._take()
            groups: dict[Settings, list[Job]] = {}
            for job in jobs:
                groups.setdefault(job.settings, []).append(job)
            for settings, group in groups.items():
                self._run_group(settings, group)

    def _run_group(self, settings: Settings, jobs: Sequence[Job]) -> None:
        detector = self.detector
        try:
            if list(settings.classes) != detector.classes:
                detector.set_classes(list(settings.classes))
            detector.post = replace(detector.post, conf=settings.conf, nms_iou=settings.nms)
            detector.masks = settings.masks
            found: list[Detections] = detector.detect_batch([job.image for job in jobs])
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
            for job in jobs:
                job.future.set_exception(exc)
            return
        self.batches.append(len(jobs))
        for job, dets in zip(jobs, found):
            job.future.set_result(dets)
