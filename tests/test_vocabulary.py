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
