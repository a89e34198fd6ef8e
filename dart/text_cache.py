"""Text features for class names, computed once per model and cached to disk.

A cache file is a ``.safetensors`` file holding ``features [N, T, D]`` (float32) and ``mask [N, T]`` (uint8)
for N class names, with the model fingerprint, the names and the dart version in its metadata. A cache built
by another model is refused with a sentence; a corrupt one too. New class names are added to the file
(atomically) the first time they are encoded.

A DART research text cache (``.pt``, :mod:`dart.compat.dart_research`) is read too. It names no model, so before
its features are used they are checked against the model's own text encoder (the first class is encoded and
compared); it is never written to (new names are encoded in memory: convert it with ``dart convert`` to keep
them).

It also holds the prompt tokens of exemplars drawn on reference images (``exemplar.<i>.tokens [G, D]``,
``exemplar.<i>.mask [G]``, keyed in the metadata by the image's content hash and the boxes), so that exported
engines, which hold no geometry encoder, can run those classes without the PyTorch model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from dart import __version__
from dart.errors import CacheError
from dart.io import atomic_path

FORMAT = "dart-text-cache-v1"

# ``encode(names) -> (features [C, T, D] float32 cpu, mask [C, T] bool cpu)``
EncodeFn = Callable[[Sequence[str]], tuple[torch.Tensor, torch.Tensor]]


class TextCache:
    """Class name -> (features ``[T, D]``, mask ``[T]``) for one model, optionally backed by a file."""

    def __init__(self, fingerprint: str, path: str | Path | None = None):
        self.fingerprint = fingerprint
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.exemplars: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # exemplar key -> (tokens, mask)
        self.dirty = False
        self.unverified: str | None = None  # a foreign cache not yet checked against this model: its path
        if self.path is not None and self.path.exists():
            from dart.compat import is_torch_file

            if is_torch_file(self.path):
                self._load_dart()
            else:
                self._load()

    def _load_dart(self) -> None:
        from dart.compat.dart_research import read_dart_text_cache

        assert self.path is not None
        names, features, mask = read_dart_text_cache(self.path)
        for i, name in enumerate(names):
            self.entries[name] = (features[i], mask[i])
        self.unverified, self.path = str(self.path), None  # read-only: dart never writes over a foreign file

    def verify(self, encode: EncodeFn | None) -> None:
        """Check a foreign cache against this model: its first class, encoded by ``encode``, must give the same
        features (to float32 noise, relative to their scale); else one sentence."""
        if self.unverified is None or not self.entries:
            return
        source = self.unverified
        if encode is None:
            raise CacheError(f"text cache '{source}' comes from the DART research code, which records no model, and "
                             "this backend has no text encoder to check it with: pass --checkpoint (the checkpoint "
                             f"it was made with), or convert it once: dart convert {source} --checkpoint CKPT -o "
                             "text.safetensors.")
        name = next(iter(self.entries))
        cached, cached_mask = self.entries[name]
        features, mask = encode([name])
        same = (tuple(features.shape[1:]) == tuple(cached.shape) and torch.equal(mask[0].bool(), cached_mask))
        if same:
            valid = cached_mask
            scale = float(features[0][valid].abs().max().clamp_min(1e-12))
            same = float((features[0][valid].float() - cached[valid]).abs().max()) <= 1e-3 * scale
        if not same:
            raise CacheError(f"text cache '{source}' was made by another model than this one: its features for "
                             f"'{name}' differ from this model's; use the checkpoint it was made with, or drop "
                             "--text-cache.")
        self.unverified = None

    def _load(self) -> None:
        assert self.path is not None
        meta, names, features, mask, self.exemplars = _read(self.path, tensors=True)
        if meta.get("fingerprint") != self.fingerprint:
            raise CacheError(
                f"text cache '{self.path}' was built for model {meta.get('fingerprint')}, not for this model "
                f"({self.fingerprint}); use another --text-cache file or delete this one."
            )
        for i, name in enumerate(names):
            self.entries[name] = (features[i], mask[i].bool())

    def missing(self, names: Sequence[str]) -> list[str]:
        return [n for n in names if n not in self.entries]

    def add(self, names: Sequence[str], features: torch.Tensor, mask: torch.Tensor) -> None:
        for i, name in enumerate(names):
            self.entries[name] = (features[i].detach().float().cpu(), mask[i].detach().bool().cpu())
        self.dirty = self.dirty or bool(names)

    def exemplar(self, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The cached prompt tokens ``(tokens [G, D], mask [G])`` of an exemplar key, or None."""
        return self.exemplars.get(key)

    def add_exemplar(self, key: str, tokens: torch.Tensor, mask: torch.Tensor) -> None:
        """Remember an exemplar's prompt tokens (written by the next :meth:`save`)."""
        self.exemplars[key] = (tokens.detach().float().cpu().contiguous(), mask.detach().bool().cpu().contiguous())
        self.dirty = True

    def get(self, names: Sequence[str], encode: EncodeFn | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked ``(features [C, T, D], mask [C, T])`` for ``names``, encoding (and caching) missing ones."""
        self.verify(encode)
        todo = self.missing(names)
        if todo:
            if encode is None:
                raise CacheError(
                    f"class '{todo[0]}' is not in the text cache and this backend has no text encoder; build the "
                    "cache once with the PyTorch model (same checkpoint) or pass --checkpoint."
                )
            features, mask = encode(todo)
            self.add(todo, features, mask)
            self.save()
        return (torch.stack([self.entries[n][0] for n in names]), torch.stack([self.entries[n][1] for n in names]))

    def save(self) -> None:
        """Write the cache file atomically (no-op without a path or without changes)."""
        if self.path is None or not self.dirty or not self.entries:
            return
        from safetensors.torch import save_file

        names = list(self.entries)
        tensors = {
            "features": torch.stack([self.entries[n][0] for n in names]).contiguous(),
            "mask": torch.stack([self.entries[n][1] for n in names]).to(torch.uint8).contiguous(),
        }
        keys = list(self.exemplars)
        for i, key in enumerate(keys):
            tensors[f"exemplar.{i}.tokens"] = self.exemplars[key][0]
            tensors[f"exemplar.{i}.mask"] = self.exemplars[key][1].to(torch.uint8)
        meta = {"format": FORMAT, "fingerprint": self.fingerprint, "classes": json.dumps(names),
                "dart_version": __version__}
        if keys:
            meta["exemplars"] = json.dumps(keys)
        with atomic_path(self.path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        self.dirty = False


def _read(path: Path, tensors: bool) -> tuple[dict[str, str], list[str], Any, Any, dict[str, Any]]:
    """``(metadata, names, features, mask, exemplars)`` of a cache file, in one read (with ``tensors=False``: the
    features' shape, no mask, no exemplar tokens); a corrupt or foreign file is one :class:`CacheError` sentence."""
    from safetensors import SafetensorError, safe_open

    exemplars: dict[str, Any] = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if tensors:
                features, mask = f.get_tensor("features"), f.get_tensor("mask")
                for i, key in enumerate(json.loads(meta.get("exemplars", "[]"))):  # none in older files
                    exemplars[key] = (f.get_tensor(f"exemplar.{i}.tokens"), f.get_tensor(f"exemplar.{i}.mask").bool())
            else:
                features, mask = list(f.get_slice("features").get_shape()), None
        names = json.loads(meta.get("classes", "null"))
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise CacheError(
            f"text cache '{path}' is damaged or is not a dart text cache ({type(exc).__name__}); dart leaves it as it "
            "is: give --text-cache another file name (or, if it is an old cache of yours, delete it to rebuild it)."
        ) from exc
    count = len(features) if tensors else (features[0] if features else 0)
    if meta.get("format") != FORMAT or not isinstance(names, list) or len(names) != count:
        raise CacheError(f"text cache '{path}' is not a {FORMAT} file; dart leaves it as it is: give --text-cache "
                         "another file name (or, if it is an old cache of yours, delete it to rebuild it).")
    return meta, names, features, mask, exemplars


def read_cache_info(path: str | Path) -> dict[str, object]:
    """What a cache file holds, without a model: ``{"fingerprint", "classes", "dart_version", "shape"}``."""
    path = Path(path)
    if not path.is_file():
        raise CacheError(f"text cache '{path}' does not exist.")
    from dart.compat import is_torch_file

    if is_torch_file(path):
        from dart.compat.dart_research import read_dart_text_cache

        names, features, _ = read_dart_text_cache(path)
        return {"fingerprint": None, "classes": names, "dart_version": None, "shape": list(features.shape),
                "exemplars": [], "source": "DART research code (no model recorded)"}
    meta, names, shape, _, _ = _read(path, tensors=False)
    try:
        exemplars = list(json.loads(meta.get("exemplars", "[]")))
    except (ValueError, TypeError):
        exemplars = []
    return {"fingerprint": meta.get("fingerprint"), "classes": names, "dart_version": meta.get("dart_version"),
            "shape": shape, "exemplars": exemplars}
