"""Auto-labelling outputs: YOLO labels parse back to the detections (boxes, and mask outlines that redraw the
masks), the COCO dataset file loads in pycocotools and scores its own boxes as perfect, and `dart detect
--save-txt --save-coco` writes them for every image."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from typer.testing import CliRunner

from dart.cli import build_app
from dart.detections import Detections
from dart.labels import CocoDataset, mask_polygon, write_yolo_labels, yolo_rows
from tests.conftest import make_image
from tests.tiny import TINY_IMGSZ

SIZE = (60, 80)  # height, width


def sample() -> Detections:
    masks = np.zeros((3, *SIZE), bool)
    masks[0, 10:30, 5:25] = True  # a rectangle
    cv2.circle(masks[1].view(np.uint8), (55, 35), 12, 1, -1)  # a disc
    masks[1] = masks[1].view(np.uint8) > 0
    return Detections(xyxy=[[5, 10, 25, 30], [43, 23, 68, 48], [70, 50, 90, 70]], scores=[0.9, 0.8, 0.3],
                      class_ids=[0, 1, 1], class_names=["person", "car", "car"], masks=masks, image_size=SIZE)


def parse(rows: list[str]) -> list[list[float]]:
    return [[float(v) for v in row.split()] for row in rows]


def test_yolo_boxes_parse_back_to_the_detections():
    dets = sample()
    rows = parse(yolo_rows(dets, SIZE))
    height, width = SIZE
    for det, row in zip(range(3), rows):
        cls, cx, cy, w, h = row
        assert cls == dets.class_ids[det] and 0 <= min(cx, cy, w, h) and max(cx, cy, w, h) <= 1
        back = [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
        expected = np.clip(dets.xyxy[det], 0, [width, height, width, height])  # the third box leaves the image
        np.testing.assert_allclose(back, expected, atol=1e-4)
    with_conf = parse(yolo_rows(dets, SIZE, with_conf=True))
    assert [r[-1] for r in with_conf] == pytest.approx([0.9, 0.8, 0.3]) and len(with_conf[0]) == 6


def test_yolo_segments_redraw_the_masks():
    dets = sample()
    rows = parse(yolo_rows(dets, SIZE, segments=True))
    height, width = SIZE
    for i in range(2):
        cls, *xy = rows[i]
        points = (np.array(xy).reshape(-1, 2) * [width, height]).round().astype(np.int32)
        drawn = np.zeros(SIZE, np.uint8)
        cv2.fillPoly(drawn, [points], 1)
        inter = np.logical_and(drawn > 0, dets.masks[i]).sum()
        union = np.logical_or(drawn > 0, dets.masks[i]).sum()
        assert cls == dets.class_ids[i] and inter / union > 0.9, i
    assert len(rows[2]) == 1 + 8  # empty mask: the (clipped) box as a 4-point outline
    assert len(mask_polygon(np.zeros(SIZE, bool))) == 0


def test_yolo_file_and_background_image(tmp_path):
    write_yolo_labels(tmp_path / "a.txt", sample(), SIZE)
    write_yolo_labels(tmp_path / "b.txt", Detections.empty(SIZE), SIZE)
    assert len((tmp_path / "a.txt").read_text().splitlines()) == 3
    assert (tmp_path / "b.txt").read_text() == ""  # an image with nothing in it is still a labelled image


def test_coco_dataset_loads_and_scores_itself_perfect(tmp_path):
    dataset = CocoDataset(["person", "car"])
    dets = sample()[[0, 1]]  # (pycocotools gives an empty mask no overlap with itself, so leave the third out)
    dataset.add("a.jpg", SIZE, dets)
    dataset.add("sub/b.jpg", SIZE, dets[[1]])
    dataset.write(tmp_path / "instances.json")
    gt = COCO(str(tmp_path / "instances.json"))
    assert [c["name"] for c in gt.loadCats(gt.getCatIds())] == ["person", "car"]
    assert len(gt.getAnnIds(imgIds=[1])) == 2 and gt.loadImgs([2])[0]["file_name"] == "sub/b.jpg"
    ann = gt.loadAnns(gt.getAnnIds(imgIds=[1], catIds=[2]))[0]
    assert ann["area"] == int(dets.masks[1].sum())  # the mask's pixels
    assert np.array_equal(gt.annToMask(ann).astype(bool), dets.masks[1])
    results = [dict(a, score=a["score"]) for a in gt.dataset["annotations"]]
    for kind in ("bbox", "segm"):
        evaluator = COCOeval(gt, gt.loadRes(results), kind)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        assert evaluator.stats[0] == pytest.approx(1.0), kind


def test_detect_save_txt_and_coco(tmp_path, tiny_ckpt):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"im{i}.png"), make_image(seed=i))
    out = tmp_path / "out"
    args = ["detect", str(folder), "-c", "person", "car", "--checkpoint", str(tiny_ckpt), "--imgsz", str(TINY_IMGSZ),
            "--device", "cpu", "--conf", "0.1", "-o", str(out), "--no-save-image"]
    res = CliRunner().invoke(build_app(), [*args, "--save-txt", "--save-conf", "--save-coco"])
    assert res.exit_code == 0, res.output
    assert (out / "labels" / "classes.txt").read_text() == "person\ncar\n"
    coco = json.loads((out / "instances.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["im0.png", "im1.png"]
    for i in range(2):
        rows = json.loads((out / f"im{i}.json").read_text())["detections"]
        labels = parse((out / "labels" / f"im{i}.txt").read_text().splitlines())
        assert len(labels) == len(rows) == sum(a["image_id"] == i + 1 for a in coco["annotations"])
        assert [int(r[0]) for r in labels] == [r["class_id"] for r in rows]
        assert [r[-1] for r in labels] == pytest.approx([r["score"] for r in rows], abs=1e-4)
    assert coco["annotations"], "the tiny model yields detections at conf 0.1"
    res = CliRunner().invoke(build_app(), [*args, "--save-conf"])
    assert res.exit_code == 2 and "--save-txt" in res.output
