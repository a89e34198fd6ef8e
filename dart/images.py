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
from dart.io import interrupt_deferred, write_image, write_json
from dart.preprocess import IMAGE_SUFFIXES, VIDEO_SUFFIXES, is_image_file, load_image


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


MANIFEST_SUFFIX = ".txt"  # a list of images, one file, folder, glob or URL per line


def read_manifest(path: Path) -> list[str]:
    """The sources a manifest lists (blank lines and ``#`` comments skipped; relative paths are relative to the
    manifest's folder)."""
    from dart.io import read_text

    sources = []
    for line in read_text(path, "image list").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith(URL_PREFIXES) and not Path(line).expanduser().is_absolute():
            line = str(path.parent / line)
        sources.append(line)
    if not sources:
        raise InputError(f"image list '{path}' lists no images.")
    return sources


def expand_images(sources: list[str], _lists: tuple[Path, ...] = ()) -> list[Path]:
    """Files are taken as given, folders contribute their images (sorted, not recursive), globs are expanded
    (``**`` recurses), http(s) URLs are downloaded, and a ``.txt`` file is a list of such sources, one per line.
    A source that matches nothing is one sentence."""
    if not sources:
        raise InputError("no images given: pass one or more image files, folders, globs or URLs.")
    found: list[Path] = []
    for source in sources:
        if Path(source).suffix.lower() == MANIFEST_SUFFIX and Path(source).expanduser().is_file():
            listed = Path(source).expanduser().resolve()
            if listed in _lists:
                raise InputError(f"image list '{source}' lists itself (through {_lists[-1].name}).")
            found.extend(expand_images(read_manifest(listed), (*_lists, listed)))
            continue
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
        elif path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
            raise InputError(f"'{source}' is a video, and this command reads images: for a video run "
                             f"`dart video {source} ...` instead.")
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
    kept: list[Path] = field(default_factory=list)  # --resume: images whose results an earlier run wrote


UNREADABLE_LIST = "unreadable.txt"  # the images that could not be read, one "path: reason" per line
COCO_FILE = "instances.json"
CLASS_NAMES_FILE = "labels/classes.txt"
RUN_FILE = "dart-run.json"  # what identifies a detect run, so that --resume keeps only results of the same one


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


@dataclass(frozen=True)
class ResultFiles:
    """The files ``dart detect`` writes for each image into ``output``: ``<stem>.json``, the annotated image,
    YOLO labels ``labels/<stem>.txt``. The one place that names and writes them (locally and on Ray workers)."""

    output: Path
    save_json: bool = True
    save_image: bool = True
    save_txt: bool = False
    save_conf: bool = False

    def names(self, path: Path, stem: str) -> list[str]:
        """The file names (relative to ``output``) written for one image."""
        names = []
        if self.save_json:
            names.append(f"{stem}.json")
        if self.save_image:
            names.append(_image_name(path, stem))
        if self.save_txt:
            names.append(f"labels/{stem}.txt")
        return names

    def done(self, path: Path, stem: str) -> bool:
        """Whether every file of this image is there (each is written whole, so one that exists is complete)."""
        return all((self.output / name).is_file() for name in self.names(path, stem))

    def write(self, detector, path: Path, stem: str, image, dets: Detections) -> tuple[dict[str, Any], list[Path]]:
        """Write the image's files; returns its result JSON and the paths written."""
        record = result_json(path, image.shape[:2], detector.classes, dets, getattr(detector, "class_prompts", None))
        written = []
        if self.save_json:
            write_json(self.output / f"{stem}.json", record)
            written.append(self.output / f"{stem}.json")
        if self.save_image:
            marks = detector.exemplar_marks(path) if hasattr(detector, "exemplar_marks") else ()
            write_image(self.output / _image_name(path, stem), annotate(image, dets, exemplars=marks))
            written.append(self.output / _image_name(path, stem))
        if self.save_txt:
            from dart.labels import write_yolo_labels

            write_yolo_labels(self.output / "labels" / f"{stem}.txt", dets, image.shape[:2],
                              with_conf=self.save_conf, segments=detector.masks)
            written.append(self.output / "labels" / f"{stem}.txt")
        return record, written

    def read_json(self, stem: str) -> dict[str, Any]:
        """An image's result JSON back from ``<stem>.json`` (a result an earlier run wrote)."""
        import json

        file = self.output / f"{stem}.json"
        try:
            record = json.loads(file.read_text(encoding="utf-8"))
            _size_and_detections(record)
            return record
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"'{file}' is not a dart detect result ({type(exc).__name__}: {exc}); delete it to "
                             "detect that image again.") from None


def _size_and_detections(record: dict[str, Any]) -> tuple[tuple[int, int], Detections]:
    size = (int(record["height"]), int(record["width"]))
    return size, Detections.from_json(record["detections"], size)


def output_names(images: list[Path], *, save_json: bool = True, save_image: bool = True, save_txt: bool = False,
                 save_coco: bool = False) -> list[str]:
    """The files (relative to the output folder) :func:`detect_images` writes for ``images``, so a command can
    check them all before it starts."""
    files = ResultFiles(Path(), save_json=save_json, save_image=save_image, save_txt=save_txt)
    names = [name for path, stem in zip(images, output_stems(images)) for name in files.names(path, stem)]
    if save_txt:
        names.append(CLASS_NAMES_FILE)
    if save_coco:
        names.append(COCO_FILE)
    return names


def _image_name(path: Path, stem: str) -> str:
    return f"{stem}{path.suffix.lower() or '.jpg'}"


def pending_images(images: list[Path], files: ResultFiles, *, need_json: bool = False) -> tuple[list[int], list[int]]:
    """``(to do, kept)``: the indices of ``images`` whose files are missing from ``files.output`` and of those an
    earlier run finished (every file there; its JSON too when ``need_json``, for a COCO file of all images)."""
    todo, kept = [], []
    for index, (path, stem) in enumerate(zip(images, output_stems(images))):
        complete = files.done(path, stem) and (not need_json or (files.output / f"{stem}.json").is_file())
        (kept if complete else todo).append(index)
    return todo, kept


def model_record(detector) -> dict[str, Any]:
    """The model part of a run's record: the weights' fingerprint and the input size."""
    return {"fingerprint": detector.backend.fingerprint, "imgsz": int(detector.backend.imgsz)}


def run_record(classes: list[str], settings: dict[str, Any] | None = None,
               model: dict[str, Any] | None = None) -> dict[str, Any]:
    """What identifies a detect run (``dart-run.json``): the class entries as given (prompts and exemplars
    included), ``settings`` (thresholds, tiling) and the model (:func:`model_record`). A resumed run must have the
    same; backend, device and precision may differ (the same weights give the same detections to float noise)."""
    return {"classes": list(classes), "settings": settings or {}, "model": model}


def resume_plan(files: ResultFiles, images: list[Path], record: dict[str, Any], *, need_json: bool = False,
                ignore: tuple[str, ...] = ()) -> tuple[dict[str, Any] | None, list[int], list[int]]:
    """``(earlier record, to do, kept)`` for resuming into ``files.output``: the indices of the images still to
    detect and of those an earlier run finished. Refused with a sentence: results there without a record, or a
    record of another run (keys in ``ignore`` are compared later, by whoever knows them)."""
    from dart.run_record import read_record, record_difference

    todo, kept = pending_images(images, files, need_json=need_json)
    path = files.output / RUN_FILE
    if not path.is_file():
        stems = output_stems(images)
        if kept or any((files.output / name).exists() for i in todo for name in files.names(images[i], stems[i])):
            raise InputError(f"'{files.output}' holds results but no {RUN_FILE}, so which run made them is unknown; "
                             "pass --overwrite to replace them, or choose another --output.")
        return None, todo, kept
    previous = read_record(path)
    if not isinstance(previous, dict):
        raise InputError(f"'{path}' is not a dart run record; pass --overwrite to start over, or choose another "
                         "--output.")
    changed = record_difference(previous, record, ignore)
    if changed is not None:
        raise InputError(f"'{files.output}' holds results of another run ({changed}); --resume only continues the "
                         "same run: pass --overwrite to replace them, or choose another --output.")
    return previous, todo, kept


def detect_images(detector, images: list[Path], output: Path, *, save_json: bool = True, save_image: bool = True,
                  save_txt: bool = False, save_conf: bool = False, save_coco: bool = False, batch: int = 1,
                  progress: bool = True, resume: bool = False, record: dict[str, Any] | None = None) -> BatchResult:
    """Detect in every image; write ``<stem>.json`` and the annotated ``<stem><suffix>`` into ``output``.

    Labels for training other detectors: ``save_txt`` writes YOLO labels ``output/labels/<stem>.txt`` (mask
    outlines when the detector predicts masks; ``save_conf`` appends scores) and ``labels/classes.txt``;
    ``save_coco`` writes ``output/instances.json`` (COCO, file names relative to the images' common folder).
    ``detector`` may be a :class:`dart.tiling.TiledDetector` (small objects in large images).

    ``output/dart-run.json`` records the run (``record``, from :func:`run_record`; the model is added here).
    ``resume``: images whose files an earlier run of the same record left in ``output`` are kept
    (:attr:`BatchResult.kept`) and only the others are detected; another run's results there are refused with a
    sentence. Unreadable images are skipped and reported
    in :attr:`BatchResult.failed` (and listed in ``output/unreadable.txt``). Ctrl-C stops after the current batch:
    ``instances.json`` is written for the images done and :attr:`BatchResult.interrupted` is set. Every file
    written is complete; the folder is created only when a first file is written into it.
    """
    result = BatchResult()
    files = ResultFiles(output, save_json=save_json, save_image=save_image, save_txt=save_txt, save_conf=save_conf)
    stems = output_stems(images)
    info = {**(record or run_record(detector.classes)), "model": model_record(detector)}
    if resume:
        _, todo, kept = resume_plan(files, images, info, need_json=save_coco)
    else:
        todo, kept = list(range(len(images))), []
    result.kept = [images[i] for i in kept]
    coco = CocoLabels(detector.classes, images, files) if save_coco else None
    for index in kept if coco is not None else ():
        coco.add_saved(index)
    columns = [TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn()]
    started = False  # the run's own files come with its first result: a run of unreadable images leaves none
    try:
        with Progress(*columns, disable=not progress, transient=False) as bar:
            task = bar.add_task("detect", total=len(todo))
            for start in range(0, len(todo), batch):
                loaded = []
                for index in todo[start:start + batch]:
                    try:
                        loaded.append((index, load_image(images[index])))
                    except InputError as exc:
                        result.failed.append((images[index], str(exc)))
                        bar.advance(task)
                if not loaded:
                    continue
                all_dets = detector.detect_batch([im for _, im in loaded])
                for (index, image), dets in zip(loaded, all_dets):
                    with interrupt_deferred():  # an image's files and its COCO entry are recorded together
                        if not started:
                            start_run(files, detector.classes, info, result)
                            started = True
                        record, written = files.write(detector, images[index], stems[index], image, dets)
                        result.written.extend(written)
                        if coco is not None:
                            coco.add(index, record)
                        result.done.append((images[index], dets))
                    bar.advance(task)
    except KeyboardInterrupt:
        result.interrupted = True  # finish the files that describe the whole run, for what was done
    finish_run(files, coco, result)
    return result


def start_run(files: ResultFiles, classes: list[str], info: dict[str, Any], result: BatchResult) -> None:
    """Before the first image's files: the run's record and, for YOLO labels, ``labels/classes.txt``."""
    if files.save_txt:
        from dart.labels import write_class_names

        write_class_names(files.output / CLASS_NAMES_FILE, classes)
        result.written.append(files.output / CLASS_NAMES_FILE)
    write_json(files.output / RUN_FILE, info)


def finish_run(files: ResultFiles, coco: CocoLabels | None, result: BatchResult) -> None:
    """After the last image (or Ctrl-C): the COCO file of every image with results, the list of unreadable ones."""
    if coco is not None and (result.done or result.kept or not result.interrupted):
        coco.write(files.output / COCO_FILE)
        result.written.append(files.output / COCO_FILE)
    if result.failed:
        from dart.io import write_text

        write_text(files.output / UNREADABLE_LIST, "".join(f"{p}: {why}\n" for p, why in result.failed))


class CocoLabels:
    """The COCO file of a detect run, made from the images' result JSON (so a run that resumed, or ran on Ray,
    writes the same file as one that ran in one go): images in input order (ids from 1), whatever order their
    results come in."""

    def __init__(self, classes: list[str], images: list[Path], files: ResultFiles):
        self.classes, self.images, self.files = list(classes), images, files
        self.root = Path(os.path.commonpath([p.parent for p in images])) if images else Path()
        self.stems = output_stems(images)
        self.entries: dict[int, tuple[tuple[int, int], list[dict[str, Any]]]] = {}

    def add(self, index: int, record: dict[str, Any]) -> None:
        """Add an image's result JSON (as :func:`result_json` makes it)."""
        from dart.labels import CocoDataset

        size, dets = _size_and_detections(record)
        self.entries[index] = (size, CocoDataset.encode(dets, len(self.classes)))  # dense masks are never held

    def add_saved(self, index: int) -> None:
        """Add the result an earlier run left in the image's ``<stem>.json``."""
        self.add(index, self.files.read_json(self.stems[index]))

    def write(self, path: Path) -> None:
        from dart.labels import CocoDataset

        dataset = CocoDataset(self.classes)
        for index in sorted(self.entries):
            size, rows = self.entries[index]
            dataset.add_rows(self.images[index].relative_to(self.root).as_posix(), size, rows)
        dataset.write(path)
