"""dart: SAM3 as a real-time, multi-class, open-vocabulary object detector.

The heavy pieces (torch, transformers) are imported lazily so that ``import dart`` and ``dart --help`` stay fast.

    >>> from dart import Detector
    >>> det = Detector.from_pretrained("facebook/sam3", classes=["person", "car"])
    >>> detections = det.detect("street.jpg")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Detector", "Detections", "Prompt", "DartError", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from dart.detections import Detections
    from dart.detector import Detector
    from dart.errors import DartError
    from dart.prompts import Prompt


def __getattr__(name: str) -> Any:
    if name == "Detector":
        from dart.detector import Detector

        return Detector
    if name == "Detections":
        from dart.detections import Detections

        return Detections
    if name == "Prompt":
        from dart.prompts import Prompt

        return Prompt
    if name == "DartError":
        from dart.errors import DartError

        return DartError
    raise AttributeError(f"module 'dart' has no attribute {name!r}")
