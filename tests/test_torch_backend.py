"""The torch backend's compile helpers: class buckets (the text padded to a few fixed class counts, the outputs cut
back) change no number, so a compiled encoder-decoder can be traced for fixed shapes and never recompile."""

from __future__ import annotations

import pytest
import torch

from dart.backends.torch_backend import CLASS_BUCKETS, TorchBackend, class_bucket, pad_classes
from dart.detector import Detector
from tests.conftest import make_image


@pytest.mark.parametrize(("count", "bucket"), [(1, 1), (2, 2), (3, 4), (5, 8), (9, 16), (16, 16), (17, 32),
                                                (80, 80), (81, 96)])
def test_class_bucket(count, bucket):
    assert class_bucket(count) == bucket
    assert class_bucket(count) >= count


def test_pad_classes_repeats_the_first_class():
    text, mask = torch.randn(3, 5, 4), torch.tensor([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]]).bool()
    padded, padded_mask = pad_classes(text, mask, 8)
    assert padded.shape == (8, 5, 4) and padded_mask.shape == (8, 5)
    assert torch.equal(padded[:3], text) and torch.equal(padded[3:], text[:1].expand(5, -1, -1))
    assert torch.equal(padded_mask[3:], mask[:1].expand(5, -1))
    assert pad_classes(text, mask, 3)[0] is text


@pytest.fixture(scope="module")
def pair(tiny_loaded):
    plain = TorchBackend(tiny_loaded, device="cpu", class_buckets=False)
    bucketed = TorchBackend(tiny_loaded, device="cpu", class_buckets=True)
    return plain, bucketed


@pytest.mark.parametrize("classes", [1, 3, 5])
def test_bucketed_encdec_equals_unpadded(pair, classes):
    plain, bucketed = pair
    pixels = torch.randn(2, 3, plain.imgsz, plain.imgsz)
    features = plain.backbone(pixels)
    text, mask = plain.encode_text(["person", "car", "dog", "red bicycle", "a cat"][:classes])
    want = plain.encdec(features, text, mask, return_state=True)
    got = bucketed.encdec(features, text, mask, return_state=True)
    assert set(got) == set(want)
    for key in want:
        assert got[key].shape == want[key].shape, key
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-5, msg=key)


def test_bucketed_detector_with_masks_equals_plain(pair):
    plain, bucketed = pair
    names = ["person", "car", "dog"]
    image = make_image(120, 160)
    want = Detector(plain, names, conf=0.0, masks=True, max_classes_per_batch=2).detect(image)
    got = Detector(bucketed, names, conf=0.0, masks=True, max_classes_per_batch=2).detect(image)
    assert len(got) == len(want) > 0
    torch.testing.assert_close(torch.as_tensor(got.xyxy), torch.as_tensor(want.xyxy), rtol=1e-4, atol=1e-3)
    assert (got.class_ids == want.class_ids).all()
    assert (got.masks == want.masks).mean() > 0.999


def test_compiled_backend_uses_buckets_and_static_shapes(tiny_loaded):
    backend = TorchBackend(tiny_loaded, device="cpu", compile="reduce-overhead")
    assert backend.class_buckets and backend._copy_outputs
    assert TorchBackend(tiny_loaded, device="cpu").class_buckets is False
    assert CLASS_BUCKETS[-1] == 16  # the detector's default chunk: 80 classes run as five 16-class calls


def test_each_stage_traces_as_one_graph(tiny_loaded):
    """``torch.compile`` sees each stage whole: no graph break (``transformers``' decoder read its box-RPB grid's
    size back from a tensor in every layer, a graph break and a device sync each; dart's decoder loop takes ints), so
    ``reduce-overhead`` can capture one CUDA graph per stage and class bucket."""
    import torch._dynamo

    backend = TorchBackend(tiny_loaded, device="cpu", class_buckets=True)
    pixels = torch.randn(1, 3, backend.imgsz, backend.imgsz)
    features = backend.backbone(pixels)
    text, mask = backend.encode_text(["person", "car", "dog", "a cat"])
    with torch.inference_mode():
        for stage, args in ((backend.backbone_stage, (pixels,)), (backend.encdec_stage, (*features, text, mask))):
            explained = torch._dynamo.explain(stage)(*args)
            assert explained.graph_break_count == 0, [str(r.reason) for r in explained.break_reasons]
            assert explained.graph_count == 1
