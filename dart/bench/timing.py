"""Stage timers for benchmarks: CUDA events on the GPU, ``perf_counter`` on the CPU.

Both follow :class:`dart.timing.StageTimer`'s interface (``with timer("backbone"): ...`` and ``summary()``), so a
benchmark swaps one into a :class:`~dart.detector.Detector` and reads per-stage medians back.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from dart.timing import STAGES, StageTimer


class CudaEventTimer:
    """Per-stage GPU time from CUDA events recorded on the current stream: no synchronisation inside the timed
    region, one ``synchronize`` when the numbers are read."""

    def __init__(self, device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else torch.device("cuda")
        self.pending: dict[str, list[tuple[Any, Any]]] = defaultdict(list)
        self.records: dict[str, list[float]] = defaultdict(list)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        try:
            yield
        finally:
            end.record()
            self.pending[stage].append((start, end))

    def _resolve(self) -> None:
        if not self.pending:
            return
        torch.cuda.synchronize(self.device)
        for stage, pairs in self.pending.items():
            self.records[stage].extend(s.elapsed_time(e) for s, e in pairs)
        self.pending.clear()

    def reset(self) -> None:
        self.pending.clear()
        self.records.clear()

    def summary(self) -> dict[str, dict[str, float]]:
        self._resolve()
        order = [s for s in STAGES if s in self.records] + [s for s in self.records if s not in STAGES]
        return {s: {"median": statistics.median(v), "mean": statistics.fmean(v), "min": min(v), "n": len(v)}
                for s in order if (v := self.records[s])}


def stage_timer(device: torch.device | str) -> CudaEventTimer | StageTimer:
    """CUDA events on a CUDA device; wall clock (no synchronisation needed) on the CPU."""
    device = torch.device(device)
    return CudaEventTimer(device) if device.type == "cuda" else StageTimer(sync=False)


def synchronize(device: torch.device | str) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], device: torch.device | str, warmup: int, runs: int) -> list[float]:
    """Milliseconds of ``runs`` calls of ``fn`` after ``warmup`` untimed ones, each synchronised on the device."""
    for _ in range(max(0, warmup)):
        fn()
    times = []
    for _ in range(max(1, runs)):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def alternating(calls: dict[str, Callable[[], Any]], runs: int) -> dict[str, list[float]]:
    """Seconds of ``runs`` calls of each of ``calls`` (name -> function), taken in turn and in alternating order
    (A B, then B A, ...), so that a machine whose speed drifts weighs on every side alike: an A/B in one process."""
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for run in range(max(1, runs)):
        for name in names if run % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times
