"""Image files: expand what the user typed (files, folders, globs) and run a :class:`~dart.detector.Detector`
over them, writing the results (the library side of ``dart detect``)."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from dart.annotate import annotate
from dart.detections import Detections
from dart.errors import InputError
from dart.io import write_image, write_json
from dart.preprocess import IMAGE_SUFFIXES, is_image_file, load_image


URL_PREFIXES = ("http://", "https://")
DOWNLOAD_TIMEOUT = 30.0  # seconds


def download_image(url: str, folder: str | Path | None = None) -> Path:
    """Fetch an image URL into ``folder`` (default: ``dart-downloads`` in the system temp folder), keeping the
    URL's file name; an unreachable URL or an HTTP error is one sentence."""
    import hashlib
    import tempfile
    import urllib.error
    import urllib.parse
    import urllib.request

    from dart.io import write_bytes

    name = Path(urllib.parse.urlparse(url).path).name or "image"
    if not is_image_file(Path(name)):
        name += ".jpg"
    base = Path(folder) if folder is not None else Path(tempfile.gettempdir()) / "dart-downloads"
    target = base / hashlib.sha1(url.encode()).hexdigest()[:12] / name  # two URLs never share a file
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:  # noqa: S310 - http(s) only
            data = response.read()
    except urllib.error.HTTPError as exc:
        raise InputError(f"cannot download '{url}': the server answered {exc.code} {exc.reason}.") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputError(f"cannot download '{url}': {reason}.") from exc
    write_bytes(target, data)
    return target


def expand_images(sources: list[str]) -> list[Path]:
    """Files are taken as given, folders contribute their images (sorted, not recursive), globs are expanded
    (``**`` recurses), http(s) URLs are downloaded. A source that matches nothing is one sentence."""
    if not sources:
        raise InputError("no images given: pass one or more image files, folders, globs or URLs.")
    found: list[Path] = []
    for source in sources:
        if source.startswith(URL_PREFIXES):
            found.append(download_image(source))
            continue
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


@dataclass
class BatchResult:
    done: list[tuple[Path, Detections]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)  # result files (not the list of unreadable images)
    interrupted: bool = False  # Ctrl-C: what was done is saved (COCO file and labels included)


UNREADABLE_LIST = "unreadable.txt"  # the images that could not be read, one "path: reason" per line


def result_json(path: Path, image_size: tuple[int, int], classes: list[str], dets: Detections,
                prompts: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """One image's JSON; ``prompts`` (each class's prompts as written, where classes have prompts or exemplars)
    is recorded beside the classes."""
    height, width = image_size
    out: dict[str, Any] = {"image": str(path), "width": width, "height": height, "classes": classes}
    if prompts:
        out["prompts"] = prompts
    out["detections"] = dets.to_json()
    return out


def output_names(images: list[Path], *, save_json: bool = True, save_image: bool = True, save_txt: bool = False,
                 save_coco: bool = False) -> list[str]:
    """The files (relative to the output folder) :func:`detect_images` writes for ``images``, so a command can
    check them all before it starts."""
    names = []
    for path, stem in zip(images, output_stems(images)):
        if save_json:
            names.append(f"{stem}.json")
        if save_image:
            names.append(_image_name(path, stem))
        if save_txt:
            names.append(f"labels/{stem}.txt")
    if save_txt:
        names.append("labels/classes.txt")
    if save_coco:
        names.append("instances.json")
    return names


def _image_name(path: Path, stem: str) -> str:
    return f"{stem}{path.suffix.lower() or '.jpg'}"


def detect_images(detector, images: list[Path], output: Path, *, save_json: bool = True, save_image: bool = True,
                  save_txt: bool = False, save_conf: bool = False, save_coco: bool = False, batch: int = 1,
                  progress: bool = True) -> BatchResult:
    """Detect in every image; write ``<stem>.json`` and the annotated ``<stem><suffix>`` into ``output``.

    Labels for training other detectors: ``save_txt`` writes YOLO labels ``output/labels/<stem>.txt`` (mask
    outlines when the detector predicts masks; ``save_conf`` appends scores) and ``labels/classes.txt``;
    ``save_coco`` writes ``output/instances.json`` (COCO, file names relative to the images' common folder).
    ``detector`` may be a :class:`dart.tiling.TiledDetector` (small objects in large images).

    Unreadable images are skipped and reported in :attr:`BatchResult.failed` (and listed in
    ``output/unreadable.txt``). Ctrl-C stops after the current batch: ``instances.json`` is written for the images
    done and :attr:`BatchResult.interrupted` is set. Every file written is complete; the folder is created only
    when a first file is written into it.
    """
    from dart.labels import CocoDataset, write_class_names, write_yolo_labels

    result = BatchResult()
    stems = output_stems(images)
    coco = CocoDataset(detector.classes) if save_coco else None
    root = Path(os.path.commonpath([p.parent for p in images])) if images else Path()
    columns = [TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn()]

    def wrote(path: Path) -> None:
        result.written.append(path)

    prompts = getattr(detector, "class_prompts", None)  # each class's prompts as written, for every JSON
    try:
        if save_txt:
            write_class_names(output / "labels" / "classes.txt", detector.classes)
            wrote(output / "labels" / "classes.txt")
        with Progress(*columns, disable=not progress, transient=False) as bar:
            task = bar.add_task("detect", total=len(images))
            for start in range(0, len(images), batch):
                chunk = list(zip(images[start:start + batch], stems[start:start + batch]))
                loaded = []
                for path, stem in chunk:
                    try:
                        loaded.append((path, stem, load_image(path)))
                    except InputError as exc:
                        result.failed.append((path, str(exc)))
                        bar.advance(task)
                if not loaded:
                    continue
                all_dets = detector.detect_batch([im for _, _, im in loaded])
                for (path, stem, image), dets in zip(loaded, all_dets):
                    if save_json:
                        write_json(output / f"{stem}.json", result_json(path, image.shape[:2], detector.classes, dets,
                                                                        prompts))
                        wrote(output / f"{stem}.json")
                    if save_image:
                        marks = detector.exemplar_marks(path) if hasattr(detector, "exemplar_marks") else ()
                        write_image(output / _image_name(path, stem), annotate(image, dets, exemplars=marks))
                        wrote(output / _image_name(path, stem))
                    if save_txt:
                        write_yolo_labels(output / "labels" / f"{stem}.txt", dets, image.shape[:2],
                                          with_conf=save_conf, segments=detector.masks)
                        wrote(output / "labels" / f"{stem}.txt")
                    if coco is not None:
                        coco.add(path.relative_to(root).as_posix(), image.shape[:2], dets)
                    result.done.append((path, dets))
                    bar.advance(task)
    except KeyboardInterrupt:
        result.interrupted = True  # finish the files that describe the whole run, for what was done
    if coco is not None and (result.done or not result.interrupted):
        coco.write(output / "instances.json")
        wrote(output / "instances.json")
    if result.failed:
        from dart.io import write_text

        write_text(output / UNREADABLE_LIST, "".join(f"{p}: {why}\n" for p, why in result.failed))
    return result
