"""Per-stage wall-clock timing (CUDA-synchronised when asked) for ``--benchmark`` and ``dart bench``."""

from __future__ import annotations

import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

STAGES = ("preprocess", "backbone", "text", "encdec", "post")


class StageTimer:
    """Collects milliseconds per stage. With ``sync=True`` CUDA work is awaited at each stage boundary, so the
    numbers are the real GPU times (at a small cost); without it, GPU stages only measure the launch."""

    def __init__(self, sync: bool = False):
        self.sync = sync
        self.records: dict[str, list[float]] = defaultdict(list)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if self.sync:
            _synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.sync:
                _synchronize()
            self.records[stage].append((time.perf_counter() - start) * 1000.0)

    def reset(self) -> None:
        self.records.clear()

    def summary(self) -> dict[str, dict[str, float]]:
        """``{stage: {"median": ms, "mean": ms, "min": ms, "n": count}}`` in pipeline order."""
        order = [s for s in STAGES if s in self.records] + [s for s in self.records if s not in STAGES]
        return {
            s: {
                "median": statistics.median(self.records[s]),
                "mean": statistics.fmean(self.records[s]),
                "min": min(self.records[s]),
                "n": len(self.records[s]),
            }
            for s in order
            if self.records[s]
        }


def _synchronize() -> None:
    """Wait for the GPU's queued work (nothing to wait for where torch was never imported)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


def profile_stages(detector, image, warmup: int = 3, runs: int = 10) -> dict[str, dict[str, float]]:
    """Per-stage timings of ``detector.detect(image)``: ``warmup`` untimed runs, then ``runs`` CUDA-synchronised
    ones. The one-off text encoding of the class list is reported as measured when the classes were set."""
    text = detector.timer.records.get("text", [])[-1:]
    for _ in range(max(0, warmup)):
        detector.detect(image)
    timer = StageTimer(sync=True)
    previous, detector.timer = detector.timer, timer
    try:
        for _ in range(max(1, runs)):
            detector.detect(image)
    finally:
        detector.timer = previous
    if text:
        timer.records["text"] = list(text)
    return timer.summary()
