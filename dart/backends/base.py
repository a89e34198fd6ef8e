"""The contract every backend follows, so one :class:`~dart.detector.Detector` runs on any of them.

A backend runs the two exportable stages on its device:

- ``backbone(pixel_values [B, 3, S, S] float32, masks=True) -> (fpn_4x, fpn_2x, fpn_1x)`` (in the backend's
  compute dtype); the detector passes ``masks=False`` when it makes no masks, and a backend may then return None
  for the two finer levels, which only the mask decoder reads
- ``encdec(features, text [C, T, D], text_mask [C, T], return_state) -> {"logits" [B, C, Q],
  "boxes" [B, C, Q, 4] normalised xyxy, "presence" [B, C]}`` (+ opaque state for masks)
- ``masks(features, state, text, text_mask, pairs [P, 2]) -> mask logits [P, Q, h, w]`` (optional)
- ``encode_text(names) -> (features [C, T, D], mask [C, T])`` on the CPU in float32 (optional: engine
  backends run from a text cache instead)

and describes itself: ``name``, ``device``, ``dtype``, ``imgsz``, ``fingerprint``, ``max_classes``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from dart.errors import DependencyError, InputError


@runtime_checkable
class Backend(Protocol):
    name: str
    device: torch.device
    dtype: torch.dtype
    imgsz: int
    fingerprint: str
    max_classes: int | None  # the most classes one encdec call takes (None: any)
    supports_masks: bool
    has_text_encoder: bool

    def backbone(self, pixel_values: torch.Tensor, masks: bool = True) -> tuple[torch.Tensor | None, ...]:
        """FPN features ``(4x, 2x, 1x)``; with ``masks=False`` the two levels only the mask decoder reads may be
        None (a backend that skips them saves their time)."""
        ...

    def encdec(
        self, features: tuple[torch.Tensor, ...], text: torch.Tensor, text_mask: torch.Tensor, return_state: bool = False
    ) -> dict[str, torch.Tensor]: ...

    def masks(
        self,
        features: tuple[torch.Tensor, ...],
        state: dict[str, torch.Tensor],
        text: torch.Tensor,
        text_mask: torch.Tensor,
        pairs: torch.Tensor,
    ) -> torch.Tensor: ...

    def encode_text(self, names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]: ...


def describe_backend(backend: Backend) -> dict[str, str]:
    """What actually runs: ``{"backend", "device", "precision"}`` (for engines, the precision they were built
    at), for benchmark rows and result files."""
    precision = getattr(backend, "precision", None)
    if precision is None:
        meta = getattr(backend, "backbone_meta", None)
        precision = getattr(meta, "precision", None) or {v: k for k, v in PRECISIONS.items()}.get(backend.dtype, "?")
    return {"backend": str(backend.name), "device": str(backend.device), "precision": str(precision)}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda``/``cuda:N`` are checked, with a sentence."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(str(device))
    except RuntimeError as exc:
        raise InputError(f"unknown device '{device}': use auto, cpu, cuda or cuda:N.") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DependencyError(f"device '{device}' was requested but CUDA is not available here; use --device cpu.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device '{device}' does not exist: this machine has {torch.cuda.device_count()} GPU(s).")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DependencyError(f"device '{device}' was requested but this PyTorch has no usable Apple GPU (MPS); "
                                  "use --device cpu.")
    elif dev.type != "cpu":
        raise InputError(f"unsupported device '{device}': use auto, cpu, cuda or cuda:N.")
    return dev


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")  # torch.compile modes the torch backend takes
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


PRECISION_CHOICES = ("auto", *PRECISIONS)
AUTO_BF16_SPEEDUP = 1.5  # auto picks bf16 on a CPU where bf16 matrix products run at least this much faster


@functools.cache
def cpu_bf16_speedup() -> float:
    """How much faster this CPU multiplies bf16 matrices than fp32 ones, measured (a few 256x1024x1024 products,
    best of five each, about 20 ms): native bf16 (AVX512-BF16, AMX) gives 2-4x, emulated bf16 less than 1x."""
    import time

    a, b = torch.randn(256, 1024), torch.randn(1024, 1024)

    def best(x: torch.Tensor, y: torch.Tensor) -> float:
        x @ y  # warm up
        times = []
        for _ in range(5):
            start = time.perf_counter()
            x @ y
            times.append(time.perf_counter() - start)
        return min(times)

    with torch.inference_mode():
        return best(a, b) / max(best(a.bfloat16(), b.bfloat16()), 1e-9)


def choose_precision(precision: str, device: torch.device) -> tuple[str, str | None]:
    """``(precision, why)``: ``auto`` becomes bf16 on a GPU that supports it (else fp16) and on a CPU that
    multiplies bf16 natively (measured, :func:`cpu_bf16_speedup`), fp32 otherwise; other values stay as given
    (``why`` is None)."""
    if precision not in PRECISION_CHOICES:
        raise InputError(f"unknown precision '{precision}': use {', '.join(PRECISION_CHOICES)}.")
    if precision != "auto":
        return precision, None
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: this GPU computes in bf16"
        return "fp16", "auto: this GPU has no bf16"
    if device.type == "cpu":
        speedup = cpu_bf16_speedup()
        if speedup >= AUTO_BF16_SPEEDUP:
            return "bf16", f"auto: bf16 matrix products run {speedup:.1f}x faster than fp32 on this CPU"
        return "fp32", f"auto: bf16 is not faster than fp32 on this CPU ({speedup:.1f}x)"
    return "fp32", f"auto: fp32 on {device.type}"


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    precision, _ = choose_precision(precision, device)
    if precision == "fp16" and device.type == "cpu":
        raise InputError("fp16 needs a CUDA device; on the CPU use --precision fp32, bf16 or auto.")
    return PRECISIONS[precision]


# ------------------------------------------------------------------------------------------------ threads
THREADS_ENV = "DART_THREADS"
_threads: dict[str, int] = {}


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity, which containers and ``taskset`` restrict), not the
    machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def set_threads(threads: int | None = None) -> int:
    """Set the CPU threads of PyTorch, OpenCV and (for sessions made afterwards) onnxruntime: ``threads``, else
    ``$DART_THREADS``, else :func:`available_cpus`. Returns the number set.

    On a machine another process keeps busy, PyTorch's threads wait for each other at every operation; fewer
    threads than cores (often 1) is then much faster."""
    if threads is None and os.environ.get(THREADS_ENV, "").strip():
        raw = os.environ[THREADS_ENV].strip()
        if not raw.isdigit() or int(raw) < 1:
            raise InputError(f"{THREADS_ENV} must be a whole number of threads of 1 or more, got '{raw}'.")
        threads = int(raw)
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be 1 or more, got {threads}.")
    from dart.allocator import requested

    requested()  # the other process-wide CPU setting: a bad DART_CPU_ALLOCATOR is refused before a model loads
    count = threads or available_cpus()
    torch.set_num_threads(count)
    try:
        import cv2

        cv2.setNumThreads(count)
    except ImportError:  # pragma: no cover - OpenCV is a dependency
        pass
    _threads["count"] = count
    return count


def thread_count() -> int | None:
    """The count :func:`set_threads` set in this process, if it was called."""
    return _threads.get("count")
