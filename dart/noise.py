"""What other libraries print: Python warnings, log records and the chatter of native code (OpenCV, FFmpeg).

The ``dart`` command shows each distinct third-party warning once, as one line (``warning: ...``, without the
source path it came from), hides deprecation notices meant for developers, keeps OpenCV's and FFmpeg's own
``[ WARN ...]`` lines and ``torch.compile``'s diagnostics off the terminal, and shows all of it in full under
``dart --verbose``. Library users (``import dart``) keep Python's defaults: nothing here runs on import.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any, TextIO

_state = {"verbose": False, "configured": False}
_seen: set[str] = set()
DEVELOPER_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning, ImportWarning, ResourceWarning)


def verbose() -> bool:
    return bool(_state["verbose"])


def configure(*, verbose: bool = False, err: Any = None) -> None:
    """Set up the command line's policy (called once by :mod:`dart.cli`). ``err`` prints a line to stderr."""
    _state["verbose"] = verbose
    _state["configured"] = True
    _seen.clear()
    if not verbose:
        # read by OpenCV when it loads (and by its FFmpeg backend when it opens a file): errors only
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        _quiet_loaded_opencv()
    printer = err or _stderr_line

    def show(message: Any, category: type[Warning], filename: str, lineno: int, file: TextIO | None = None,
             line: str | None = None) -> None:
        if verbose:
            printer(warnings.formatwarning(message, category, filename, lineno, line).rstrip())
            return
        if issubclass(category, DEVELOPER_WARNINGS):
            return
        text = " ".join(str(message).split())
        if len(text) > 300:
            text = text[:297] + "..."
        if text in _seen:
            return
        _seen.add(text)
        from dart.io import redact

        printer(f"warning: {redact(text)}")

    warnings.showwarning = show
    warnings.simplefilter("default")  # once per place, then our filter above makes it once per message


def _stderr_line(text: str) -> None:
    import sys

    print(text, file=sys.stderr, flush=True)


def _quiet_loaded_opencv() -> None:
    import sys

    cv2 = sys.modules.get("cv2")
    if cv2 is not None:
        try:
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        except AttributeError:  # pragma: no cover - very old OpenCV
            pass


def quiet_compiler() -> None:
    """Keep ``torch.compile``'s warnings (graph breaks, backend fallbacks, CUDA probes) off the terminal of a
    ``dart`` command that is not ``--verbose``; the compiled model falls back to eager where it must either way."""
    if not _state["configured"] or _state["verbose"]:
        return
    import torch._logging

    torch._logging.set_logs(dynamo=logging.ERROR, inductor=logging.ERROR, aot=logging.ERROR)
    for name in ("torch.utils.cpp_extension", "torch._dynamo", "torch._inductor", "torch.fx"):
        logging.getLogger(name).setLevel(logging.ERROR)
