"""Run records: the JSON a resumable run leaves in its output folder (``run.json`` of ``dart eval coco``,
``dart-run.json`` of ``dart detect``), read back and compared with the record of the run that wants to resume."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def read_record(path: str | Path) -> Any:
    """The JSON at ``path``; None when it is missing or is not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def record_difference(previous: Any, current: dict[str, Any], ignore: Sequence[str] = ()) -> str | None:
    """None when ``current`` (made JSON-like) equals ``previous``, leaving out the dotted keys in ``ignore``
    (``"model"``, ``"settings.fingerprint"``: compared later, by whoever knows them); else the first difference,
    as ``"conf: 0.3 before, 0.4 now"``."""
    old, new = _without(previous, ignore), _without(json.loads(json.dumps(current)), ignore)
    return None if old == new else first_difference(old, new).removeprefix("settings.")


def _without(record: Any, ignore: Sequence[str]) -> Any:
    if not isinstance(record, dict) or not ignore:
        return record
    out = dict(record)
    for dotted in ignore:
        head, _, rest = dotted.partition(".")
        if head in out:
            if rest:
                out[head] = _without(out[head], [rest])
            else:
                del out[head]
    return out


def first_difference(old: Any, new: Any, prefix: str = "") -> str:
    """``"conf: 0.3 before, 0.4 now"``: the first key (dotted path) whose value differs between two records."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
    shown = lambda v: json.dumps(v)[:60]  # noqa: E731
    return f"{prefix.rstrip('.') or 'settings'}: {shown(old)} before, {shown(new)} now"
