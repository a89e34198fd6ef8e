"""dart computes what Meta's SAM3 computes: the same weights (Meta's model, saved as ``sam3.pt`` and loaded by dart
through its key map) give the same image features, text features, logits, boxes, presence, masks and final
detections as Meta's own code (``Sam3Image``, ``Sam3Processor``) to float32 noise.

Meta's builder hard-codes SAM3's full size; :mod:`tests.meta_reference` runs it with every module made small (the
same architecture, fewer and narrower layers), so this runs in CI in seconds. Without the ``sam3`` package (it is
in the dev extra) the module is skipped with that reason.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("sam3", reason="Meta's sam3 package (in the dev extra) is the reference")

from dart.backends.torch_backend import TorchBackend  # noqa: E402
from dart.detector import Detector  # noqa: E402
from dart.models.loading import load_sam3  # noqa: E402
from dart.models.tokenizer import installed_bpe_vocab  # noqa: E402
from dart.preprocess import preprocess, to_rgb  # noqa: E402
from tests.conftest import make_image  # noqa: E402
from tests.meta_reference import (IMGSZ, build_meta_model, cpu_fallbacks, match_detections,  # noqa: E402
                                  save_as_sam3_pt)

CLASSES = ["person", "car", "a red bus", "traffic light", "dog"]
NOISE = 1e-5  # float32 noise, relative to the largest value compared


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference relative to the largest magnitude."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.fixture(scope="module")
def meta(tmp_path_factory):
    """Meta's model, dart's load of the same weights, an image, and Meta's per-prompt outputs."""
    from PIL import Image

    from sam3.model.sam3_image_processor import Sam3Processor

    bpe = installed_bpe_vocab()
    model = build_meta_model(bpe)
    checkpoint = save_as_sam3_pt(model, tmp_path_factory.mktemp("meta_small"))
    loaded = load_sam3(checkpoint, imgsz=IMGSZ, tokenizer=bpe)
    image = make_image(90, 160, seed=4)  # BGR
    with cpu_fallbacks():
        processor = Sam3Processor(model, resolution=IMGSZ, device="cpu", confidence_threshold=0.0)
        state = processor.set_image(Image.fromarray(image[:, :, ::-1].copy()))
        fpn = [level.clone() for level in state["backbone_out"]["backbone_fpn"]]
        outputs = []
        for name in CLASSES:
            state = processor.set_text_prompt(name, state)
            with torch.inference_mode():
                outputs.append(model.forward_grounding(backbone_out=state["backbone_out"],
                                                       find_input=processor.find_stage,
                                                       geometric_prompt=state["geometric_prompt"], find_target=None))
    return {"model": model, "loaded": loaded, "image": image, "processor": processor, "fpn": fpn,
            "outputs": outputs, "backend": TorchBackend(loaded, device="cpu")}


@pytest.fixture(scope="module")
def dart_heads(meta):
    backend = meta["backend"]
    pixels = preprocess([to_rgb(meta["image"])], IMGSZ)
    features = backend.backbone(pixels)
    text, mask = backend.encode_text(CLASSES)
    heads = backend.encdec(features, text, mask, return_state=True)
    pairs = torch.tensor([[0, c] for c in range(len(CLASSES))])
    masks = backend.masks(features, heads, text, mask, pairs)
    return features, text, mask, heads, masks


def test_the_meta_checkpoint_is_every_weight_dart_loads(meta):
    """dart's strict load of the ``sam3.pt`` holds exactly Meta's tensors, renamed by the key map."""
    from dart.models.meta_keymap import convert_meta_state_dict

    converted = convert_meta_state_dict(meta["model"].state_dict())
    mine = meta["loaded"].model.state_dict()
    weights = {k for k in mine if not k.endswith(("position_ids", "num_batches_tracked"))}
    assert weights <= set(converted)
    for key in weights:
        assert torch.equal(mine[key], converted[key]), key


def test_image_features_equal_metas(meta, dart_heads):
    features = dart_heads[0]
    assert len(features) == len(meta["fpn"]) == 3
    for got, expected in zip(features, meta["fpn"]):
        assert got.shape == expected.shape
        assert rel(got, expected) < NOISE


def test_text_features_equal_metas(meta, dart_heads):
    _, text, mask, _, _ = dart_heads
    with torch.inference_mode():
        reference = meta["model"].backbone.forward_text(CLASSES, device="cpu")
    expected = reference["language_features"].transpose(0, 1)  # Meta: sequence first
    assert torch.equal(~reference["language_mask"], mask)  # Meta's mask marks the padding
    assert rel(text[mask], expected[mask]) < NOISE  # padding positions are masked everywhere downstream


def test_logits_boxes_presence_and_masks_equal_metas(meta, dart_heads):
    from dart.stages import box_cxcywh_to_xyxy

    _, _, _, heads, masks = dart_heads
    for c, out in enumerate(meta["outputs"]):
        assert rel(heads["logits"][0, c], out["pred_logits"][0, :, 0]) < NOISE, CLASSES[c]
        assert rel(heads["boxes"][0, c], box_cxcywh_to_xyxy(out["pred_boxes"][0])) < NOISE, CLASSES[c]
        assert abs(float(heads["presence"][0, c] - out["presence_logit_dec"].flatten()[0])) < NOISE, CLASSES[c]
        assert rel(masks[c], out["pred_masks"][0]) < NOISE, CLASSES[c]


def test_final_detections_equal_metas_processor(meta):
    """The whole path: dart's Detector (per-class NMS off, as Meta's processor has none) against
    ``Sam3Processor`` at a threshold that keeps many detections. Boxes are clipped to the image in dart (Meta leaves
    them as predicted), so Meta's are clipped before comparing; masks are Meta's bilinear logits > 0.5."""
    processor, image = meta["processor"], meta["image"]
    height, width = image.shape[:2]
    scores = []
    for out in meta["outputs"]:
        scores.append((out["pred_logits"][0, :, 0].sigmoid() * out["presence_logit_dec"].sigmoid().flatten()[0]))
    ranked = torch.cat(scores).sort().values
    middle = range(len(ranked) * 2 // 5, len(ranked) * 3 // 5)
    i = max(middle, key=lambda k: float(ranked[k + 1] - ranked[k]))  # a threshold far from every score
    assert float(ranked[i + 1] - ranked[i]) > 10 * NOISE
    threshold = float(ranked[i] + ranked[i + 1]) / 2
    detector = Detector(meta["backend"], CLASSES, conf=threshold, nms=None, max_det=1000, masks=True)
    got = detector.detect(image)
    expected = []
    with cpu_fallbacks():
        processor.set_confidence_threshold(threshold)
        from PIL import Image

        state = processor.set_image(Image.fromarray(image[:, :, ::-1].copy()))
        for c, name in enumerate(CLASSES):
            state = processor.set_text_prompt(name, state)
            for box, score, mask in zip(state["boxes"], state["scores"], state["masks"]):
                box = np.minimum(box.clamp(min=0).numpy(), [width, height, width, height])
                expected.append((c, float(score), box, mask[0].numpy()))
    assert len(got) == len(expected) >= 20
    for i, j in match_detections(got, expected):
        c, score, box, mask = expected[j]
        assert int(got.class_ids[i]) == c
        assert abs(float(got.scores[i]) - score) < NOISE
        np.testing.assert_allclose(got.xyxy[i], box, atol=1e-3)
        assert (got.masks[i] == mask).mean() > 0.999


@pytest.mark.parametrize("text, boxes, negative", [
    (None, [(20, 10, 90, 50)], []),                             # box only: Meta reads the text "visual"
    (None, [(20, 10, 90, 50), (100, 40, 150, 85)], [(5, 60, 40, 88)]),  # two positives and a negative
    ("a red bus", [(100, 40, 150, 85)], []),                    # text and a box
])
def test_exemplar_prompts_equal_metas_geometric_prompts(meta, text, boxes, negative):
    """In-image exemplars equal Meta's ``Sam3Processor.add_geometric_prompt`` (boxes added one by one to the same
    state, normalised cx, cy, w, h) followed by its grounding forward, on the same weights and image."""
    from dart.prompts import Prompt, normalized_boxes
    from dart.stages import box_cxcywh_to_xyxy

    processor, model, image = meta["processor"], meta["model"], meta["image"]
    prompt = Prompt(text=text, boxes=boxes, negative=negative)
    norm, labels = normalized_boxes(prompt, *image.shape[:2])
    with cpu_fallbacks():
        from PIL import Image

        state = processor.set_image(Image.fromarray(image[:, :, ::-1].copy()))
        if text is not None:
            state = processor.set_text_prompt(text, state)
        for box, label in zip(norm.tolist(), labels.tolist()):
            state = processor.add_geometric_prompt(box, bool(label), state)
        with torch.inference_mode():
            out = model.forward_grounding(backbone_out=state["backbone_out"], find_input=processor.find_stage,
                                          geometric_prompt=state["geometric_prompt"], find_target=None)
    detector = Detector(meta["backend"], {"x": prompt})
    pixels, sizes = detector.prepare([image])
    logits, got_boxes, presence, _ = detector.run_heads(detector.run_backbone(pixels), 1, sizes)
    assert rel(logits[0, 0], out["pred_logits"][0, :, 0]) < NOISE
    assert rel(got_boxes[0, 0], box_cxcywh_to_xyxy(out["pred_boxes"][0])) < NOISE
    assert abs(float(presence[0, 0] - out["presence_logit_dec"].flatten()[0])) < NOISE


def test_a_dart_research_text_cache_is_read_checked_and_converted(meta, tmp_path, tiny_backend):
    """A text cache saved the way the DART research code saves one (Meta's ``forward_text``: features sequence
    first, mask True on padding) is read by dart, checked against the model's text encoder, never written to, and
    converted to dart's own cache; one made by another model is refused with a sentence."""
    from dart.compat.convert import convert
    from dart.errors import CacheError
    from dart.text_cache import TextCache

    with torch.inference_mode():
        out = meta["model"].backbone.forward_text(CLASSES, device="cpu")
    path = tmp_path / "classes.pt"
    torch.save({"class_names": list(CLASSES), "text": out["language_features"], "mask": out["language_mask"]}, path)
    before = path.read_bytes()
    backend = meta["backend"]
    det = Detector(backend, [*CLASSES, "zebra"], text_cache=path)  # zebra is not in it: encoded, not written
    text, mask = det._text
    live_text, live_mask = backend.encode_text([*CLASSES, "zebra"])
    assert torch.equal(mask, live_mask) and rel(text[mask], live_text[live_mask]) < NOISE
    assert path.read_bytes() == before
    converted = convert(path, tmp_path / "text.safetensors", checkpoint=meta["loaded"])
    cache = TextCache(backend.fingerprint, converted.output)  # dart's own format, stamped with the model
    assert list(cache.entries) == list(CLASSES) and cache.unverified is None
    with pytest.raises(CacheError, match="was made by another model than this one"):
        Detector(tiny_backend, ["person"], text_cache=path)
    with pytest.raises(CacheError, match="records no model"):
        TextCache("x", path).get(["person"], None)


def test_a_dart_research_pruned_checkpoint_converts_to_a_self_pruning_dart_checkpoint(meta, tmp_path):
    """A pruned checkpoint saved the way DART's prune trainer saves one (Meta's vision-backbone state with the
    removed block and branch taken out, ``skip_blocks``, ``mask_blocks``), converted over the sam3.pt it was pruned
    from, loads as a dart pruned checkpoint whose backbone equals the one assembled directly: the full model, DART's
    weights over it through the Meta key map, the same pruning."""
    from dart.compat.convert import convert
    from dart.errors import CheckpointError
    from dart.models.meta_keymap import convert_meta_state_dict
    from dart.pruning import PruneSpec, apply_pruning
    from dart.stages import BackboneStage

    bpe = installed_bpe_vocab()
    source = meta["loaded"].source
    vision = {k: v.clone() for k, v in meta["model"].backbone.vision_backbone.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    for key, value in vision.items():  # self-distillation moved the kept weights: the test must see which are used
        if value.is_floating_point() and key.startswith(("trunk.blocks.", "convs.")):
            value.add_(torch.randn(value.shape, generator=generator) * 0.02)
    removed = [k for k in vision if k.startswith("trunk.blocks.2.")
               or (k.startswith("trunk.blocks.1.") and any(s in k for s in (".mlp.", ".norm2.", ".ls2.")))]
    for key in removed:
        del vision[key]
    path = tmp_path / "pruned_2blocks.pt"
    torch.save({"epoch": 2, "loss": 0.05, "mask_blocks": "1:mlp", "skip_blocks": [2], "pruned_state_dict": vision,
                "removed_keys": removed}, path)
    with pytest.raises(CheckpointError, match="DART research pruned checkpoint.*dart convert"):
        load_sam3(path, imgsz=IMGSZ, tokenizer=bpe)
    out = convert(path, tmp_path / "pruned", checkpoint=load_sam3(source, imgsz=IMGSZ, tokenizer=bpe))
    converted = load_sam3(out.output, imgsz=IMGSZ, tokenizer=bpe)
    spec = PruneSpec.parse([2], "1:mlp")
    assert converted.model.dart_prune_spec == spec
    reference = load_sam3(source, imgsz=IMGSZ, tokenizer=bpe).model
    reference.load_state_dict(convert_meta_state_dict({"backbone.vision_backbone." + k: v for k, v in vision.items()}),
                              strict=False)
    apply_pruning(reference, spec)
    pixels = preprocess([to_rgb(meta["image"])], IMGSZ)
    with torch.inference_mode():
        got = BackboneStage(converted.model).eval()(pixels)
        expected = BackboneStage(reference).eval()(pixels)
        original = BackboneStage(meta["loaded"].model).eval()(pixels)
    for g, e, o in zip(got, expected, original):
        assert torch.equal(g, e)
        assert rel(g, o) > 1e-3  # DART's weights, not the base checkpoint's
    bad = {**vision, "trunk.blocks.2.attn.qkv.weight": vision["trunk.blocks.0.attn.qkv.weight"]}
    torch.save({"mask_blocks": "1:mlp", "skip_blocks": [2], "pruned_state_dict": bad}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="belongs to a block its pruning .* removes"):
        convert(tmp_path / "bad.pt", tmp_path / "bad", checkpoint=load_sam3(source, imgsz=IMGSZ, tokenizer=bpe))
