"""Weights made by other projects, read through explicit key maps and loaded strictly.

- :mod:`dart.compat.dart_research`: the DART research code's distilled student backbones
  (``distilled/repvit_m2_3_distilled.pt`` and the like).

Foreign ``.pt`` files are read with ``torch.load(weights_only=True)``: tensors, numbers, strings and containers
only, never code. :func:`read_torch_file` turns every failure into one sentence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dart.errors import CheckpointError

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def is_torch_file(path: str | Path) -> bool:
    """A PyTorch ``torch.save`` file (zip archive or legacy pickle), not a safetensors one."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return path.suffix.lower() in TORCH_SUFFIXES
    return head == b"PK" or head[:1] == b"\x80"


def read_torch_file(path: str | Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; anything that is not plain tensors and containers, a
    damaged file or a missing one is a :class:`CheckpointError` sentence."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} '{path}' does not exist.")
    try:
        try:  # zip-format files (torch >= 1.6) are memory-mapped: no copy of the tensors is read up front
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # a legacy pickle file
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{what} '{path}' holds more than tensors ({first[:160]}); dart reads weights with "
                              "torch.load(weights_only=True) and never runs code from a file.") from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{what} '{path}' cannot be read ({type(exc).__name__}); it is damaged or not a "
                              "PyTorch file.") from exc


def require(ckpt: Any, key: str, path: str | Path, what: str, kind: type = dict) -> Any:
    """``ckpt[key]`` of a foreign checkpoint dict, or one sentence naming the missing key."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{what} '{path}' holds a {type(ckpt).__name__}, not the dict of a {what}.")
    if key not in ckpt or not isinstance(ckpt[key], kind):
        found = ", ".join(sorted(map(str, ckpt))[:8])
        raise CheckpointError(f"{what} '{path}' has no '{key}' (it holds {found}); is it a {what}?")
    return ckpt[key]
