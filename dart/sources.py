"""Turn what the user typed (files, folders, globs) into a sorted list of image files."""

from __future__ import annotations

import glob
from pathlib import Path

from dart.errors import InputError
from dart.preprocess import IMAGE_SUFFIXES, is_image_file


def expand_images(sources: list[str]) -> list[Path]:
    """Files are taken as given, folders contribute their images (sorted, not recursive), globs are expanded
    (``**`` recurses). A source that matches nothing is one sentence."""
    if not sources:
        raise InputError("no images given: pass one or more image files, folders or globs.")
    found: list[Path] = []
    for source in sources:
        path = Path(source).expanduser()
        if any(ch in source for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
            images = [p for p in matches if p.is_file() and is_image_file(p)]
            if not images:
                raise InputError(f"the pattern '{source}' matches no image files.")
            found.extend(images)
        elif path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and is_image_file(p))
            if not images:
                suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
                raise InputError(f"folder '{source}' contains no images ({suffixes}).")
            found.extend(images)
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"image '{source}' does not exist.")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return [Path(p) for p in unique]


def output_stems(paths: list[Path]) -> list[str]:
    """One output name per input; equal stems from different folders get ``_1``, ``_2`` ... suffixes."""
    used: dict[str, int] = {}
    stems = []
    for path in paths:
        stem = path.stem
        count = used.get(stem, 0)
        used[stem] = count + 1
        stems.append(stem if count == 0 else f"{stem}_{count}")
    return stems
