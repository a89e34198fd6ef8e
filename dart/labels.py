"""Auto-labelling: detections written as training labels for other detectors.

- YOLO text labels (what ultralytics trains on): one ``<stem>.txt`` per image, one row per object,
  ``class cx cy w h`` normalised to 0..1 (``--save-conf`` appends the score). With masks, the segmentation form
  ``class x1 y1 x2 y2 ...``: the outline of the mask's largest region, normalised.
- A COCO dataset file (``instances.json``): images, categories (ids from 1, in class-list order) and one
  annotation per detection (``bbox`` xywh, ``area``, ``iscrowd`` 0, ``score``; ``segmentation`` as RLE with masks),
  loadable by pycocotools.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dart.detections import Detections
from dart.io import write_json, write_text

POLYGON_TOLERANCE = 0.5  # pixels: outline simplification (cv2.approxPolyDP epsilon)


def mask_polygon(mask: np.ndarray) -> np.ndarray:
    """The outline ``[K, 2]`` (x, y pixels) of the largest connected region of a boolean mask; empty if none."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.zeros((0, 2), np.float32)
    largest = max(contours, key=cv2.contourArea)
    outline = cv2.approxPolyDP(largest, POLYGON_TOLERANCE, True).reshape(-1, 2)
    return outline.astype(np.float32)


def yolo_rows(dets: Detections, image_size: tuple[int, int], *, with_conf: bool = False,
              segments: bool = False) -> list[str]:
    """YOLO label rows for one image of ``image_size`` (height, width); ``segments`` writes mask outlines (a
    detection whose mask is empty, or with too few points, falls back to its box as a 4-point outline)."""
    height, width = image_size
    scale = np.array([width, height], np.float32)
    rows = []
    for i in range(len(dets)):
        x1, y1, x2, y2 = np.clip(dets.xyxy[i], 0, [width, height, width, height])
        if segments:
            points = mask_polygon(dets.masks[i]) if dets.masks is not None else np.zeros((0, 2))
            if len(points) < 3:
                points = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float32)
            values = (np.clip(points, 0, scale) / scale).reshape(-1)
        else:
            values = np.array([(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width,
                               (y2 - y1) / height])
        row = " ".join([str(int(dets.class_ids[i]))] + [f"{v:.6f}" for v in values])
        if with_conf:
            row += f" {float(dets.scores[i]):.5f}"
        rows.append(row)
    return rows


def write_yolo_labels(path: str | Path, dets: Detections, image_size: tuple[int, int], *, with_conf: bool = False,
                      segments: bool = False) -> None:
    """One image's YOLO label file (an image without detections gets an empty file: a background image)."""
    rows = yolo_rows(dets, image_size, with_conf=with_conf, segments=segments)
    write_text(path, "".join(row + "\n" for row in rows))


def write_class_names(path: str | Path, classes: list[str]) -> None:
    """``classes.txt``: the class names in id order, one per line (YOLO label tools read it)."""
    write_text(path, "".join(name + "\n" for name in classes))


class CocoDataset:
    """Collects images and detections and writes them as one COCO instances file."""

    def __init__(self, classes: list[str]):
        self.classes = list(classes)
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []

    def add(self, file_name: str, image_size: tuple[int, int], dets: Detections) -> int:
        """Add one image and its detections; returns the image id (from 1)."""
        return self.add_rows(file_name, image_size, self.encode(dets, len(self.classes)))

    @staticmethod
    def encode(dets: Detections, num_classes: int | None = None) -> list[dict[str, Any]]:
        """One image's annotations without ids (boxes xywh, areas; masks as RLE, their area the mask's)."""
        count = num_classes if num_classes is not None else int(dets.class_ids.max(initial=-1)) + 1
        rows = dets.to_coco(0, list(range(1, count + 1)))
        for row in rows:
            del row["image_id"]
            _, _, w, h = row["bbox"]
            row.update(area=round(float(w * h), 2), iscrowd=0)
            if "segmentation" in row:
                from pycocotools import mask as mask_utils

                rle = dict(row["segmentation"], counts=row["segmentation"]["counts"].encode("ascii"))
                row["area"] = float(mask_utils.area(rle))
        return rows

    def add_rows(self, file_name: str, image_size: tuple[int, int], rows: list[dict[str, Any]]) -> int:
        """Add one image and its annotations from :meth:`encode`; returns the image id (from 1)."""
        image_id = len(self.images) + 1
        height, width = image_size
        self.images.append({"id": image_id, "file_name": file_name, "width": int(width), "height": int(height)})
        for row in rows:
            self.annotations.append({"id": len(self.annotations) + 1, "image_id": image_id, **row})
        return image_id

    def to_dict(self) -> dict[str, Any]:
        return {
            "info": {"description": "labels from dart (SAM3 open-vocabulary detections)"},
            "images": self.images,
            "categories": [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(self.classes)],
            "annotations": self.annotations,
        }

    def write(self, path: str | Path) -> None:
        write_json(path, self.to_dict())
