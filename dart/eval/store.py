"""Predictions written as they are made, so an interrupted evaluation resumes where it stopped.

Each rank (one process; several under ``torchrun``) appends to its own two files in the output folder:

- ``predictions-rank{R}.jsonl``: one line per image, ``{"image_id": ..., "results": [COCO result rows]}``;
- ``done-rank{R}.txt``: the image id, appended only after its JSONL line is flushed to disk.

An image counts as done only when its id is in a done list, so a line cut short by a crash is ignored (and cut
off before appending resumes). Images are split across ranks with :func:`shard`; :func:`load_predictions` reads
every rank's files back, whatever the number of ranks that wrote them, so a resumed run may use another
``WORLD_SIZE``. Rank R writes ``shard-{R}-of-{W}.complete`` when it has finished its share; rank 0 waits for all of
them (:func:`wait_for_shards`) before merging.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from dart.errors import DartError, InputError

T = TypeVar("T")

PREDICTIONS = "predictions-rank{rank}.jsonl"
DONE = "done-rank{rank}.txt"
COMPLETE = "shard-{rank}-of-{world}.complete"


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    """The share of ``items`` that rank ``rank`` of ``world`` processes: ``items[rank::world]``."""
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"rank {rank} is not a valid rank for a world size of {world}.")
    return list(items[rank::world])


def dist_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the variables ``torchrun`` sets (``0, 1, 0`` without it)."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise InputError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers ({exc}).") from exc
    shard([], rank, world)  # validates
    return rank, world, local


class PredictionStore:
    """The append-only prediction files of one rank."""

    def __init__(self, folder: str | Path, rank: int = 0):
        self.folder = Path(folder)
        self.rank = rank
        self.predictions = self.folder / PREDICTIONS.format(rank=rank)
        self.done_file = self.folder / DONE.format(rank=rank)

    def reset(self) -> None:
        """Forget this rank's earlier predictions (``--no-resume``)."""
        for path in (self.predictions, self.done_file):
            path.unlink(missing_ok=True)
        for marker in self.folder.glob(f"shard-{self.rank}-of-*.complete"):
            marker.unlink(missing_ok=True)

    def open(self) -> None:
        """Prepare for appending: cut a partial last line left by a crash."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for path in (self.predictions, self.done_file):
            _truncate_partial_line(path)

    def append(self, image_id: int, results: list[dict[str, Any]], **info: Any) -> None:
        """Record one image's results durably (results line first, then its id in the done list)."""
        line = json.dumps({"image_id": int(image_id), **info, "results": results}, separators=(",", ":"))
        _append_line(self.predictions, line)
        _append_line(self.done_file, str(int(image_id)))

    def mark_complete(self, world: int, share: Sequence[int]) -> None:
        """Say that this rank has finished ``share`` (the image ids it was given)."""
        from dart.io import write_text

        write_text(self.folder / COMPLETE.format(rank=self.rank, world=world), share_token(share))


def share_token(share: Sequence[int]) -> str:
    """Identifies a share of images, so a marker left by a run over other images is not mistaken for this one."""
    import hashlib

    return hashlib.sha256(",".join(map(str, sorted(share))).encode()).hexdigest()[:16]


def _append_line(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def _truncate_partial_line(path: Path) -> None:
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with path.open("r+b") as f:
            f.truncate(keep)


def done_ids(folder: str | Path) -> set[int]:
    """Image ids finished by any rank."""
    ids: set[int] = set()
    for path in sorted(Path(folder).glob(DONE.format(rank="*"))):
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line.isdigit():
                ids.add(int(line))
    return ids


def load_predictions(folder: str | Path) -> dict[int, list[dict[str, Any]]]:
    """``{image_id: results}`` for every finished image, merged over all ranks' files."""
    folder = Path(folder)
    finished = done_ids(folder)
    merged: dict[int, list[dict[str, Any]]] = {}
    for path in sorted(folder.glob(PREDICTIONS.format(rank="*"))):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash: its image is not in a done list either
            image_id = record.get("image_id")
            if not isinstance(image_id, int) or not isinstance(record.get("results"), list):
                raise InputError(f"{path}:{number} is not a dart prediction line; delete {folder} or pass --no-resume.")
            if image_id in finished:
                merged[image_id] = record["results"]
    return merged


def merge_results(predictions: dict[int, list[dict[str, Any]]], image_ids: Iterable[int]) -> list[dict[str, Any]]:
    """The COCO results list for ``image_ids`` (in image-id order) from merged per-image predictions."""
    rows: list[dict[str, Any]] = []
    for image_id in sorted(set(image_ids)):
        rows.extend(predictions.get(image_id, []))
    return rows


def wait_for_shards(folder: str | Path, image_ids: Sequence[int], world: int, timeout: float = 24 * 3600.0,
                    poll: float = 2.0) -> None:
    """Block until every rank of ``world`` has marked its share of ``image_ids`` complete (rank 0 calls this
    before merging)."""
    folder = Path(folder)
    deadline = time.monotonic() + timeout
    expected = {r: share_token(shard(image_ids, r, world)) for r in range(world)}
    while True:
        missing = [r for r in range(world) if _marker(folder / COMPLETE.format(rank=r, world=world)) != expected[r]]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise DartError(f"ranks {', '.join(map(str, missing))} did not finish their share within {timeout:.0f}s; "
                            "run the same command again to resume.")
        time.sleep(max(0.01, min(poll, deadline - time.monotonic())))


def _marker(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def clear_markers(folder: str | Path) -> None:
    for marker in Path(folder).glob("shard-*-of-*.complete"):
        marker.unlink(missing_ok=True)
