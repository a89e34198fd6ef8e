"""Exemplar prompts (boxes instead of, or besides, text) equal transformers' own ``Sam3Model.forward`` with the
same ``input_boxes`` / ``input_boxes_labels``, class by class; mixed batches equal per-class runs; tokens taken
from a reference image equal to the target reproduce the in-image result."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from dart.classes import parse_vocabulary, resolve_classes
from dart.detector import Detector
from dart.errors import CacheError, InputError
from dart.preprocess import preprocess, to_rgb
from dart.prompts import Prompt, normalized_boxes, parse_exemplar
from tests.conftest import make_image

HEIGHT, WIDTH = 90, 160
# (name, prompt): a box-only exemplar, one with a negative box, text plus a box, and two text classes
PROMPTS = {
    "red": Prompt(boxes=[(20, 15, 80, 45)]),
    "red, not blue": Prompt(boxes=[(20, 15, 80, 45)], negative=[(105, 45, 135, 75)]),
    "round": Prompt(text="circle", boxes=[(105, 45, 135, 75), (100, 40, 140, 80)]),
    "person": "person",
    "car": "car",
}


def _reference(model, backend, pixels, text: str, prompt: Prompt | None):
    """transformers' Sam3Model.forward for one class: its text (``"visual"`` for box-only, as Meta's processor) and
    its boxes, or an all-padding box for a text class (so transformers adds SAM3's geometry CLS token)."""
    input_ids, attention_mask = backend.tokenize([text])
    if prompt is None:
        boxes, labels = torch.zeros(1, 1, 4), torch.tensor([[-10]])
    else:
        norm, lab = normalized_boxes(prompt, HEIGHT, WIDTH)
        boxes, labels = torch.from_numpy(norm)[None], torch.from_numpy(lab)[None]
    with torch.inference_mode():
        return model(pixel_values=pixels, input_ids=input_ids, attention_mask=attention_mask, input_boxes=boxes,
                     input_boxes_labels=labels)


@pytest.fixture(scope="module")
def image():
    return make_image(HEIGHT, WIDTH)  # BGR


@pytest.fixture(scope="module")
def references(tiny_loaded, tiny_backend, image):
    pixels = preprocess([to_rgb(image)], tiny_backend.imgsz)
    vocab = parse_vocabulary(PROMPTS)
    return [_reference(tiny_loaded.model, tiny_backend, pixels, text, ex)
            for text, ex in zip(vocab.prompts, vocab.exemplars)]


def _raw(det: Detector, image):
    pixels, sizes = det.prepare([image])
    features = det.run_backbone(pixels)
    return det.run_heads(features, 1, sizes), features


def _check_equal(got_logits, got_boxes, got_presence, refs):
    for c, ref in enumerate(refs):
        torch.testing.assert_close(got_logits[0, c], ref.pred_logits[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got_boxes[0, c], ref.pred_boxes[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got_presence[0, c], ref.presence_logits[0, 0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("chunk", [1, 2, 16])
def test_mixed_exemplar_and_text_classes_equal_sam3_forward_class_by_class(tiny_backend, image, references, chunk):
    det = Detector(tiny_backend, PROMPTS, conf=0.2, max_classes_per_batch=chunk)
    (logits, boxes, presence, _), _ = _raw(det, image)
    _check_equal(logits, boxes, presence, references)


def test_exemplar_masks_equal_sam3_forward(tiny_backend, image, references):
    det = Detector(tiny_backend, PROMPTS, conf=0.0, masks=True)
    pixels, sizes = det.prepare([image])
    features = det.run_backbone(pixels)
    text, mask = det._text
    out = tiny_backend.encdec(features, text, mask, return_state=True, **det._geometry(0, len(PROMPTS), sizes, 1))
    pairs = torch.tensor([[0, c] for c in range(len(PROMPTS))])
    masks = tiny_backend.masks(features, out, text, mask, pairs)
    for c, ref in enumerate(references):
        torch.testing.assert_close(masks[c], ref.pred_masks[0], atol=1e-4, rtol=1e-4)


def test_the_boxes_matter(tiny_backend, image, references):
    """A box-only exemplar is not the text "visual" alone, and a negative box changes the result: the equalities
    above would hold for a stage that ignored the boxes only if these did too."""
    (logits, _, _, _), _ = _raw(Detector(tiny_backend, {"plain": "visual"}), image)
    assert not torch.allclose(logits[0, 0], references[0].pred_logits[0], atol=1e-3)
    assert not torch.allclose(references[0].pred_logits, references[1].pred_logits, atol=1e-3)


def test_a_reference_image_equal_to_the_target_gives_the_in_image_result(tiny_backend, image, tmp_path):
    path = tmp_path / "ref.png"
    cv2.imwrite(str(path), image)
    in_image = Detector(tiny_backend, PROMPTS, conf=0.0)
    crossed = {name: p if isinstance(p, str) else Prompt(p.text, p.boxes, p.negative, image=path)
               for name, p in PROMPTS.items()}
    across = Detector(tiny_backend, crossed, conf=0.0)
    assert across._tokens is not None and not across._in_image
    (a, b, c, _), _ = _raw(in_image, image)
    (x, y, z, _), _ = _raw(across, image)
    torch.testing.assert_close(x, a, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(y, b, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(z, c, atol=1e-5, rtol=1e-4)
    # on another image the reference tokens stay those of the reference (and differ from in-image boxes there)
    other = make_image(HEIGHT, WIDTH, seed=5)
    (a2, _, _, _), _ = _raw(in_image, other)
    (x2, _, _, _), _ = _raw(across, other)
    assert not torch.allclose(a2[0, 0], x2[0, 0], atol=1e-4)


def test_exemplar_entries_parse_to_prompts(tmp_path):
    name, prompt = parse_exemplar("ref.jpg:120,40,180,90+10,10,50.5,60-5,5,9,9=widget|a red widget")
    assert name == "widget" and prompt.text == "a red widget" and str(prompt.image) == "ref.jpg"
    assert prompt.boxes == ((120, 40, 180, 90), (10, 10, 50.5, 60)) and prompt.negative == ((5, 5, 9, 9),)
    assert prompt.describe() == "ref.jpg:120,40,180,90+10,10,50.5,60-5,5,9,9|a red widget"
    name, prompt = parse_exemplar("120,40,180,90=thing")
    assert prompt.in_image and prompt.encoder_text == "visual"
    # two entries of one name are one class; commas inside an exemplar do not split it
    entries = resolve_classes(["person,car", "a.jpg:1,2,30,40=widget", "b.jpg:5,6,70,80=widget"])
    vocab = parse_vocabulary(entries)
    assert vocab.names == ["person", "car", "widget"] and vocab.prompt_class == [0, 1, 2, 2]
    assert vocab.labels == ["person", "car", "a.jpg:1,2,30,40", "b.jpg:5,6,70,80"]


def test_class_files_read_exemplar_images_beside_them(tmp_path):
    from dart.classes import read_classes_file

    (tmp_path / "ref.jpg").write_bytes(b"")
    (tmp_path / "classes.txt").write_text("person, car\nref.jpg:1,2,30,40=widget\n")
    entries = read_classes_file(tmp_path / "classes.txt")
    assert entries[:2] == ["person", "car"] and entries[2] == f"{tmp_path / 'ref.jpg'}:1,2,30,40=widget"


@pytest.mark.parametrize("entry, message", [
    ("ref.jpg:180,40,120,90=widget", "wrong order"),
    ("ref.jpg:120,40,120,90=widget", "zero area"),
    ("ref.jpg:-120,40,180,90=widget", "only negative boxes"),
    ("ref.jpg:120,40,180,90=", "not an exemplar"),
    (":120,40,180,90=widget", "empty image path"),
])
def test_bad_exemplars_are_one_sentence(entry, message):
    with pytest.raises(InputError, match=message):
        parse_exemplar(entry)


def test_a_box_outside_the_image_is_refused_naming_it(tiny_backend, image, tmp_path):
    det = Detector(tiny_backend, {"far": Prompt(boxes=[(100, 50, 170, 80)])})
    with pytest.raises(InputError, match=r"exemplar box 100,50,170,80 leaves the image \(160x90 pixels\)"):
        det.detect(image)
    path = tmp_path / "ref.png"
    cv2.imwrite(str(path), image)
    with pytest.raises(InputError, match="leaves its reference image"):
        det.set_classes({"far": Prompt(boxes=[(100, 50, 170, 80)], image=path)})


def test_detections_record_the_prompt_that_found_them(tiny_backend, image):
    det = Detector(tiny_backend, PROMPTS, conf=0.0, max_det=50)
    dets = det.detect(image)
    labels = dict(zip(range(len(PROMPTS)), det.prompt_labels))
    assert len(dets) and dets.prompts is not None
    rows = dets.to_json()
    assert {r["prompt"] for r in rows} <= set(labels.values())
    assert json.loads(json.dumps(rows)) == rows
    back = type(dets).from_json(rows, dets.image_size)
    assert list(back.prompts) == [r["prompt"] for r in rows]
    plain = Detector(tiny_backend, ["person", "car"]).detect(image)
    assert plain.prompts is None and "prompt" not in (plain.to_json() or [{}])[0]


def test_exemplar_boxes_are_drawn_dashed_where_they_were_drawn(tiny_backend, image, tmp_path):
    from dart.annotate import annotate

    ref, other = tmp_path / "ref.png", tmp_path / "other.png"
    cv2.imwrite(str(ref), image)
    cv2.imwrite(str(other), image)
    det = Detector(tiny_backend, {"a": Prompt(boxes=[(20, 15, 80, 45)], negative=[(100, 40, 140, 80)], image=ref),
                                  "b": Prompt(boxes=[(5, 5, 30, 30)])})
    assert det.exemplar_marks(ref) == [((20, 15, 80, 45), True, 0), ((100, 40, 140, 80), False, 0),
                                       ((5, 5, 30, 30), True, 1)]
    assert det.exemplar_marks(other) == [((5, 5, 30, 30), True, 1)]  # in-image boxes are on every image
    empty = type(det.detect(image)).empty((HEIGHT, WIDTH))
    drawn = annotate(image, empty, exemplars=det.exemplar_marks(ref))
    changed = np.any(drawn != image, axis=2)
    assert changed[15, 20:80].any() and not changed[15, 20:80].all()  # dashed: some of the top edge, not all
    assert not changed[30, 40:60].any()  # nothing inside the box


# ------------------------------------------------------------------------------------------------ engines
@pytest.fixture(scope="module")
def engines(tmp_path_factory, tiny_ckpt):
    from tests.export_helpers import tiny_engines

    return tiny_engines(tmp_path_factory, tiny_ckpt)


def _reference_prompts(path):
    return {"red": Prompt(boxes=[(20, 15, 80, 45)], image=path), "person": "person",
            "round": Prompt(text="circle", boxes=[(105, 45, 135, 75)], negative=[(5, 5, 30, 30)], image=path),
            "car": "car", "red again": Prompt(boxes=[(22, 14, 78, 47)], image=path)}  # 5 classes > the engine's 3


@pytest.mark.parametrize("kind", ["onnxruntime", "openvino"])
def test_engines_run_reference_exemplars_as_torch_does(tiny_backend, tiny_ckpt, engines, image, tmp_path, kind):
    from tests.test_onnxruntime_backend import assert_same

    if kind == "openvino":
        pytest.importorskip("openvino", reason="OpenVINO (the openvino extra, in dev) runs this backend")
    path = tmp_path / "ref.png"
    cv2.imwrite(str(path), image)
    prompts = _reference_prompts(path)
    torch_det = Detector(tiny_backend, prompts, conf=0.05, masks=True)
    options = {"precision": "fp32"} if kind == "openvino" else None
    ort_det = Detector.from_engines(engines=engines, classes=prompts, backend=kind, device="cpu",
                                    checkpoint=tiny_ckpt, conf=0.05, masks=True, backend_options=options)
    assert ort_det.backend.prompt_tokens == 17  # 16 boxes + CLS, the export default
    for target in (image, make_image(HEIGHT, WIDTH, seed=8)):
        a, b = torch_det.detect(target), ort_det.detect(target)
        assert_same(a, b)
        assert sorted(a.prompts) == sorted(b.prompts)


def test_cached_exemplar_tokens_let_engines_run_without_the_model(tiny_backend, tiny_ckpt, engines, image, tmp_path):
    from dart.text_cache import TextCache, read_cache_info
    from tests.test_onnxruntime_backend import assert_same

    path, cache = tmp_path / "ref.png", tmp_path / "text.safetensors"
    cv2.imwrite(str(path), image)
    prompts = _reference_prompts(path)
    live = Detector(tiny_backend, prompts, conf=0.05, text_cache=cache)  # computes and stores the tokens
    info = read_cache_info(cache)
    assert len(info["exemplars"]) == 3 and {"visual", "circle", "person", "car"} <= set(info["classes"])
    reread = TextCache(tiny_backend.fingerprint, cache)
    for key, (tokens, mask) in live.text_cache.exemplars.items():  # the cached tokens reproduce the live ones
        assert torch.equal(reread.exemplar(key)[0], tokens) and torch.equal(reread.exemplar(key)[1], mask)
    engine_only = Detector.from_engines(engines=engines, classes=prompts, backend="onnxruntime", device="cpu",
                                        text_cache=cache, conf=0.05)
    assert not engine_only.backend.has_text_encoder
    assert_same(live.detect(image), engine_only.detect(image))
    moved = {**prompts, "red": Prompt(boxes=[(21, 15, 80, 45)], image=path)}  # other boxes: not in the cache
    with pytest.raises(CacheError, match="not in the text cache"):
        engine_only.set_classes(moved)


def test_engines_refuse_what_they_cannot_run_with_a_sentence(tiny_loaded, tiny_ckpt, engines, image, tmp_path):
    from dart.export.onnx_export import export_encdec

    with pytest.raises(InputError, match="exemplar boxes on the detected image run on the PyTorch backend"):
        Detector.from_engines(engines=engines, classes={"w": Prompt(boxes=[(1, 2, 30, 40)])}, backend="onnxruntime",
                              device="cpu", checkpoint=tiny_ckpt)
    old = tmp_path / "old"
    old.mkdir()
    (old / "backbone.onnx").symlink_to(engines / "backbone.onnx")
    export_encdec(tiny_loaded, old / "encdec.onnx", max_classes=2, exemplar_boxes=0, simplify=False)
    path = tmp_path / "ref.png"
    cv2.imwrite(str(path), image)
    det = Detector.from_engines(engines=old, classes=["person"], backend="onnxruntime", device="cpu",
                                checkpoint=tiny_ckpt)
    with pytest.raises(InputError, match="takes text classes only: export the encoder-decoder again"):
        det.set_classes({"w": Prompt(boxes=[(1, 2, 30, 40)], image=path)})
    many = Prompt(boxes=[(1 + i, 2, 30 + i, 40) for i in range(17)], image=path)
    det = Detector.from_engines(engines=engines, classes=["person"], backend="onnxruntime", device="cpu",
                                checkpoint=tiny_ckpt)
    with pytest.raises(InputError, match="has 17 boxes, but the encoder-decoder .* takes at most 16"):
        det.set_classes({"w": many})
        det.detect(image)


def test_in_image_exemplars_in_a_batch_of_different_sizes_equal_single_images(tiny_backend):
    det = Detector(tiny_backend, PROMPTS, conf=0.1, masks=True)
    images = [make_image(HEIGHT, WIDTH, seed=1), make_image(120, 150, seed=2)]
    for image, batched in zip(images, det.detect_batch(images)):
        single = det.detect(image)
        np.testing.assert_array_equal(batched.class_ids, single.class_ids)
        np.testing.assert_allclose(batched.scores, single.scores, atol=1e-5)
        np.testing.assert_allclose(batched.xyxy, single.xyxy, atol=1e-3)
        assert list(batched.prompts) == list(single.prompts)


# ------------------------------------------------------------------------------------------------ command line
def _cli(*args):
    from typer.testing import CliRunner

    from dart.cli import build_app

    return CliRunner().invoke(build_app(), [str(a) for a in args])


def test_detect_with_an_exemplar_on_one_image_labels_the_others(tmp_path, tiny_ckpt):
    from tests.tiny import TINY_IMGSZ

    folder = tmp_path / "imgs"
    folder.mkdir()
    for seed in range(3):
        cv2.imwrite(str(folder / f"im{seed}.png"), make_image(HEIGHT, WIDTH, seed=seed))
    ref = folder / "im0.png"
    before = ref.read_bytes()
    out = tmp_path / "out"
    res = _cli("detect", folder, "--exemplar", f"{ref}:20,15,80,45=red", "-e", f"{ref}:105,45,135,75=round|circle",
               "-c", "person", "--conf", "0.0", "--max-det", "5", "--save-txt", "--save-coco", "-o", out,
               "--checkpoint", tiny_ckpt, "--imgsz", TINY_IMGSZ, "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert ref.read_bytes() == before  # the reference image is an input: never touched
    assert (out / "labels" / "classes.txt").read_text().split("\n")[:3] == ["person", "red", "round"]
    coco = json.loads((out / "instances.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["person", "red", "round"] and len(coco["images"]) == 3
    for seed in range(3):
        data = json.loads((out / f"im{seed}.json").read_text())
        assert data["prompts"] == {"person": ["person"], "red": [f"{ref}:20,15,80,45"],
                                   "round": [f"{ref}:105,45,135,75|circle"]}
        assert data["detections"] and all("prompt" in row for row in data["detections"])
        assert {row["prompt"] for row in data["detections"]} <= {"person", f"{ref}:20,15,80,45",
                                                                  f"{ref}:105,45,135,75|circle"}
        assert (out / "labels" / f"im{seed}.txt").read_text().strip()


def test_detect_refuses_a_bad_exemplar_with_a_sentence_before_loading(tmp_path, tiny_ckpt, image_file):
    from tests.tiny import TINY_IMGSZ

    for spec, message in [(f"{image_file}:80,45,20,15=red", "wrong order"),
                          ("missing.png:20,15,80,45=red", "does not exist"),
                          (f"{image_file}:20,15,800,45=red", "leaves its reference image"),
                          ("red", "is not an exemplar")]:
        res = _cli("detect", image_file, "--exemplar", spec, "-o", tmp_path / "out", "--checkpoint", tiny_ckpt,
                   "--imgsz", TINY_IMGSZ, "--device", "cpu")
        assert res.exit_code == 2, (spec, res.output)
        assert message in " ".join(res.output.split()) and "Traceback" not in res.output
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_video_uses_boxes_on_its_first_frame(tmp_path, tiny_backend):
    from dart.video import run_video

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i:03d}.png"), make_image(HEIGHT, WIDTH, seed=i))
    det = Detector(tiny_backend, {"red": Prompt(boxes=[(20, 15, 80, 45)]), "person": "person"}, conf=0.0,
                   max_det=5)
    assert det.has_in_image_exemplars
    jsonl, video = tmp_path / "dets.jsonl", tmp_path / "out.avi"
    result = run_video(det, str(frames), save_jsonl=jsonl, output=video, sequential=True, progress=False)
    assert video.is_file() and video.stat().st_size > 0
    assert result.frames == 3 and not det.has_in_image_exemplars  # anchored on frame 0
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    # frame 0 with the anchored tokens equals frame 0 with in-image boxes; later frames keep frame 0's tokens
    in_image = Detector(tiny_backend, {"red": Prompt(boxes=[(20, 15, 80, 45)]), "person": "person"}, conf=0.0,
                        max_det=5)
    first = in_image.detect(make_image(HEIGHT, WIDTH, seed=0))
    got = rows[0]["detections"]
    np.testing.assert_allclose([r["score"] for r in got], first.scores, atol=1e-5)
    assert [r["prompt"] for r in got] == list(first.prompts)


def test_text_cache_build_caches_exemplars_for_an_engine_only_run(tmp_path, tiny_ckpt, engines):
    import shutil

    from tests.tiny import TINY_IMGSZ

    folder = tmp_path / "engines"
    shutil.copytree(engines, folder)
    ref, target = tmp_path / "ref.png", tmp_path / "target.png"
    cv2.imwrite(str(ref), make_image(HEIGHT, WIDTH, seed=0))
    cv2.imwrite(str(target), make_image(HEIGHT, WIDTH, seed=3))
    spec = f"{ref}:20,15,80,45-100,40,140,80=red"
    res = _cli("text-cache", "build", "-c", "person", "-e", spec, "--engines", folder, "--checkpoint", tiny_ckpt,
               "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "1 exemplars (1 new)" in " ".join(res.output.split())
    shown = _cli("text-cache", "show", folder / "text.safetensors")
    assert "exemplar" in shown.output and "20,15,80,45-100,40,140,80" in " ".join(shown.output.split())
    refused = _cli("text-cache", "build", "-e", "20,15,80,45=red", "--engines", folder, "--checkpoint", tiny_ckpt)
    assert refused.exit_code == 2 and "cannot be cached" in " ".join(refused.output.split())
    # the engines alone (no model: the checkpoint named does not exist) run the exemplar class from the cache
    out = tmp_path / "out"
    run = _cli("detect", target, "-c", "person", "-e", spec, "--engines", folder, "--checkpoint", tmp_path / "none",
               "--conf", "0.0", "--max-det", "5", "-o", out)
    assert run.exit_code == 0, run.output
    data = json.loads((out / "target.json").read_text())
    assert data["classes"] == ["person", "red"] and data["detections"]
    torch_out = tmp_path / "torch_out"
    live = _cli("detect", target, "-c", "person", "-e", spec, "--checkpoint", tiny_ckpt, "--imgsz", TINY_IMGSZ,
                "--device", "cpu", "--conf", "0.0", "--max-det", "5", "-o", torch_out)
    assert live.exit_code == 0, live.output
    expected = json.loads((torch_out / "target.json").read_text())["detections"]
    assert [r["prompt"] for r in data["detections"]] == [r["prompt"] for r in expected]
    np.testing.assert_allclose([r["score"] for r in data["detections"]], [r["score"] for r in expected], atol=1e-3)


def test_exemplar_boxes_run_under_bf16_autocast(tiny_ckpt, tiny_backend, image):
    """ROI align takes no bf16, so the geometry encoder runs the boxes in fp32 inside a bf16 run."""
    from dart.backends.torch_backend import TorchBackend
    from dart.models.loading import load_sam3
    from tests.tiny import TINY_IMGSZ

    fp32 = Detector(tiny_backend, PROMPTS, conf=0.0, max_det=20).detect(image)
    bf16_backend = TorchBackend(load_sam3(tiny_ckpt, imgsz=TINY_IMGSZ), device="cpu", precision="bf16")
    assert next(bf16_backend.encdec_stage.geometry_encoder.parameters()).dtype == torch.float32
    bf16 = Detector(bf16_backend, PROMPTS, conf=0.0, max_det=20).detect(image)
    assert len(bf16) == len(fp32) and set(bf16.prompts) == set(fp32.prompts)
    np.testing.assert_allclose(np.sort(bf16.scores), np.sort(fp32.scores), atol=0.03)
