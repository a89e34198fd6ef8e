"""The distillation dataset: a folder of unlabeled images, preprocessed exactly as SAM3 sees them."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from dart.errors import InputError
from dart.preprocess import IMAGE_SUFFIXES, is_image_file

log = logging.getLogger(__name__)


def list_images(folder: str | Path, *, recursive: bool = True) -> list[Path]:
    """Every image file under ``folder`` (sub-folders included), sorted; an empty or missing folder is a sentence."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"image folder '{folder}' does not exist or is not a folder.")
    walk = folder.rglob("*") if recursive else folder.iterdir()
    images = sorted(p for p in walk if p.is_file() and is_image_file(p))
    if not images:
        raise InputError(f"folder '{folder}' contains no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    return images


def split_train_val(paths: Sequence[Path], val_fraction: float, *, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """A seeded split; at least one training image, and one validation image when ``val_fraction > 0`` and
    there are two images or more."""
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"--val-fraction must be in [0, 1), got {val_fraction}.")
    paths = list(paths)
    n_val = int(round(len(paths) * val_fraction))
    if val_fraction > 0 and len(paths) >= 2:
        n_val = max(1, n_val)
    n_val = min(n_val, len(paths) - 1)
    order = list(range(len(paths)))
    random.Random(seed).shuffle(order)
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return [paths[i] for i in train], [paths[i] for i in val]


class ImageFolderDataset(Dataset):
    """``{"index", "pixels" [3, S, S]}`` per image, plus ``"teacher"`` (three FPN tensors) from a teacher cache.

    An image that cannot be read is reported once and replaced by the next readable one, so one bad file does
    not stop a long training run.
    """

    def __init__(self, paths: Sequence[Path], imgsz: int, cache: Any = None):
        self.paths = list(paths)
        self.imgsz = imgsz
        self.cache = cache
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def pixels(self, index: int) -> torch.Tensor:
        from dart.preprocess import load_image, preprocess, to_rgb

        return preprocess([to_rgb(load_image(self.paths[index]))], self.imgsz)[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        for offset in range(len(self.paths)):
            i = (index + offset) % len(self.paths)
            if i in self._bad:
                continue
            try:
                item: dict[str, Any] = {"index": i, "pixels": self.pixels(i)}
            except InputError as exc:
                self._bad.add(i)
                log.warning("skipping %s: %s", self.paths[i], exc)
                continue
            if self.cache is not None:
                item["teacher"] = self.cache.load(self.paths[i])
            return item
        raise InputError("none of the training images can be read.")
