"""The one way dart writes files: outputs are planned and checked before any work, written atomically, and every
OS error becomes one sentence.

A command describes its run as an :class:`Outputs` plan: the inputs it reads (images, a video, a checkpoint, an
annotation file, a calibration folder ...) and the files and folders it will write. Planning refuses, before a
model is loaded,

- an output that is an input of the same run (``dart detect photos/ -o photos/``): dart never writes over its
  inputs, whatever the flags;
- an output that already exists, unless the run says ``--overwrite`` (the overwrite policy, docs/outputs.md);
  outputs that are meant to grow (a text cache) or to resume (``dart eval coco``) say so;
- an output whose folder cannot be created or written (read-only, no permission, a file where a folder must be).

Files are then written beside their destination under a temporary name and renamed into place (:func:`atomic_path`,
:func:`atomic_folder`, :func:`temp_beside`), so an earlier file is never replaced by a half-written one, and an
OS error on the way (disk full, ...) is a :class:`~dart.errors.WriteError` sentence that leaves no temporary file.

Text that leaves dart (terminal, JSON) passes :func:`redact` where it may hold a URL: passwords in
``rtsp://user:pass@host`` addresses are never printed or saved.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dart.errors import OutputError, WriteError

OVERWRITE_FLAG = "--overwrite"
TEMP_MARK = ".dart-tmp"  # every temporary name dart creates holds this, so a leftover is recognisable


# ------------------------------------------------------------------------------------------- sentences
_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "the operation is not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EXDEV: "it is on another file system than its temporary file",
    errno.ENOENT: "a folder on the way does not exist (removed during the run?)",
    errno.EEXIST: "a file with that name is in the way",
}


def os_reason(exc: OSError) -> str:
    """A short phrase for an OS error: ``"the disk is full"``, ``"permission denied"`` ..."""
    reason = _REASONS.get(exc.errno or -1)
    if reason:
        return reason
    return (exc.strerror or str(exc) or type(exc).__name__).rstrip(".").lower()


def write_error(exc: OSError, path: str | Path) -> WriteError:
    return WriteError(f"cannot write '{redact(str(path))}': {os_reason(exc)}; nothing was left half-written there.")


_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
_SECRET_QUERY = re.compile(r"(?i)([?&](?:password|passwd|pwd|token|access_token|api_key|apikey|key|secret|"
                           r"sig|signature)=)[^&\s#]+")


def redact(text: str) -> str:
    """``text`` with the credentials of any URL in it masked: ``rtsp://admin:secret@cam/1`` becomes
    ``rtsp://admin:***@cam/1`` (a user alone, ``rtsp://token@host``, becomes ``rtsp://***@host``), and secret
    query parameters (``?token=...``) become ``***``."""
    def userinfo(match: re.Match) -> str:
        user, sep, _ = match.group("userinfo").partition(":")
        masked = f"{user}:***" if sep else "***"
        return f"{match.group('scheme')}{masked}@"

    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(userinfo, text))


# ----------------------------------------------------------------------------------------- file modes
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


# ------------------------------------------------------------------------------------------- planning
def _resolve(path: str | Path) -> Path:
    return Path(os.path.abspath(Path(path).expanduser()))


def _inside(child: Path, parent: Path) -> bool:
    return child != parent and parent in child.parents


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(path.anchor or "/")


def writable_folder_problem(folder: Path) -> str | None:
    """Why files cannot be created in ``folder`` (which must exist), or None."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f"'{folder}' is on a read-only file system"
    except OSError:
        pass
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"you have no permission to write in '{folder}'"
    return None


@dataclass
class Outputs:
    """The inputs a run reads and the outputs it will write, checked together before any work.

    >>> plan = Outputs(overwrite=False)
    >>> plan.input("photos/", "image folder")
    >>> plan.folder("runs/detect", files=["a.jpg", "a.json"])     # raises OutputError on a problem
    """

    overwrite: bool = False
    inputs: list[tuple[Path, str, bool, str]] = field(default_factory=list)
    planned: list[Path] = field(default_factory=list)

    # ---------------------------------------------------------------------------------------- inputs
    def input(self, path: str | Path | None, what: str = "input", *, contents: bool = False,
              required: bool = False) -> None:
        """Record something the run reads; ``contents=True``: a folder whose files are all read (a checkpoint
        folder), so none of its existing files may be written over; ``required=True``: a missing path is one
        sentence now. Hub ids, URLs and camera indices (anything that is not an existing path) are ignored: they
        cannot be written over."""
        if path is None or str(path) in ("", "-") or "://" in str(path):
            return
        resolved = _resolve(path)
        if required and not os.path.exists(resolved):
            from dart.errors import InputError

            raise InputError(f"{what} '{redact(str(path))}' does not exist.")
        if os.path.lexists(resolved):
            self.inputs.append((resolved, what, contents and os.path.isdir(resolved), redact(str(path))))

    def inputs_from(self, paths: Iterable[str | Path | None], what: str) -> None:
        for path in paths:
            self.input(path, what)

    def _input_hit(self, target: Path, *, whole_folder: bool = False, existing: str = "refuse") -> str | None:
        """How to name the input that writing ``target`` would damage (``"the image 'a.jpg'"``), or None."""
        real = Path(os.path.realpath(target))
        exists = os.path.lexists(target)
        for path, what, contents, shown in self.inputs:
            real_input = Path(os.path.realpath(path))
            if target == path or real == real_input:
                return f"the {what} '{shown}'"
            if contents and exists and existing != "extend" and (_inside(target, path) or _inside(real, real_input)):
                return f"a file of the {what} '{shown}'"
            if whole_folder and (_inside(path, target) or _inside(real_input, real)):
                return f"the {what} '{shown}'"
            try:
                if exists and os.path.exists(path) and os.path.samefile(target, path):
                    return f"the {what} '{shown}'"  # a hard link or another name for the same file
            except OSError:
                continue
        return None

    # --------------------------------------------------------------------------------------- outputs
    def file(self, path: str | Path, what: str = "output", *, existing: str = "refuse") -> Path:
        """Plan one output file and return it.

        ``existing``: ``"refuse"`` (an existing file needs ``--overwrite``), ``"replace"`` (a file the command
        always rewrites, such as the summary in a resumable run's folder) or ``"extend"`` (a file the run adds to,
        such as a text cache)."""
        target = _resolve(path)
        shown = redact(str(path))
        hit = self._input_hit(target, existing=existing)
        if hit is not None:
            raise OutputError(f"{what} '{shown}' is {hit} this run reads; dart never writes over its inputs: "
                              "choose another output path.")
        if os.path.isdir(target):
            raise OutputError(f"{what} '{shown}' is a folder; give a file name.")
        self._check_parent(target, what, shown)
        if existing == "refuse" and os.path.lexists(target) and not self.overwrite:
            raise OutputError(f"{what} '{shown}' already exists; pass {OVERWRITE_FLAG} to replace it, or choose "
                              "another path.")
        self.planned.append(target)
        return Path(path)

    def folder(self, path: str | Path, what: str = "output folder", files: Iterable[str] = (), *,
               existing: str = "refuse", whole: bool = False) -> Path:
        """Plan an output folder and the ``files`` (relative names) the run will write into it.

        ``whole=True``: the folder is written as one unit and replaces an existing one (a pruned checkpoint); it
        must then neither be nor hold an input. Otherwise only the named files are checked: one that is an input
        is refused, an earlier result among them needs ``--overwrite`` (unless ``existing="replace"``)."""
        target = _resolve(path)
        shown = redact(str(path))
        if os.path.lexists(target) and not os.path.isdir(target):
            raise OutputError(f"{what} '{shown}' exists and is not a folder.")
        self._check_parent(target / "x", what, shown)
        if whole:
            hit = self._input_hit(target, whole_folder=True)
            if hit is not None:
                raise OutputError(f"{what} '{shown}' is or holds {hit} this run reads; dart never writes over its "
                                  "inputs: choose another output folder.")
            if os.path.isdir(target) and any(target.iterdir()) and not self.overwrite:
                raise OutputError(f"{what} '{shown}' already exists; pass {OVERWRITE_FLAG} to replace it, or "
                                  "choose another folder.")
            self.planned.append(target)
            return Path(path)
        clashes = []
        for name in files:
            file = target / name
            hit = self._input_hit(file)
            if hit is not None:
                raise OutputError(f"{what} '{shown}' would receive '{name}' over {hit} this run reads; dart never "
                                  "writes over its inputs: choose another output folder.")
            if os.path.isdir(file):
                raise OutputError(f"'{redact(str(Path(path) / name))}' is a folder, where this run writes a file.")
            if file.parent != target:
                self._check_parent(file, what, redact(str(Path(path) / name)))  # labels/ ... must be a folder
            if os.path.lexists(file):
                clashes.append(name)
            self.planned.append(file)
        if clashes and existing == "refuse" and not self.overwrite:
            listed = ", ".join(clashes[:3]) + (f" and {len(clashes) - 3} more" if len(clashes) > 3 else "")
            raise OutputError(f"{what} '{shown}' already holds results this run would replace ({listed}); pass "
                              f"{OVERWRITE_FLAG} to replace them, or choose another folder.")
        return Path(path)

    @staticmethod
    def _check_parent(target: Path, what: str, shown: str) -> None:
        existing = _nearest_existing(target.parent)
        if not os.path.isdir(existing):
            raise OutputError(f"{what} '{shown}' cannot be created: '{existing}' is a file, not a folder.")
        problem = writable_folder_problem(existing)
        if problem:
            raise OutputError(f"cannot write {what} '{shown}': {problem}.")


# ------------------------------------------------------------------------------------------- writing
def _mkdirs(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # a file where a folder must be
        raise OutputError(f"cannot create the folder '{redact(str(folder))}': a file of that name is in the "
                          "way.") from exc
    except OSError as exc:
        raise write_error(exc, folder) from exc


def ensure_folder(folder: str | Path) -> Path:
    """Create ``folder`` (and its parents) with a sentence on failure."""
    folder = Path(folder)
    _mkdirs(folder)
    return folder


def temp_beside(path: str | Path, suffix: str = "") -> Path:
    """A new empty temporary file beside ``path`` (same folder, so the final rename is atomic), with a normal
    file mode; the caller renames it into place with :func:`commit` or removes it."""
    path = Path(path)
    _mkdirs(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{TEMP_MARK}{suffix or path.suffix}",
                                   dir=path.parent)
        os.close(fd)
        os.chmod(tmp, default_mode())
    except OSError as exc:
        raise write_error(exc, path) from exc
    return Path(tmp)


def commit(tmp: str | Path, path: str | Path) -> None:
    """Rename a finished temporary file into place (atomic on one file system)."""
    try:
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(exc, path) from exc


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds. An OS error while
    writing is one :class:`~dart.errors.WriteError` sentence, and the temporary file is removed."""
    path = Path(path)
    tmp = temp_beside(path)
    try:
        try:
            yield tmp
        except OSError as exc:
            raise write_error(exc, path) from exc
        if tmp.exists():
            os.chmod(tmp, default_mode())
        commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def staging_folder(path: str | Path) -> Iterator[Path]:
    """Yield a new empty folder beside ``path`` for files that are moved into place one by one (with
    :func:`commit`); it is removed, with whatever is left in it, when the block ends. An OS error inside the
    block is one :class:`~dart.errors.WriteError` sentence."""
    path = Path(path)
    _mkdirs(path.parent)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TEMP_MARK, dir=path.parent))
        os.chmod(staging, default_mode(directory=True))
    except OSError as exc:
        raise write_error(exc, path) from exc
    try:
        try:
            yield staging
        except OSError as exc:
            raise write_error(exc, path) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder beside ``path``; when the block succeeds it replaces ``path`` whole (an
    existing folder is moved aside first and put back if the swap fails). Files in it get normal modes."""
    path = Path(path)
    with staging_folder(path) as staging:
        yield staging
        for file in staging.rglob("*"):
            os.chmod(file, default_mode(directory=file.is_dir()))  # safetensors / onnx write private files
        _swap_in(staging, path)


def _swap_in(staging: Path, folder: Path) -> None:
    if not folder.exists():
        os.replace(staging, folder)
        return
    backup = folder.parent / f".{folder.name}.old{TEMP_MARK}"
    shutil.rmtree(backup, ignore_errors=True)
    os.replace(folder, backup)
    try:
        os.replace(staging, folder)
    except OSError:
        os.replace(backup, folder)
        raise
    shutil.rmtree(backup, ignore_errors=True)


@contextmanager
def interrupt_deferred() -> Iterator[None]:
    """Ctrl-C held back until the block ends, then delivered: files that record one result together (an image's
    files and its entry in the run's summary) are never left half-recorded by an interruption. Only the main thread
    receives signals, so elsewhere the block simply runs."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            signal.raise_signal(signal.SIGINT)  # to the handler that was there: a KeyboardInterrupt, as usual


def file_or_folder(path: str | Path, default_name: str, suffixes: tuple[str, ...]) -> Path:
    """``path`` when it names a file ending in one of ``suffixes``; otherwise ``path`` is a folder and the file is
    ``path/default_name`` (so ``-o engines/`` and ``-o engines`` both mean the folder)."""
    path = Path(path)
    if path.is_file() or (path.suffix.lower() in suffixes and not path.is_dir()):
        return path  # an existing file is a file, whatever its suffix (and is then checked like any output)
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
        raise OutputError(f"OpenCV cannot encode an image as '{path.suffix}'; use .jpg or .png.")
    write_bytes(path, buf.tobytes())


# ------------------------------------------------------------------------------------------- reading
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
