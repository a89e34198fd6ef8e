"""File output that never leaves a half-written file in place of a good one."""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@functools.cache
def _umask() -> int:
    """The process umask, read once: reading it means setting it, which must not happen while writer threads
    create files."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def default_mode(directory: bool = False) -> int:
    """The mode ``open()`` / ``mkdir()`` would give a new file or folder under the current umask (``mkstemp`` and
    ``mkdtemp`` make them private, which a renamed output must not stay)."""
    return (0o777 if directory else 0o666) & ~_umask()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, default_mode())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def file_or_folder(path: str | Path, default_name: str, suffixes: tuple[str, ...]) -> Path:
    """``path`` when it names a file ending in one of ``suffixes``; otherwise ``path`` is a folder and the file is
    ``path/default_name`` (so ``-o engines/`` and ``-o engines`` both mean the folder)."""
    path = Path(path)
    if path.suffix.lower() in suffixes and not path.is_dir():
        return path
    return path / default_name


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_image(path: str | Path, image_bgr: Any) -> None:
    """Encode with OpenCV (format from the suffix) and write atomically."""
    import cv2

    path = Path(path)
    ok, buf = cv2.imencode(path.suffix or ".jpg", image_bgr)
    if not ok:
        raise OSError(f"OpenCV cannot encode an image as '{path.suffix}'")
    write_bytes(path, buf.tobytes())


def read_yaml(path: str | Path, what: str) -> Any:
    """Parse a YAML (or JSON) file; a missing, unreadable or malformed file is one :class:`InputError` sentence
    naming ``what`` it should have been (e.g. ``"prune spec"``)."""
    import yaml

    from dart.errors import InputError

    text = read_text(path, what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{what} '{path}' is not valid YAML/JSON: {exc}.") from exc


def read_text(path: str | Path, what: str) -> str:
    """A UTF-8 text file's content; a missing or unreadable file is one :class:`InputError` sentence naming
    ``what`` it should have been (e.g. ``"MOT file"``)."""
    from dart.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} '{path}' does not exist.")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {what} '{path}': {exc}.") from exc
