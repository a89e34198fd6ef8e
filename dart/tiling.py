"""Tiled detection for large images with small objects (the SAHI idea).

SAM3 sees an image squashed to ``imgsz`` pixels, so a 20-pixel object in a 4K frame shrinks to about 5 pixels.
:func:`detect_tiled` also runs the detector on overlapping crops of ``tile`` pixels (batched through the
backbone), moves their boxes back into the image, adds the whole-image pass, and merges what several tiles
found twice: within a class, a box mostly inside a higher-scoring box (intersection over the smaller area at
least ``merge_ios``) is dropped, which also removes the cut-off halves that objects on a tile border leave.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dart.detections import Detections
from dart.errors import InputError
from dart.preprocess import ImageInput, load_image, to_rgb

DEFAULT_OVERLAP = 0.2
DEFAULT_MERGE_IOS = 0.6


def tile_grid(height: int, width: int, tile: int, overlap: float = DEFAULT_OVERLAP) -> list[tuple[int, int, int, int]]:
    """Crops ``(x0, y0, x1, y1)`` of at most ``tile`` pixels that cover the image, neighbours sharing at least
    ``overlap`` of a tile; the last row and column are moved back inside the image rather than cut short."""
    if tile < 1:
        raise InputError(f"the tile size must be at least 1 pixel, got {tile}.")
    if not 0.0 <= overlap < 1.0:
        raise InputError(f"the tile overlap must be in [0, 1), got {overlap}.")

    def starts(size: int) -> list[int]:
        if size <= tile:
            return [0]
        step = max(1, int(tile * (1.0 - overlap)))
        count = -(-(size - tile) // step) + 1  # tiles needed so that the last one reaches the border
        return [min(i * step, size - tile) for i in range(count)]

    return [(x, y, min(x + tile, width), min(y + tile, height)) for y in starts(height) for x in starts(width)]


def suppress_contained(dets: Detections, ios: float = DEFAULT_MERGE_IOS) -> np.ndarray:
    """Indices (best score first) kept after dropping, within each class, every box whose intersection with a
    kept, higher-scoring box covers at least ``ios`` of the smaller of the two."""
    order = np.argsort(-dets.scores, kind="stable")
    boxes = dets.xyxy.astype(np.float64)
    area = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    kept: list[int] = []
    for i in order:
        if kept:
            k = np.array(kept)
            k = k[dets.class_ids[k] == dets.class_ids[i]]
            if len(k):
                w = np.minimum(boxes[k, 2], boxes[i, 2]) - np.maximum(boxes[k, 0], boxes[i, 0])
                h = np.minimum(boxes[k, 3], boxes[i, 3]) - np.maximum(boxes[k, 1], boxes[i, 1])
                inter = np.maximum(w, 0) * np.maximum(h, 0)
                smaller = np.maximum(np.minimum(area[k], area[i]), 1e-9)
                if np.any(inter / smaller >= ios):
                    continue
        kept.append(int(i))
    return np.array(kept, dtype=np.int64)


def _shift(dets: Detections, x0: int, y0: int, size: tuple[int, int]) -> Detections:
    """A crop's detections in the coordinates of the whole image of ``size`` (height, width)."""
    masks = None
    if dets.masks is not None:
        masks = np.zeros((len(dets), *size), dtype=bool)
        h, w = dets.masks.shape[1:]
        masks[:, y0:y0 + h, x0:x0 + w] = dets.masks
    return Detections(dets.xyxy + np.array([x0, y0, x0, y0], np.float32), dets.scores, dets.class_ids,
                      dets.class_names, masks=masks, track_ids=dets.track_ids, image_size=size, prompts=dets.prompts)


def detect_tiled(detector, image: ImageInput, tile: int, *, overlap: float = DEFAULT_OVERLAP,
                 full_image: bool = True, merge_ios: float = DEFAULT_MERGE_IOS, batch: int = 4) -> Detections:
    """Detect in overlapping ``tile``-pixel crops of ``image`` (and the whole image unless ``full_image`` is
    False), ``batch`` crops per backbone call; the merged result, best score first, at most the detector's
    ``max_det``. An image no larger than one tile is detected as a whole."""
    if not 0.0 < merge_ios <= 1.0:
        raise InputError(f"merge_ios must be in (0, 1], got {merge_ios}.")
    if isinstance(image, np.ndarray):
        array = image
    elif isinstance(image, (str, Path)):
        array = load_image(image)
    else:  # a PIL image: BGR like the rest
        array = np.ascontiguousarray(to_rgb(image)[:, :, ::-1])
    height, width = array.shape[:2]
    grid = tile_grid(height, width, tile, overlap)
    if len(grid) > 1 and getattr(detector, "has_in_image_exemplars", False):
        raise InputError("exemplar boxes drawn on the detected image cannot be used with tiles (each tile is another "
                         "image); draw them on a reference image instead (--exemplar IMAGE:BOXES=NAME).")
    if len(grid) == 1:
        return detector.detect(array)
    crops = [np.ascontiguousarray(array[y0:y1, x0:x1]) for x0, y0, x1, y1 in grid]
    parts: list[Detections] = []
    for start in range(0, len(crops), batch):
        found = detector.detect_batch(crops[start:start + batch])
        parts.extend(_shift(d, x0, y0, (height, width)) for d, (x0, y0, _, _) in zip(found, grid[start:start + batch]))
    if full_image:
        parts.append(detector.detect(array))
    merged = Detections.merge(parts)  # every part has masks when the detector makes them
    merged.image_size = (height, width)
    keep = suppress_contained(merged, merge_ios)[: detector.post.max_det]
    return merged[keep]


class TiledDetector:
    """A :class:`~dart.detector.Detector` that detects every image with :func:`detect_tiled`; everything else
    (``classes``, ``set_classes``, ``backend`` ...) is the wrapped detector's. Anything that takes a detector
    (``dart.eval.coco.evaluate_coco``, ``dart.video.run_video``) can take this one."""

    splits_stages = False  # detect() is whole: a video pipeline must not call the wrapped detector's stages

    def __init__(self, detector, tile: int, *, overlap: float = DEFAULT_OVERLAP, full_image: bool = True,
                 merge_ios: float = DEFAULT_MERGE_IOS, batch: int = 4):
        tile_grid(tile, tile, tile, overlap)  # bad settings are refused now, not on the first image
        self.detector, self.tile, self.overlap = detector, tile, overlap
        self.full_image, self.merge_ios, self.batch = full_image, merge_ios, batch

    def detect(self, image: ImageInput) -> Detections:
        return detect_tiled(self.detector, image, self.tile, overlap=self.overlap, full_image=self.full_image,
                            merge_ios=self.merge_ios, batch=self.batch)

    def detect_batch(self, images) -> list[Detections]:
        return [self.detect(image) for image in images]

    def __call__(self, images):
        return self.detect_batch(list(images)) if isinstance(images, (list, tuple)) else self.detect(images)

    def __getattr__(self, name: str):
        return getattr(self.detector, name)


def tiled(detector, tile: int | None, *, overlap: float = DEFAULT_OVERLAP, batch: int = 4):
    """``detector`` wrapped in a :class:`TiledDetector` when ``tile`` is given (``--tile``), else itself: the one
    place the commands (detect, eval, video, the Ray labeller) turn their tiling options into a detector."""
    return TiledDetector(detector, tile, overlap=overlap, batch=batch) if tile else detector
