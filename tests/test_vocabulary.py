"""Classes with prompts ("vehicle=car|truck"): parsing, and detections equal to running every prompt as its own
class and merging each class's prompts with torchvision's NMS."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms
from typer.testing import CliRunner

from dart.classes import parse_vocabulary, resolve_classes
from dart.cli import build_app
from dart.detector import Detector
from dart.errors import InputError
from tests.conftest import make_image
from tests.tiny import TINY_IMGSZ


def test_entries_and_mappings_parse_to_the_same_vocabulary():
    vocab = parse_vocabulary(["vehicle=car|truck |bus", " person ", ""])
    assert vocab.names == ["vehicle", "person"] and vocab.prompts == ["car", "truck", "bus", "person"]
    assert vocab.prompt_class == [0, 0, 0, 1] and not vocab.plain
    assert parse_vocabulary({"vehicle": ["car", "truck", "bus"], "person": "person"}) == vocab
    assert parse_vocabulary(["person", "car"]).plain


@pytest.mark.parametrize("entries, message", [
    (["vehicle="], "class 'vehicle' has no prompts"),
    (["=car", "person"], "no class name"),
    (["a=car", "b=car"], "'car' is given for both 'a' and 'b'"),
    (["a=car|car"], "'car' is given twice"),
    (["car", "vehicle=car"], "'car' is given for both"),
    (["a", "a=b"], "listed twice"),
])
def test_bad_entries_are_one_sentence(entries, message):
    with pytest.raises(InputError, match=message):
        parse_vocabulary(entries)


def test_bad_entries_are_refused_before_a_model_is_loaded():
    assert resolve_classes(["vehicle=car|truck", "person,dog"]) == ["vehicle=car|truck", "person", "dog"]
    with pytest.raises(InputError, match="no prompts"):
        resolve_classes(["vehicle="])


@pytest.mark.parametrize("masks", [False, True])
def test_prompts_equal_each_prompt_as_a_class_merged_by_nms(tiny_backend, masks):
    prompts = ["car", "truck", "person", "dog"]
    plain = Detector(tiny_backend, prompts, conf=0.1, nms=None, masks=masks, max_classes_per_batch=3)
    grouped = Detector(tiny_backend, ["vehicle=car|truck", "animal=person|dog"], conf=0.1, nms=0.5, masks=masks,
                       max_classes_per_batch=3)
    assert grouped.classes == ["vehicle", "animal"] and grouped.prompts == prompts
    groups = torch.tensor([0, 0, 1, 1])
    image = make_image(seed=4)
    raw, got = plain.detect(image), grouped.detect(image)
    assert len(raw) > len(got) > 0, "NMS merged overlapping boxes of one class's prompts"
    keep = batched_nms(torch.from_numpy(raw.xyxy), torch.from_numpy(raw.scores), groups[raw.class_ids], 0.5)
    keep = keep[torch.argsort(torch.from_numpy(raw.scores)[keep], descending=True, stable=True)].numpy()
    np.testing.assert_allclose(got.xyxy, raw.xyxy[keep], atol=1e-3)
    np.testing.assert_allclose(got.scores, raw.scores[keep], atol=1e-6)
    assert got.class_ids.tolist() == groups[raw.class_ids[keep]].tolist()
    assert got.class_names.tolist() == [["vehicle", "animal"][c] for c in got.class_ids]
    if masks:
        assert np.array_equal(got.masks, raw.masks[keep])
    assert set(prompts) <= set(grouped.text_cache.entries)  # the text encoder read the prompts, not the names


def test_cli_reports_the_class_names(tmp_path, tiny_ckpt, image_file):
    out = tmp_path / "out"
    args = ["detect", str(image_file), "-c", "vehicle=car|truck", "person", "--checkpoint", str(tiny_ckpt),
            "--imgsz", str(TINY_IMGSZ), "--device", "cpu", "--conf", "0.1", "-o", str(out)]
    res = CliRunner().invoke(build_app(), args)
    assert res.exit_code == 0, res.output
    data = json.loads((out / "street.json").read_text())
    assert data["classes"] == ["vehicle", "person"] and data["detections"]
    assert {row["class_name"] for row in data["detections"]} <= {"vehicle", "person"}
    res = CliRunner().invoke(build_app(), [*args[:3], "vehicle=car", "bus=car", *args[5:]])
    assert res.exit_code == 2 and "given for both" in res.output


@pytest.mark.parametrize("masks", [False, True])
def test_class_thresholds_equal_filtering_the_low_threshold_run(tiny_backend, masks):
    """A class threshold above --conf removes exactly that class's boxes at or below it (NMS off, so every one
    of the many query boxes counts); prompts of a class share its threshold."""
    classes = ["vehicle=car|truck", "person", "dog"]
    low = Detector(tiny_backend, classes, conf=0.1, nms=None, masks=masks).detect(make_image(seed=4))
    cut = float(np.median(low.scores[low.class_names == "vehicle"]))
    strict = Detector(tiny_backend, classes, conf=0.1, nms=None, class_conf={"vehicle": cut, "dog": 1.0},
                      masks=masks)
    got = strict.detect(make_image(seed=4))
    keep = ((low.class_names == "person") | ((low.class_names == "vehicle") & (low.scores > cut)))
    assert 0 < len(got) < len(low) and "dog" not in got.class_names and "vehicle" in got.class_names
    np.testing.assert_allclose(got.xyxy, low.xyxy[keep], atol=1e-4)
    assert got.class_names.tolist() == low.class_names[keep].tolist()
    if masks:
        assert np.array_equal(got.masks, low.masks[keep])


def test_class_threshold_errors(tiny_backend):
    from dart.classes import parse_class_conf

    assert parse_class_conf("person=0.5, traffic light=0.25") == {"person": 0.5, "traffic light": 0.25}
    for bad in ("person", "person=1.5", "=0.3", "person=high"):
        with pytest.raises(InputError, match="NAME=THRESHOLD"):
            parse_class_conf(bad)
    with pytest.raises(InputError, match="'cat', which is not one of the classes"):
        parse_class_conf("cat=0.5", ["person", "vehicle=car|truck"])
    with pytest.raises(InputError, match="'cat', which is not one of the classes"):
        Detector(tiny_backend, ["person"], class_conf={"cat": 0.5})
    with pytest.raises(InputError, match="between 0 and 1"):
        Detector(tiny_backend, ["person"], class_conf={"person": 2.0})


def test_cli_class_conf(tmp_path, tiny_ckpt, image_file):
    out = tmp_path / "out"
    args = ["detect", str(image_file), "-c", "person", "car", "--checkpoint", str(tiny_ckpt), "--imgsz",
            str(TINY_IMGSZ), "--device", "cpu", "--conf", "0.1", "-o", str(out)]
    res = CliRunner().invoke(build_app(), [*args, "--class-conf", "car=1.0"])
    assert res.exit_code == 0, res.output
    names = {row["class_name"] for row in json.loads((out / "street.json").read_text())["detections"]}
    assert names == {"person"}
    res = CliRunner().invoke(build_app(), [*args, "--class-conf", "bus=0.5"])
    assert res.exit_code == 2 and "not one of the classes" in res.output
