"""The C allocator's settings for PyTorch on a CPU: freed memory kept in the process for the next tensor.

PyTorch's CPU tensors come from ``malloc``. glibc serves blocks above its mmap threshold (128 KiB, raised at run
time to at most 32 MiB) with a fresh ``mmap`` and returns them to the kernel on ``free``; it also hands the top
of its heap back once more than the trim threshold is free there. SAM3's activations at 1008 px are 10-700 MB
each and are freed and asked for again in every layer, so by default each one costs a fresh mapping whose pages
the kernel faults in and zeroes. :func:`keep_freed_memory` raises both thresholds so
that those blocks are reused from the heap instead: measured 1.20-1.34x on a whole bf16 image of the full-size
model at 1-80 classes on a 2-vCPU Xeon, 1.09-1.11x in fp32 (BENCHMARKS.md, "The C allocator"), for up to 0.9 GB
more peak memory. The numbers computed do not change (tests/test_allocator.py).

It is a setting of the whole process (``mallopt``), like the ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` environment variables that glibc reads at start-up. ``TorchBackend`` applies it when
it runs on a CPU, and so does the pruning search's scorer (OpenVINO's backend does not: no gain measured there);
set ``DART_CPU_ALLOCATOR=system`` to leave the allocator as it was. Elsewhere (macOS, musl, Windows) it does
nothing: their allocators are not glibc's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform

ENV = "DART_CPU_ALLOCATOR"
CHOICES = ("keep", "system")

# mallopt's parameter numbers in glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

# blocks up to 1 GiB come from the heap (the largest SAM3 activation, the DETR encoder's feed-forward over 16
# classes in fp32, [16, 5184, 2048], is 0.68 GB)
MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes an int: the top of the heap is returned past about 2 GiB free


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """glibc itself, or ``None`` where the C library is another one (looked up once)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def requested() -> str:
    """The setting asked for by ``DART_CPU_ALLOCATOR`` (default ``keep``), checked with a sentence."""
    value = os.environ.get(ENV, "keep").strip().lower() or "keep"
    if value not in CHOICES:
        from dart.errors import InputError

        raise InputError(f"{ENV}={os.environ[ENV]!r} is not a setting: use keep (the default) or system.")
    return value


_in_force = False


def _apply() -> bool:
    libc = _glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # setting either threshold also stops glibc from moving the other one at run time
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def keep_freed_memory() -> bool:
    """Make this process's ``malloc`` keep freed blocks of up to 1 GiB for reuse (see the module docstring).
    Returns whether the setting is in force: ``False`` where ``DART_CPU_ALLOCATOR=system`` asks to leave the
    allocator alone, or the C library is not glibc. Applied once per process; later calls only report."""
    global _in_force
    if requested() == "system":
        return _in_force
    if not _in_force:
        _in_force = _apply()
    return _in_force


def is_glibc() -> bool:
    """Whether this process's C library is glibc, the one whose settings this module changes."""
    return _glibc() is not None


def in_force() -> bool:
    """Whether :func:`keep_freed_memory` has changed this process's allocator."""
    return _in_force


def describe() -> str:
    """How this process's ``malloc`` treats large freed blocks, in words (for benchmark rows): dart's setting,
    glibc's own ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` variables, glibc's defaults, or another C
    library."""
    if _in_force:
        return "kept for reuse (dart)"
    if not is_glibc():
        return "not glibc"
    named = [name for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_") if os.environ.get(name)]
    return f"glibc set by {' and '.join(named)}" if named else "glibc defaults"
