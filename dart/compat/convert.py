"""``dart convert``: a foreign weight file rewritten in dart's own safetensors layout, so later loads need no pickle.

Formats (found from the file's contents, not its name):

- a DART research student checkpoint (``student_state_dict``) -> a dart student checkpoint
  (``--student-weights``), with the backbone found or given (:mod:`dart.compat.dart_research`);
- a DART research text cache (``class_names``, ``text``, ``mask``) -> a dart text cache, checked against the
  checkpoint's text encoder and stamped with its fingerprint (it needs ``checkpoint``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dart.errors import CheckpointError

FORMATS = {"dart-student": "DART research student checkpoint", "dart-text-cache": "DART research text cache"}


@dataclass
class Converted:
    kind: str  # a key of FORMATS
    output: Path
    summary: str  # one line for the user


def detect_format(path: str | Path) -> str:
    """Which foreign format ``path`` holds (a key of :data:`FORMATS`); anything else is one sentence."""
    from dart.compat import is_torch_file, read_torch_file
    from dart.compat.dart_research import is_dart_student, is_dart_text_cache

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"'{path}' does not exist.")
    if not is_torch_file(path):
        raise CheckpointError(f"'{path}' is not a PyTorch file; dart converts {', '.join(FORMATS.values())} files.")
    ckpt: Any = read_torch_file(path, "weight file")
    if is_dart_student(ckpt):
        return "dart-student"
    if is_dart_text_cache(ckpt):
        return "dart-text-cache"
    keys = ", ".join(sorted(map(str, ckpt))[:6]) if isinstance(ckpt, dict) else type(ckpt).__name__
    raise CheckpointError(f"'{path}' is none of the formats dart converts ({', '.join(FORMATS.values())}); it holds "
                          f"{keys}.")


def default_name(path: str | Path, kind: str) -> str:
    return f"{Path(path).stem}.safetensors"


def convert(path: str | Path, output: str | Path, *, kind: str | None = None, backbone: str | None = None,
            checkpoint: Any = None) -> Converted:
    """Rewrite ``path`` at ``output`` (a ``.safetensors`` file) in dart's layout; ``checkpoint`` (a path, hub id or
    :class:`~dart.models.loading.LoadedSam3`) is the model a text cache is checked against."""
    kind = kind or detect_format(path)
    output = Path(output)
    if kind == "dart-text-cache":
        return _convert_text_cache(path, output, checkpoint)
    if kind == "dart-student":
        from dart.compat.dart_research import read_dart_student
        from dart.students.model import write_student_checkpoint

        meta, state = read_dart_student(path, backbone)
        write_student_checkpoint(output, meta, state)
        return Converted(kind, output, f"{meta['backbone']} student ({len(state)} tensors, FPN width "
                                       f"{meta['fpn_channels']}): use it with --student-weights {output}")
    raise CheckpointError(f"dart cannot convert {kind} files.")  # pragma: no cover - FORMATS lists every kind


def _convert_text_cache(path: str | Path, output: Path, checkpoint: Any) -> Converted:
    from dart.backends.torch_backend import TorchBackend
    from dart.errors import InputError
    from dart.models.loading import LoadedSam3, load_sam3
    from dart.text_cache import TextCache

    if checkpoint is None:
        raise InputError(f"'{path}' is a DART text cache, which records no model: pass --checkpoint with the "
                         "checkpoint it was made with (dart checks the cache against it and records it).")
    loaded = checkpoint if isinstance(checkpoint, LoadedSam3) else load_sam3(checkpoint)
    cache = TextCache(loaded.fingerprint, path)
    cache.verify(TorchBackend(loaded, device="cpu").encode_text)
    cache.path, cache.dirty = output, True
    cache.save()
    return Converted("dart-text-cache", output, f"{len(cache.entries)} classes for model {loaded.fingerprint}: use it "
                                                f"with --text-cache {output}")
