"""Errors that reach the user as one sentence and a meaningful exit code (never a traceback).

Exit codes: 1 runtime failure, 2 bad input or usage, 3 model or checkpoint problem, 4 missing optional
dependency or hardware, 130 interrupted.
"""

from __future__ import annotations


class DartError(Exception):
    """Base class: the message is a complete sentence that says what happened and what to do."""

    exit_code = 1


class InputError(DartError):
    """Bad user input: a missing image, an empty class list, an imgsz that is not a multiple of 14, ..."""

    exit_code = 2


class CheckpointError(DartError):
    """A checkpoint that cannot be found, downloaded, read or loaded strictly."""

    exit_code = 3


class CacheError(DartError):
    """A text cache that is corrupt or belongs to another model."""

    exit_code = 2


class DependencyError(DartError):
    """An optional dependency or a device (CUDA, TensorRT) that this operation needs is missing."""

    exit_code = 4
