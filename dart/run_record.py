"""Run records: the JSON a resumable run leaves in its output folder (``run.json`` of ``dart eval coco``,
``dart-run.json`` of ``dart detect``), and the sentence naming the first setting in which two records differ."""

from __future__ import annotations

import json
from typing import Any


def first_difference(old: Any, new: Any, prefix: str = "") -> str:
    """``"conf: 0.3 before, 0.4 now"``: the first key (dotted path) whose value differs between two records."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
    shown = lambda v: json.dumps(v)[:60]  # noqa: E731
    return f"{prefix.rstrip('.') or 'settings'}: {shown(old)} before, {shown(new)} now"
