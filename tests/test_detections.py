"""Detections: indexing, JSON round trip (masks as RLE), COCO and MOT rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dart.detections import Detections


def sample(with_masks=True, with_tracks=False):
    masks = np.zeros((2, 20, 30), dtype=bool)
    masks[0, 2:8, 3:9] = True
    masks[1, 10:19, 5:25] = True
    return Detections(
        xyxy=[[3, 2, 9, 8], [5, 10, 25, 19]], scores=[0.9, 0.4], class_ids=[1, 0], class_names=["car", "person"],
        masks=masks if with_masks else None, track_ids=[7, 8] if with_tracks else None, image_size=(20, 30))


def test_json_round_trip_with_masks_and_tracks():
    dets = sample(with_tracks=True)
    rows = json.loads(json.dumps(dets.to_json()))
    assert rows[0]["class_name"] == "car" and rows[0]["track_id"] == 7 and rows[0]["mask"]["size"] == [20, 30]
    back = Detections.from_json(rows, image_size=(20, 30))
    np.testing.assert_allclose(back.xyxy, dets.xyxy)
    assert back.class_names.tolist() == ["car", "person"]
    assert np.array_equal(back.masks, dets.masks)
    assert back.track_ids.tolist() == [7, 8]


def test_indexing_and_sorting():
    dets = sample()
    assert len(dets[0]) == 1 and dets[0].class_names[0] == "car"
    assert len(dets[dets.scores > 0.5]) == 1
    assert dets[[1, 0]].sorted().scores.tolist() == pytest.approx([0.9, 0.4])
    assert len(Detections.empty((5, 5))) == 0


def test_coco_rows_use_xywh_and_category_map():
    rows = sample(with_masks=False).to_coco(image_id=42, category_ids={0: 1, 1: 3})
    assert rows[0] == {"image_id": 42, "category_id": 3, "bbox": [3.0, 2.0, 6.0, 6.0], "score": 0.9}


def test_mot_rows_need_tracks():
    with pytest.raises(ValueError, match="track ids"):
        sample().to_mot(1)
    rows = sample(with_tracks=True).to_mot(5)
    assert rows[0] == "5,7,3.00,2.00,6.00,6.00,0.9000,1,-1,-1"


def test_merge():
    merged = Detections.merge([sample(), sample()])
    assert len(merged) == 4 and merged.masks.shape == (4, 20, 30)


def test_supervision_round_trip_and_its_own_operations():
    """to_supervision gives a supervision.Detections that supervision's filters, areas and annotators accept, and
    from_supervision brings it back unchanged (dev extra: supervision)."""
    import supervision as sv

    dets = sample(with_tracks=True)
    out = dets.to_supervision()
    assert isinstance(out, sv.Detections) and len(out) == 2
    np.testing.assert_allclose(out.area, dets.area)
    assert out.data["class_name"].tolist() == ["car", "person"] and out.tracker_id.tolist() == [7, 8]
    kept = out[out.confidence > 0.5]  # supervision's own boolean filter
    back = Detections.from_supervision(kept, image_size=(20, 30))
    ref = dets[dets.scores > 0.5]
    np.testing.assert_allclose(back.xyxy, ref.xyxy)
    assert back.class_names.tolist() == ["car"] and back.track_ids.tolist() == [7]
    assert np.array_equal(back.masks, ref.masks) and back.scores.tolist() == ref.scores.tolist()
    image = np.zeros((20, 30, 3), np.uint8)
    drawn = sv.BoxAnnotator(thickness=1).annotate(image.copy(), out)
    assert drawn[2, 3:9].any() and not drawn[0, 0].any()  # the car's top edge is drawn, the corner is not
    labels = sv.LabelAnnotator(text_scale=0.2).annotate(image.copy(), out)  # reads data["class_name"]
    assert labels.any()


def test_from_supervision_without_names_needs_the_class_list():
    import supervision as sv

    plain = sv.Detections(xyxy=np.array([[0, 0, 4, 4]], np.float32), class_id=np.array([1]))
    with pytest.raises(ValueError, match="class_names"):
        Detections.from_supervision(plain)
    back = Detections.from_supervision(plain, class_names=["person", "car"])
    assert back.class_names.tolist() == ["car"] and back.scores.tolist() == [1.0] and back.masks is None
    empty = Detections.from_supervision(sv.Detections.empty())
    assert len(empty) == 0


def test_indexing_keeps_per_detection_extras():
    dets = sample(with_tracks=True)
    dets.extra.update(det_scores=np.array([0.8, 0.3]), note="tracker output")
    picked = dets[dets.scores < 0.5]
    assert picked.extra["det_scores"].tolist() == [0.3] and picked.extra["note"] == "tracker output"
