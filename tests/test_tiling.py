"""Tiled detection: the tile grid covers the image, containment merging keeps the best box of a class, and
detect_tiled equals detecting every crop on its own, moved into the image, plus the whole image, merged."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from dart.cli import build_app
from dart.detections import Detections
from dart.detector import Detector
from dart.errors import InputError
from dart.tiling import TiledDetector, detect_tiled, suppress_contained, tile_grid
from tests.conftest import make_image
from tests.tiny import TINY_IMGSZ


@pytest.mark.parametrize("height, width, tile, overlap", [(100, 250, 100, 0.2), (2160, 3840, 1008, 0.25),
                                                         (90, 160, 64, 0.0), (50, 40, 100, 0.2)])
def test_grid_covers_the_image_with_the_overlap(height, width, tile, overlap):
    grid = tile_grid(height, width, tile, overlap)
    covered = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in grid:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert x1 - x0 == min(tile, width) and y1 - y0 == min(tile, height)  # whole tiles, moved inside
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    xs = sorted({x0 for x0, _, _, _ in grid})
    assert all(b - a <= tile * (1 - overlap) + 1 for a, b in zip(xs, xs[1:]))  # neighbours share the overlap
    assert len(tile_grid(height, width, max(height, width))) == 1


def test_bad_tile_settings():
    with pytest.raises(InputError, match="overlap"):
        tile_grid(100, 100, 50, 1.0)
    with pytest.raises(InputError, match="tile size"):
        tile_grid(100, 100, 0)


def test_containment_merge_keeps_the_best_box_per_class():
    dets = Detections(
        xyxy=[[0, 0, 100, 100], [50, 10, 98, 90], [50, 10, 98, 90], [200, 0, 300, 100], [260, 0, 330, 100]],
        scores=[0.9, 0.95, 0.8, 0.7, 0.6], class_ids=[0, 1, 0, 0, 0], class_names=["a", "b", "a", "a", "a"])
    keep = suppress_contained(dets, ios=0.6)
    # box 2 lies inside box 0 (same class): dropped; box 1 is another class; box 4 overlaps box 3 by 40/70 < 0.6
    assert keep.tolist() == [1, 0, 3, 4]
    assert suppress_contained(dets, ios=0.5).tolist() == [1, 0, 3]


@pytest.mark.parametrize("masks", [False, True])
def test_tiled_equals_each_crop_detected_and_moved(tiny_backend, masks):
    detector = Detector(tiny_backend, ["person", "car", "dog"], conf=0.1, masks=masks)
    image = make_image(90, 160, seed=2)
    got = detect_tiled(detector, image, 64, overlap=0.25, batch=3)
    parts = []
    for x0, y0, x1, y1 in tile_grid(90, 160, 64, 0.25):
        crop = detector.detect(np.ascontiguousarray(image[y0:y1, x0:x1]))
        full_masks = None
        if masks:
            full_masks = np.zeros((len(crop), 90, 160), bool)
            full_masks[:, y0:y1, x0:x1] = crop.masks
        parts.append(Detections(crop.xyxy + [x0, y0, x0, y0], crop.scores, crop.class_ids, crop.class_names,
                                masks=full_masks))
    parts.append(detector.detect(image))
    everything = Detections.merge(parts)
    expected = everything[suppress_contained(everything)]
    assert len(everything) > len(got) > 0 and got.image_size == (90, 160)
    np.testing.assert_allclose(got.xyxy, expected.xyxy, atol=1e-3)
    np.testing.assert_allclose(got.scores, expected.scores, atol=1e-6)
    assert got.class_names.tolist() == expected.class_names.tolist()
    if masks:
        assert np.array_equal(got.masks, expected.masks)
    assert len(detect_tiled(detector, image, 200)) == len(detector.detect(image))  # one tile: the whole image
    tiled = TiledDetector(detector, 64, overlap=0.25, batch=3)  # the Detector interface, tiled
    assert tiled.classes == detector.classes and tiled.masks == masks
    assert all(np.array_equal(a.xyxy, got.xyxy) for a in tiled.detect_batch([image, image]))
    with pytest.raises(InputError, match="overlap"):
        TiledDetector(detector, 64, overlap=1.0)


def test_cli_tile(tmp_path, tiny_ckpt, image_file):
    out = tmp_path / "out"
    res = CliRunner().invoke(build_app(), ["detect", str(image_file), "-c", "person", "car", "--checkpoint",
                                           str(tiny_ckpt), "--imgsz", str(TINY_IMGSZ), "--device", "cpu", "--conf",
                                           "0.1", "--tile", "64", "--batch", "4", "-o", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads((out / "street.json").read_text())["detections"]
    assert rows and all(0 <= r["box_xyxy"][0] <= r["box_xyxy"][2] <= 160 for r in rows)


def test_video_runs_tiled_frames_whole(tiny_backend, tmp_path):
    """run_video never calls a tiled detector's inner stages (even when asked to overlap them): every frame's
    detections equal detect_tiled on that frame; `dart video --tile` takes the same path."""
    import cv2

    from dart.tiling import TiledDetector
    from dart.video import open_source, run_video, same_detections

    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 90))
    for i in range(4):
        writer.write(np.ascontiguousarray(np.roll(make_image(90, 160, seed=2), 5 * i, axis=1)))
    writer.release()
    detector = Detector(tiny_backend, ["person", "car"], conf=0.1)
    tiled = TiledDetector(detector, 64)
    got = []
    run_video(tiled, path, progress=False, overlap_stages=True, on_frame=lambda frame, dets: got.append(dets))
    with open_source(path) as src:
        expected = [detect_tiled(detector, frame.image, 64) for frame in src]
    assert same_detections(got, expected) and sum(len(d) for d in got) > 0


def test_cli_video_tile(tmp_path, tiny_ckpt):
    import cv2

    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 90))
    for i in range(3):
        writer.write(make_image(90, 160, seed=i))
    writer.release()
    res = CliRunner().invoke(build_app(), ["video", str(path), "-c", "person", "--checkpoint", str(tiny_ckpt),
                                           "--imgsz", str(TINY_IMGSZ), "--device", "cpu", "--conf", "0.1",
                                           "--tile", "64", "--save-jsonl", str(tmp_path / "d.jsonl"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "d.jsonl").read_text().splitlines()) == 3
