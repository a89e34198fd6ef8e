"""Errors that reach the user as one sentence and a meaningful exit code (never a traceback).

Exit codes (docs/exit-codes.md): 0 success, 1 runtime failure (a source or a write that failed part-way, an
internal error), 2 bad input or usage (including an output that would overwrite an input or an earlier result),
3 model or checkpoint problem, 4 missing optional dependency or hardware, 130 interrupted.
"""

from __future__ import annotations


class DartError(Exception):
    """Base class: the message is a complete sentence that says what happened and what to do."""

    exit_code = 1


class InputError(DartError):
    """Bad user input: a missing image, an empty class list, an imgsz that is not a multiple of 14, ..."""

    exit_code = 2


class OutputError(InputError):
    """An output that must not or cannot be written: it would replace an input of the same run or an earlier result
    (without ``--overwrite``), or its folder cannot be created or written. Raised before any work starts."""


class WriteError(DartError):
    """Writing an output failed part-way (disk full, a folder removed under the run ...); the file it was
    replacing, if any, is left as it was."""

    exit_code = 1


class CheckpointError(DartError):
    """A checkpoint that cannot be found, downloaded, read or loaded strictly."""

    exit_code = 3


class CacheError(DartError):
    """A text cache that is corrupt or belongs to another model."""

    exit_code = 2


class DependencyError(DartError):
    """An optional dependency or a device (CUDA, TensorRT) that this operation needs is missing."""

    exit_code = 4


EXIT_CODES = {
    0: "success",
    1: "runtime failure: a source or a write failed part-way, or an internal error (see --debug)",
    2: "bad input or usage: a missing file, a bad value, conflicting flags, an output that would overwrite an "
       "input or an earlier result",
    3: "model or checkpoint problem: missing, corrupt, foreign or mismatched weights or engines",
    4: "missing optional dependency or hardware (CUDA, TensorRT, a GUI OpenCV ...)",
    130: "interrupted (Ctrl-C); what was finished is saved",
}
