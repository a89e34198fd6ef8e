"""Teacher features cached on disk: SAM3's FPN outputs computed once per image, reused every epoch.

One ``.safetensors`` file (float16) per image, in a folder keyed by the teacher (weights fingerprint, prune
spec, image size), so a cache can never feed features of another teacher. A file is named after the image's
path, size and modification time: an edited image is recomputed. At 1008 px one image takes about 56 MB
(256 x (288² + 144² + 72²) values in float16); at 644 px about 23 MB.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dart.errors import CacheError
from dart.io import atomic_path, write_json

LEVELS = ("fpn_4x", "fpn_2x", "fpn_1x")


class TeacherCache:
    def __init__(self, root: str | Path, key: dict[str, Any]):
        self.key = dict(key)
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:16]
        self.folder = Path(root) / digest
        self.folder.mkdir(parents=True, exist_ok=True)
        key_file = self.folder / "teacher.json"
        if not key_file.exists():
            write_json(key_file, self.key)

    def path_for(self, image: Path) -> Path:
        image = Path(image).resolve()
        stat = image.stat()
        name = hashlib.sha1(f"{image}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:20]
        return self.folder / f"{name}.safetensors"

    def has(self, image: Path) -> bool:
        return self.path_for(image).is_file()

    def load(self, image: Path) -> tuple[torch.Tensor, ...]:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self.path_for(image)
        try:
            data = load_file(str(path))
            return tuple(data[name] for name in LEVELS)
        except (SafetensorError, OSError, KeyError, ValueError) as exc:
            raise CacheError(f"teacher cache file {path} for {image} is missing or corrupt; delete {self.folder} "
                             "to rebuild the cache.") from exc

    def save(self, image: Path, features: Sequence[torch.Tensor]) -> None:
        from safetensors.torch import save_file

        tensors = {name: f.detach().to("cpu", torch.float16).contiguous() for name, f in zip(LEVELS, features)}
        with atomic_path(self.path_for(image)) as tmp:
            save_file(tensors, str(tmp))
