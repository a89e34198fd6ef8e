"""A small generated COCO-format dataset (images + instances JSON) and a detector double that answers with
chosen boxes, for testing the evaluation path without a model."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from dart.classes import COCO80
from dart.detections import Detections

# COCO 2017 category ids: 1..90 without the ten ids the 80-class split leaves out.
COCO_IDS = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]

# (height, width) per image: distinct sizes let the detector double recognise an image from its pixels.
SIZES = [(90, 160), (120, 100), (80, 140), (100, 100), (96, 128), (110, 150)]


def write_dataset(folder: Path, seed: int = 0, categories: list[str] | None = None) -> tuple[Path, Path]:
    """Write ``folder/images/*.jpg`` and ``folder/instances.json``; return ``(images_dir, annotations)``."""
    rng = np.random.default_rng(seed)
    images_dir = folder / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    names = categories or COCO80
    cats = [{"id": COCO_IDS[i], "name": name, "supercategory": "thing"} for i, name in enumerate(names)]
    images, anns = [], []
    for index, (h, w) in enumerate(SIZES):
        image_id = 100 + 7 * index  # ids need not be contiguous
        img = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
        file_name = f"img{index:03d}.jpg"
        cv2.imwrite(str(images_dir / file_name), img)
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
        for _ in range(int(rng.integers(1, 5))):
            bw, bh = float(rng.uniform(8, w / 2)), float(rng.uniform(8, h / 2))
            x, y = float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh))
            cat = cats[int(rng.integers(0, min(6, len(cats))))]  # a handful of classes, like a real image
            poly = [x, y, x + bw, y, x + bw, y + bh, x, y + bh]
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat["id"], "bbox": [x, y, bw, bh],
                         "area": bw * bh, "iscrowd": 0, "segmentation": [poly]})
    annotations = folder / "instances.json"
    annotations.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return images_dir, annotations


class GroundTruthDetector:
    """Quacks like :class:`dart.detector.Detector`: returns the annotated boxes of the image it is shown
    (recognised by its size), optionally perturbed: jittered boxes, random scores, missed and false boxes."""

    def __init__(self, annotations: Path, perturb: bool = False, seed: int = 0, masks: bool = False,
                 interrupt_after: int | None = None):
        from pycocotools.coco import COCO
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            self.coco = COCO(str(annotations))
        self.by_size = {(im["height"], im["width"]): im["id"] for im in self.coco.dataset["images"]}
        self.cat_to_name = {c["id"]: c["name"] for c in self.coco.dataset["categories"]}
        self.perturb = perturb
        self.rng = np.random.default_rng(seed)
        self.masks = masks
        self.interrupt_after = interrupt_after
        self.seen: list[int] = []
        self._classes: list[str] = []

    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    def set_classes(self, names):
        self._classes = list(names)

    def detect_batch(self, images):
        return [self._detect(im) for im in images]

    def _detect(self, image) -> Detections:
        if self.interrupt_after is not None and len(self.seen) >= self.interrupt_after:
            raise KeyboardInterrupt
        h, w = image.shape[:2]
        image_id = self.by_size[(h, w)]
        self.seen.append(image_id)
        # Perturbation is a function of the image (not of call order), so resumed and sharded runs see the same.
        rng = np.random.default_rng(image_id) if self.perturb else None
        boxes, scores, class_ids, masks = [], [], [], []
        for ann in self.coco.imgToAnns[image_id]:
            x, y, bw, bh = ann["bbox"]
            box = np.array([x, y, x + bw, y + bh])
            score = 1.0
            if rng is not None:
                if rng.random() < 0.2:
                    continue  # missed
                box = box + rng.normal(0, 0.12 * max(bw, bh), 4)
                score = float(rng.uniform(0.05, 1.0))
            boxes.append(box)
            scores.append(score)
            class_ids.append(self._classes.index(self.cat_to_name[ann["category_id"]]))
            if self.masks:
                masks.append(self.coco.annToMask(ann).astype(bool))
        if rng is not None:
            for _ in range(int(rng.integers(0, 3))):  # false positives
                x, y = rng.uniform(0, w / 2), rng.uniform(0, h / 2)
                boxes.append(np.array([x, y, x + rng.uniform(5, w / 2), y + rng.uniform(5, h / 2)]))
                scores.append(float(rng.uniform(0.05, 0.9)))
                class_ids.append(int(rng.integers(0, 6)))
                if self.masks:
                    m = np.zeros((h, w), bool)
                    b = boxes[-1].astype(int)
                    m[b[1]:b[3], b[0]:b[2]] = True
                    masks.append(m)
        boxes_arr = np.clip(np.array(boxes, dtype=np.float32).reshape(-1, 4), 0, [w, h, w, h])
        boxes_arr = np.concatenate([np.minimum(boxes_arr[:, :2], boxes_arr[:, 2:]),
                                    np.maximum(boxes_arr[:, :2], boxes_arr[:, 2:])], axis=1)
        names = np.array([self._classes[c] for c in class_ids], dtype=object)
        mask_arr = np.array(masks, dtype=bool).reshape(-1, h, w) if self.masks else None
        return Detections(boxes_arr, scores, class_ids, names, masks=mask_arr, image_size=(h, w))
