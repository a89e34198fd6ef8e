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


def test_a_shared_model_refuses_a_second_precision(tiny_ckpt):
    """A TorchBackend prepares the loaded modules in place, so a second backend in another precision on the same
    LoadedSam3 would change the first one's weights, and a copy of weights already narrowed would compute fp32 on
    bf16-rounded values: both are refused with a clear message. A backend in the same precision shares the model;
    a copy of fp32 weights, or one taken before the first backend, runs apart."""
    import copy

    from dart.errors import InputError
    from dart.models.loading import load_sam3
    from tests.tiny import TINY_IMGSZ

    loaded = load_sam3(tiny_ckpt, imgsz=TINY_IMGSZ)
    spare = copy.deepcopy(loaded)
    bf16 = TorchBackend(loaded, device="cpu", precision="bf16")
    assert loaded.prepared_for[1:] == ("cpu", "bfloat16")
    TorchBackend(loaded, device="cpu", precision="bf16")  # the same precision: shared
    with pytest.raises(InputError, match=r"already runs in a backend as bfloat16 on cpu.*load it again"):
        TorchBackend(loaded, device="cpu", precision="fp32")
    with pytest.raises(InputError, match=r"copy of a SAM3 model was taken after a backend rounded its weights"):
        TorchBackend(copy.deepcopy(loaded), device="cpu", precision="fp32")
    fp32 = TorchBackend(spare, device="cpu", precision="fp32")  # copied before: its own fp32 weights
    weight = next(m.weight for m in fp32.backbone_stage.modules() if isinstance(m, torch.nn.Linear))
    assert weight.dtype == torch.float32 and bf16.precision == "bf16"
    assert TorchBackend(copy.deepcopy(spare), device="cpu", precision="bf16").precision == "bf16"  # fp32 copies run


def test_precision_compare_copies_before_narrowing(tiny_ckpt):
    """`dart precision compare torch:bf16 torch:fp32`: the fp32 run gets the checkpoint's own fp32 weights, not a
    copy of weights the bf16 run already narrowed."""
    from dart.models.loading import load_sam3
    from dart.precision import RunSpec, make_backends
    from tests.tiny import TINY_IMGSZ

    loaded = load_sam3(tiny_ckpt, imgsz=TINY_IMGSZ)
    fresh = load_sam3(tiny_ckpt, imgsz=TINY_IMGSZ)
    bf16, fp32 = make_backends([RunSpec.parse("torch:bf16"), RunSpec.parse("torch:fp32")], loaded, "cpu")
    assert (bf16.precision, fp32.precision) == ("bf16", "fp32")
    ours = dict(fp32.backbone_stage.named_parameters())
    reference = dict(fresh.backbone_stage().named_parameters())
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[name], reference[name]) for name in ours)
