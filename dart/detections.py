"""``Detections``: one frame's results, in original-image pixels.

Fields follow the conventions of supervision / ultralytics: ``xyxy`` float boxes ``[N, 4]``, ``scores [N]``,
``class_ids [N]`` (index into the class list given to the detector), ``class_names [N]`` (one name per
detection), optional boolean ``masks [N, H, W]`` and optional ``track_ids [N]``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Detections:
    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    class_names: np.ndarray
    masks: np.ndarray | None = None
    track_ids: np.ndarray | None = None
    image_size: tuple[int, int] | None = None  # (height, width) of the original image
    extra: dict[str, Any] = field(default_factory=dict)
    prompts: np.ndarray | None = None  # the prompt that found each detection, where classes have prompts/exemplars

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        n = len(self.xyxy)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(n)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(n)
        self.class_names = np.asarray(self.class_names, dtype=object).reshape(n)
        if self.masks is not None:
            self.masks = np.asarray(self.masks, dtype=bool)
            if self.masks.shape[0] != n:
                raise ValueError(f"masks has {self.masks.shape[0]} entries for {n} detections")
        if self.track_ids is not None:
            self.track_ids = np.asarray(self.track_ids, dtype=np.int64).reshape(n)
        if self.prompts is not None:
            self.prompts = np.asarray(self.prompts, dtype=object).reshape(n)

    @classmethod
    def empty(cls, image_size: tuple[int, int] | None = None, with_masks: bool = False) -> Detections:
        masks = np.zeros((0, *image_size), dtype=bool) if with_masks and image_size else None
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros(0, dtype=object), masks=masks,
                   image_size=image_size)

    def __len__(self) -> int:
        return len(self.xyxy)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.to_json())

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> Detections:
        """Select detections by integer index, slice, index array or boolean mask (always returns Detections)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(
            xyxy=self.xyxy[index],
            scores=self.scores[index],
            class_ids=self.class_ids[index],
            class_names=self.class_names[index],
            masks=None if self.masks is None else self.masks[index],
            track_ids=None if self.track_ids is None else self.track_ids[index],
            image_size=self.image_size,
            prompts=None if self.prompts is None else self.prompts[index],
            extra={k: v[index] if isinstance(v, np.ndarray) and len(v) == len(self) else v
                   for k, v in self.extra.items()},  # per-detection arrays follow the selection
        )

    @property
    def xywh(self) -> np.ndarray:
        """Boxes as ``[x, y, width, height]`` (COCO / MOT convention)."""
        out = self.xyxy.copy()
        out[:, 2:] -= out[:, :2]
        return out

    @property
    def area(self) -> np.ndarray:
        return self.xywh[:, 2] * self.xywh[:, 3]

    def sorted(self) -> Detections:
        """Highest score first."""
        return self[np.argsort(-self.scores, kind="stable")]

    def to_json(self) -> list[dict[str, Any]]:
        """One JSON-ready object per detection: ``box_xyxy``, ``score``, ``class_id``, ``class_name``
        (+ ``prompt``: the prompt that found it, where classes have several prompts or exemplars; + ``track_id``;
        + ``mask`` as COCO RLE ``{"size": [h, w], "counts": str}``)."""
        rles = self.masks_rle() if self.masks is not None else None
        rows = []
        for i in range(len(self)):
            row: dict[str, Any] = {
                "box_xyxy": [round(float(v), 2) for v in self.xyxy[i]],
                "score": round(float(self.scores[i]), 5),
                "class_id": int(self.class_ids[i]),
                "class_name": str(self.class_names[i]),
            }
            if self.prompts is not None:
                row["prompt"] = str(self.prompts[i])
            if self.track_ids is not None:
                row["track_id"] = int(self.track_ids[i])
            if rles is not None:
                row["mask"] = rles[i]
            rows.append(row)
        return rows

    @classmethod
    def from_json(cls, rows: Sequence[dict[str, Any]], image_size: tuple[int, int] | None = None) -> Detections:
        """Inverse of :meth:`to_json` (masks are decoded when present)."""
        if not rows:
            return cls.empty(image_size)
        masks = None
        if all("mask" in r for r in rows):
            from pycocotools import mask as mask_utils

            masks = np.stack([mask_utils.decode(_rle_to_coco(r["mask"])).astype(bool) for r in rows])
        track_ids = [r["track_id"] for r in rows] if all("track_id" in r for r in rows) else None
        prompts = [r["prompt"] for r in rows] if all("prompt" in r for r in rows) else None
        return cls(
            xyxy=[r["box_xyxy"] for r in rows],
            scores=[r["score"] for r in rows],
            class_ids=[r["class_id"] for r in rows],
            class_names=[r["class_name"] for r in rows],
            masks=masks,
            track_ids=track_ids,
            image_size=image_size,
            prompts=prompts,
        )

    def to_supervision(self) -> Any:
        """These detections as a ``supervision.Detections`` (``confidence``, ``class_id``, ``mask``,
        ``tracker_id``; class names in ``data["class_name"]``), for supervision's annotators, zones and trackers.
        Needs ``pip install supervision``."""
        sv = _import_supervision()
        return sv.Detections(
            xyxy=self.xyxy.copy(),
            confidence=self.scores.copy(),
            class_id=self.class_ids.copy(),
            mask=None if self.masks is None else self.masks.copy(),
            tracker_id=None if self.track_ids is None else self.track_ids.copy(),
            data={"class_name": self.class_names.astype(str)},
        )

    @classmethod
    def from_supervision(cls, detections: Any, class_names: Sequence[str] | None = None,
                         image_size: tuple[int, int] | None = None) -> Detections:
        """From a ``supervision.Detections`` (after its filters or trackers, say). Names come from
        ``data["class_name"]``, else ``class_names[class_id]``; a missing confidence counts as 1."""
        n = len(detections)
        class_ids = np.zeros(n, np.int64) if detections.class_id is None else np.asarray(detections.class_id)
        names = (detections.data or {}).get("class_name")
        if names is None:
            if class_names is None and n:
                raise ValueError("these supervision detections carry no class names: pass class_names=[...]")
            names = [class_names[int(c)] for c in class_ids] if n else []
        mask = detections.mask
        return cls(
            xyxy=np.asarray(detections.xyxy),
            scores=np.ones(n) if detections.confidence is None else np.asarray(detections.confidence),
            class_ids=class_ids,
            class_names=list(names),
            masks=None if mask is None else np.asarray(mask, dtype=bool),  # dense, also from a CompactMask
            track_ids=None if detections.tracker_id is None else np.asarray(detections.tracker_id),
            image_size=image_size,
        )

    def masks_rle(self) -> list[dict[str, Any]]:
        """Masks as COCO run-length encodings with string counts (JSON-safe)."""
        if self.masks is None:
            return []
        from pycocotools import mask as mask_utils

        encoded = mask_utils.encode(np.asfortranarray(self.masks.transpose(1, 2, 0).astype(np.uint8)))
        return [{"size": [int(s) for s in e["size"]], "counts": e["counts"].decode("ascii")} for e in encoded]

    def to_coco(self, image_id: int, category_ids: Sequence[int] | dict[int, int]) -> list[dict[str, Any]]:
        """COCO results rows (``bbox`` in xywh); ``category_ids`` maps each class id to a COCO category id."""
        rles = self.masks_rle() if self.masks is not None else None
        rows = []
        for i in range(len(self)):
            row: dict[str, Any] = {
                "image_id": int(image_id),
                "category_id": int(category_ids[int(self.class_ids[i])]),
                "bbox": [round(float(v), 2) for v in self.xywh[i]],
                "score": round(float(self.scores[i]), 5),
            }
            if rles is not None:
                row["segmentation"] = rles[i]
            rows.append(row)
        return rows

    def to_mot(self, frame: int) -> list[str]:
        """MOTChallenge rows ``frame,id,x,y,w,h,score,class,-1,-1`` (frames count from 1; needs track ids)."""
        if self.track_ids is None:
            raise ValueError("MOT rows need track ids: run a tracker first")
        xywh = self.xywh
        return [
            f"{frame},{int(self.track_ids[i])},{xywh[i, 0]:.2f},{xywh[i, 1]:.2f},{xywh[i, 2]:.2f},{xywh[i, 3]:.2f},"
            f"{float(self.scores[i]):.4f},{int(self.class_ids[i])},-1,-1"
            for i in range(len(self))
        ]

    @classmethod
    def merge(cls, parts: Sequence[Detections]) -> Detections:
        """Concatenate detections of the same image."""
        parts = [p for p in parts if p is not None]
        if not parts:
            return cls.empty()
        with_masks = all(p.masks is not None for p in parts)
        with_tracks = all(p.track_ids is not None for p in parts)
        with_prompts = all(p.prompts is not None for p in parts)
        return cls(
            xyxy=np.concatenate([p.xyxy for p in parts]),
            scores=np.concatenate([p.scores for p in parts]),
            class_ids=np.concatenate([p.class_ids for p in parts]),
            class_names=np.concatenate([p.class_names for p in parts]),
            masks=np.concatenate([p.masks for p in parts]) if with_masks else None,
            track_ids=np.concatenate([p.track_ids for p in parts]) if with_tracks else None,
            image_size=parts[0].image_size,
            prompts=np.concatenate([p.prompts for p in parts]) if with_prompts else None,
        )


def _rle_to_coco(rle: dict[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    return {"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def _import_supervision() -> Any:
    try:
        import supervision
    except ImportError:
        from dart.errors import DependencyError

        raise DependencyError("to_supervision needs the supervision package: pip install supervision.") from None
    return supervision
