"""The batched multi-class path equals N single-class ``Sam3Model.forward`` calls on the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dart.detector import Detector
from dart.postprocess import PostprocessConfig, select
from dart.preprocess import preprocess, to_rgb
from tests.conftest import make_image

CLASSES = ["person", "car", "dog", "traffic light", "red bus"]


@pytest.fixture(scope="module")
def reference(tiny_loaded, tiny_backend):
    """Per-class outputs of transformers' own Sam3Model.forward, one class at a time, with an all-padding box
    prompt (label -10): that makes transformers add the geometry CLS token, as Meta's SAM3 always does."""
    model = tiny_loaded.model
    image = to_rgb(make_image(90, 160))
    pixels = preprocess([image], tiny_backend.imgsz)
    input_ids, attention_mask = tiny_backend.tokenize(CLASSES)
    outs = []
    with torch.inference_mode():
        for c in range(len(CLASSES)):
            outs.append(model(pixel_values=pixels, input_ids=input_ids[c:c + 1], attention_mask=attention_mask[c:c + 1],
                              input_boxes=torch.zeros(1, 1, 4), input_boxes_labels=torch.tensor([[-10]])))
    return image, pixels, outs


def test_batched_encdec_equals_per_class_forward(tiny_backend, reference):
    _, pixels, outs = reference
    features = tiny_backend.backbone(pixels)
    text, mask = tiny_backend.encode_text(CLASSES)
    got = tiny_backend.encdec(features, text, mask, return_state=True)
    for c, ref in enumerate(outs):
        torch.testing.assert_close(got["logits"][0, c], ref.pred_logits[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got["boxes"][0, c], ref.pred_boxes[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got["presence"][0, c], ref.presence_logits[0, 0], atol=1e-5, rtol=1e-4)
    pairs = torch.tensor([[0, c] for c in range(len(CLASSES))])
    masks = tiny_backend.masks(features, got, text, mask, pairs)
    for c, ref in enumerate(outs):
        torch.testing.assert_close(masks[c], ref.pred_masks[0], atol=1e-4, rtol=1e-4)


def test_backbone_equals_sam3_vision_encoder(tiny_loaded, tiny_backend, reference):
    _, pixels, _ = reference
    with torch.inference_mode():
        ref = tiny_loaded.model.vision_encoder(pixels).fpn_hidden_states
    got = tiny_backend.backbone(pixels)
    assert len(got) == 3
    for level in range(3):
        torch.testing.assert_close(got[level], ref[level], atol=1e-5, rtol=1e-4)
    fpn_4x, fpn_2x, fpn_1x = tiny_backend.backbone(pixels, masks=False)  # detection alone: the 1x level, the same
    assert fpn_4x is None and fpn_2x is None and torch.equal(fpn_1x, got[2])


def test_the_detector_skips_the_mask_levels_only_without_masks(tiny_backend, monkeypatch):
    """Without masks the detector asks the backend for the 1x level alone (the test above proves it the same), with
    masks for all three; both give the same boxes."""
    asked = []
    backbone = tiny_backend.backbone
    monkeypatch.setattr(tiny_backend, "backbone",
                        lambda pixels, masks=True: asked.append(masks) or backbone(pixels, masks))
    image = make_image(90, 160)
    plain = Detector(tiny_backend, CLASSES, conf=0.2).detect(image)
    with_masks = Detector(tiny_backend, CLASSES, conf=0.2, masks=True).detect(image)
    assert asked == [False, True] and len(plain) > 0 and with_masks.masks is not None
    np.testing.assert_array_equal(plain.xyxy, with_masks.xyxy)
    np.testing.assert_array_equal(plain.scores, with_masks.scores)


@pytest.mark.parametrize("chunk", [1, 2, 16])
def test_detector_equals_per_class_postprocessing(tiny_backend, reference, chunk):
    """Detections from the chunked detector = post-processing applied to the reference outputs."""
    image, _, outs = reference
    det = Detector(tiny_backend, CLASSES, conf=0.2, max_classes_per_batch=chunk)
    got = det.detect(image[:, :, ::-1].copy())  # detector takes BGR arrays
    logits = torch.stack([o.pred_logits[0] for o in outs])
    boxes = torch.stack([o.pred_boxes[0] for o in outs])
    presence = torch.stack([o.presence_logits[0, 0] for o in outs])
    sel = select(logits, boxes, presence, PostprocessConfig(conf=0.2))
    assert len(got) == len(sel.scores) > 0
    np.testing.assert_array_equal(got.class_ids, sel.class_ids.numpy())
    np.testing.assert_allclose(got.scores, sel.scores.numpy(), atol=1e-5)
    scale = np.array([160, 90, 160, 90], dtype=np.float32)
    np.testing.assert_allclose(got.xyxy, np.clip(sel.boxes.numpy() * scale, 0, scale), atol=1e-3)


def test_detect_batch_equals_single_images(tiny_backend):
    det = Detector(tiny_backend, CLASSES, conf=0.2, masks=True)
    images = [make_image(90, 160, seed=1), make_image(120, 80, seed=2)]
    batched = det.detect_batch(images)
    for image, b in zip(images, batched):
        single = det.detect(image)
        np.testing.assert_array_equal(b.class_ids, single.class_ids)
        np.testing.assert_allclose(b.scores, single.scores, atol=1e-5)
        np.testing.assert_allclose(b.xyxy, single.xyxy, atol=1e-3)
        assert b.masks.shape == (len(b), *image.shape[:2])
        assert (b.masks == single.masks).mean() > 0.999
    called = det(images)  # the call form: a list is one batch, one image gives one Detections
    assert all(np.array_equal(c.xyxy, b.xyxy) for c, b in zip(called, batched))
    assert np.array_equal(det(images[0]).xyxy, det.detect(images[0]).xyxy)


def test_masks_match_reference_upsampled(tiny_backend, reference):
    image, _, outs = reference
    det = Detector(tiny_backend, CLASSES, conf=0.2, masks=True)
    got = det.detect(image[:, :, ::-1].copy())
    assert got.masks is not None and len(got) > 0
    # Top detection's mask equals the reference mask logits of that (class, query), upsampled and thresholded.
    from dart.postprocess import upsample_masks

    logits = torch.stack([o.pred_logits[0] for o in outs])
    boxes = torch.stack([o.pred_boxes[0] for o in outs])
    presence = torch.stack([o.presence_logits[0, 0] for o in outs])
    sel = select(logits, boxes, presence, PostprocessConfig(conf=0.2))
    c, q = int(sel.class_ids[0]), int(sel.query_ids[0])
    expected = upsample_masks(outs[c].pred_masks[0, q][None], 90, 160)[0].numpy()
    assert (got.masks[0] == expected).mean() > 0.999


def test_geometry_token_matters(tiny_loaded, tiny_backend, reference):
    """Without the geometry CLS token (transformers' text-only forward) the outputs differ: the equivalence
    above would fail if the stage dropped it."""
    _, pixels, outs = reference
    input_ids, attention_mask = tiny_backend.tokenize(CLASSES[:1])
    with torch.inference_mode():
        text_only = tiny_loaded.model(pixel_values=pixels, input_ids=input_ids, attention_mask=attention_mask)
    assert not torch.allclose(text_only.pred_logits, outs[0].pred_logits, atol=1e-4)


def test_dart_prompt_mode_equals_text_only_forward(tiny_loaded, reference):
    """``prompt_mode="dart"`` (the DART research code: text tokens only) equals transformers' own text-only
    ``Sam3Model.forward``, one class at a time; the default "meta" mode does not (it adds the geometry token)."""
    from dart.backends.torch_backend import TorchBackend

    _, pixels, meta_outs = reference
    backend = TorchBackend(tiny_loaded, device="cpu", prompt_mode="dart")
    input_ids, attention_mask = backend.tokenize(CLASSES)
    with torch.inference_mode():
        refs = [tiny_loaded.model(pixel_values=pixels, input_ids=input_ids[c:c + 1],
                                  attention_mask=attention_mask[c:c + 1]) for c in range(len(CLASSES))]
    features = backend.backbone(pixels)
    text, mask = backend.encode_text(CLASSES)
    got = backend.encdec(features, text, mask, return_state=True)
    for c, ref in enumerate(refs):
        torch.testing.assert_close(got["logits"][0, c], ref.pred_logits[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got["boxes"][0, c], ref.pred_boxes[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got["presence"][0, c], ref.presence_logits[0, 0], atol=1e-5, rtol=1e-4)
        assert not torch.allclose(got["logits"][0, c], meta_outs[c].pred_logits[0], atol=1e-4)
    pairs = torch.tensor([[0, c] for c in range(len(CLASSES))])
    masks = backend.masks(features, got, text, mask, pairs)
    for c, ref in enumerate(refs):
        torch.testing.assert_close(masks[c], ref.pred_masks[0], atol=1e-4, rtol=1e-4)


def test_presence_logits_are_not_clamped_like_meta(tiny_loaded, tiny_backend, reference):
    """Meta's decoder computes presence.clamp(-10, 10) but never assigns it; transformers clamps. dart follows
    Meta: a presence head pushed far out gives logits beyond +-10."""
    _, pixels, _ = reference
    head = tiny_loaded.model.detr_decoder.presence_head.layer3
    saved = head.bias.detach().clone()
    try:
        with torch.no_grad():
            head.bias.fill_(40.0)
        features = tiny_backend.backbone(pixels)
        text, mask = tiny_backend.encode_text(CLASSES[:2])
        presence = tiny_backend.encdec(features, text, mask)["presence"]
        assert presence.min() > 10.0
    finally:
        with torch.no_grad():
            head.bias.copy_(saved)


def test_vit_layer_norms_use_metas_eps_whatever_the_config_says(tiny_loaded):
    from torch import nn

    from dart.models.sam3 import META_VIT_LAYER_NORM_EPS

    backbone = tiny_loaded.model.vision_encoder.backbone
    norms = [m for m in backbone.modules() if isinstance(m, nn.LayerNorm)]
    assert norms and all(m.eps == META_VIT_LAYER_NORM_EPS == 1e-5 for m in norms)
    assert tiny_loaded.model.config.vision_config.backbone_config.layer_norm_eps == 1e-5
