"""EfficientSAM3 checkpoints load as they are: the trunk computes what its original module definition computes
(``tests/data/efficientsam3_repvit_reference.json``, recorded from it), the head and SAM3's neck are wired as the
file describes them (checked against plain functional ops), the rest of the file loads strictly into SAM3, and
the whole detector, its export and ``dart convert`` work on it; a file that does not fit is one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

pytest.importorskip("timm", reason="EfficientSAM3 trunks run on timm (the train extra, in dev)")

from dart.compat.efficientsam3 import DETECTOR, HEAD_PREFIX, TRUNK_PREFIX  # noqa: E402
from dart.errors import CheckpointError  # noqa: E402
from dart.models.loading import load_sam3  # noqa: E402
from dart.models.meta_keymap import to_meta_state_dict  # noqa: E402
from tests.conftest import make_image  # noqa: E402
from tests.data.make_efficientsam3_reference import deterministic_input, deterministic_weights  # noqa: E402
from tests.test_cli import run  # noqa: E402
from tests.tiny import TINY_IMGSZ, tiny_model, tiny_tokenizer  # noqa: E402

REFERENCE = json.loads((Path(__file__).parent / "data" / "efficientsam3_reference.json").read_text())["trunks"]
VIT = "detector.backbone.vision_backbone.trunk."
TRUNKS = sorted(REFERENCE)  # efficientsam3_efficientvit_b1, efficientsam3_repvit_m2_3, efficientsam3_tiny_vit_11m


def trunk_width(trunk: str) -> int:
    return REFERENCE[trunk]["output"]["shape"][1]  # the last stage's channels


def head_weights(trunk: str, channels: int, seed: int = 3) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    width = trunk_width(trunk)
    return {"0.weight": torch.randn(channels, width, 1, 1, generator=gen) / width ** 0.5,
            "1.weight": 1 + 0.1 * torch.randn(channels, generator=gen), "1.bias": 0.1 * torch.randn(channels, generator=gen),
            "1.running_mean": 0.1 * torch.randn(channels, generator=gen),
            "1.running_var": 1 + 0.1 * torch.rand(channels, generator=gen),
            "1.num_batches_tracked": torch.zeros((), dtype=torch.long),
            "3.weight": torch.randn(channels, channels, 3, 3, generator=gen) / (9 * channels) ** 0.5,
            "3.bias": 0.1 * torch.randn(channels, generator=gen)}


def efficientsam3_state(source_model, trunk: str) -> dict[str, torch.Tensor]:
    """A file in EfficientSAM3's layout: SAM3 (Meta names) without its ViT, the trunk under its original names (the
    reference's weights), the projection head."""
    state = {k: v for k, v in to_meta_state_dict(source_model.state_dict()).items() if not k.startswith(VIT)}
    state.update({DETECTOR + TRUNK_PREFIX + k: v for k, v in deterministic_weights(REFERENCE[trunk]["keys"]).items()})
    hidden = source_model.config.vision_config.backbone_config.hidden_size
    state.update({DETECTOR + HEAD_PREFIX + k: v for k, v in head_weights(trunk, hidden).items()})
    return state


@pytest.fixture(scope="module")
def source_model():
    return tiny_model(seed=5)


@pytest.fixture(scope="module", params=TRUNKS)
def trunk(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def eff_file(tmp_path_factory, source_model, trunk) -> Path:
    folder = tmp_path_factory.mktemp(trunk)
    torch.save({"model": efficientsam3_state(source_model, trunk)}, folder / f"{trunk}.pt")
    tiny_tokenizer().save_pretrained(folder)
    source_model.config.to_json_file(folder / "config.json")  # a real file has none: SAM3's default config
    return folder / f"{trunk}.pt"


@pytest.fixture(scope="module")
def loaded(eff_file):
    return load_sam3(eff_file, imgsz=TINY_IMGSZ)


def test_the_trunk_computes_what_the_original_module_computes(loaded, trunk):
    out = REFERENCE[trunk]["output"]
    assert loaded.backbone.dart_backbone_name == trunk
    with torch.no_grad():
        mine = loaded.backbone.encoder.trunk.forward_features(deterministic_input(REFERENCE[trunk]["input_size"]))
    assert list(mine.shape) == out["shape"]
    sample = mine.reshape(-1)[::out["sample_step"]].numpy()
    assert np.allclose(sample, out["sample"], rtol=1e-4, atol=1e-5), np.abs(sample - out["sample"]).max()
    assert np.allclose(mine.mean(dim=(0, 2, 3)).numpy(), out["channel_means"], rtol=1e-4, atol=1e-5)


def test_head_and_neck_are_wired_as_the_file_says(loaded, source_model, trunk):
    pixels = torch.randn(1, 3, TINY_IMGSZ, TINY_IMGSZ, generator=torch.Generator().manual_seed(9))
    hidden = source_model.config.vision_config.backbone_config.hidden_size
    h = head_weights(trunk, hidden)
    with torch.no_grad():
        trunk = loaded.backbone.encoder.trunk.forward_features(pixels)
        x = F.conv2d(trunk, h["0.weight"])
        x = F.batch_norm(x, h["1.running_mean"], h["1.running_var"], h["1.weight"], h["1.bias"], eps=1e-5)
        x = F.conv2d(F.gelu(x), h["3.weight"], h["3.bias"], padding=1)
        x = F.interpolate(x, size=(TINY_IMGSZ // 14,) * 2, mode="bilinear", align_corners=False)
        want = [level(x) for level in list(source_model.vision_encoder.neck.fpn_layers)[:3]]
        got = loaded.backbone(pixels)
    assert len(got) == 3
    for a, b in zip(got, want):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)


def test_everything_but_the_vit_is_the_files(loaded, source_model):
    mine, theirs = loaded.model.state_dict(), source_model.state_dict()
    compared = [k for k in theirs if not k.startswith("vision_encoder.backbone.")]
    assert compared and all(torch.equal(mine[k], theirs[k]) for k in compared)
    assert len(loaded.model.vision_encoder.backbone.layers) == 0  # no ViT is held
    again = load_sam3(loaded.source, imgsz=TINY_IMGSZ)
    assert again.fingerprint == loaded.fingerprint


def test_detect_export_and_plugins(tmp_path, eff_file, trunk):
    image = tmp_path / "street.png"
    import cv2

    cv2.imwrite(str(image), make_image(90, 160, seed=1))
    common = ("--checkpoint", eff_file, "--imgsz", TINY_IMGSZ, "--device", "cpu", "--precision", "fp32")
    res = run("detect", image, "-c", "person", "car", "--conf", "0.05", *common, "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "out" / "street.json").read_text())["detections"]
    res = run("export", "backbone", "--checkpoint", eff_file, "--imgsz", TINY_IMGSZ, "-o", tmp_path / "eng" / "backbone.onnx")
    assert res.exit_code == 0, res.output
    res = run("export", "encdec", "--checkpoint", eff_file, "--imgsz", TINY_IMGSZ, "-o", tmp_path / "eng" / "encdec.onnx")
    assert res.exit_code == 0, res.output
    onnx = run("detect", image, "-c", "person", "car", "--conf", "0.05", "--engines", tmp_path / "eng",
               "--backend", "onnxruntime", "--checkpoint", eff_file, "--device", "cpu", "-o", tmp_path / "onnx")
    assert onnx.exit_code == 0, onnx.output
    torch_rows = json.loads((tmp_path / "out" / "street.json").read_text())["detections"]
    onnx_rows = json.loads((tmp_path / "onnx" / "street.json").read_text())["detections"]
    assert [r["class_name"] for r in onnx_rows] == [r["class_name"] for r in torch_rows]
    for a, b in zip(onnx_rows, torch_rows):
        assert np.allclose(a["box_xyxy"], b["box_xyxy"], atol=0.05) and abs(a["score"] - b["score"]) < 1e-3
    from dart.plugins.registry import available
    from dart.students import build_backbone

    assert trunk in {name for name, _, _ in available("dart.backbones")}
    assert run("plugins", "--check").exit_code == 0
    random_trunk = build_backbone(trunk, tiny_model())  # for dart bench backbones
    assert [f.shape[-1] for f in random_trunk(torch.zeros(1, 3, TINY_IMGSZ, TINY_IMGSZ))] == [32, 16, 8]


def test_convert_round_trips(tmp_path, eff_file, loaded):
    converted = eff_file.parent / "converted.safetensors"  # beside the tiny model's config.json
    res = run("convert", eff_file, "-o", converted)
    assert res.exit_code == 0, res.output
    assert converted.is_file() and loaded.fingerprint in " ".join(res.output.split())
    assert load_sam3(converted, imgsz=TINY_IMGSZ).fingerprint == loaded.fingerprint


def test_files_that_do_not_fit_are_one_sentence(tmp_path, source_model):
    trunk = "efficientsam3_repvit_m2_3"  # the refusals are the same for every trunk
    source_model.config.to_json_file(tmp_path / "config.json")
    tiny_tokenizer().save_pretrained(tmp_path)
    state = efficientsam3_state(source_model, trunk)
    renamed = dict(state)
    renamed[DETECTOR + TRUNK_PREFIX + "features.7.token_mixer.0.conv.c.weightx"] = renamed.pop(
        DETECTOR + TRUNK_PREFIX + "features.7.token_mixer.0.conv.c.weight")
    no_head = {k: v for k, v in state.items() if not k.endswith(HEAD_PREFIX + "3.bias")}
    no_decoder = {k: v for k, v in state.items() if "transformer.decoder.norm." not in k}
    smaller = {k: v for k, v in state.items() if "features.54." not in k}  # a RepViT of no known size
    unknown = {k: v for k, v in state.items() if TRUNK_PREFIX not in k}
    unknown[DETECTOR + TRUNK_PREFIX + "patch_embed.proj.weight"] = torch.zeros(1)
    cases = [(renamed, "unexpected features.7.token_mixer.0.conv.c.weightx"), (no_head, "missing keys (3.bias)"),
             (no_decoder, "detr_decoder.output_layer_norm"), (smaller, "nor any other size dart knows"),
             (unknown, "student trunk of a kind dart does not know (first key: patch_embed.proj.weight)")]
    for state_dict, message in cases:
        path = tmp_path / "bad.pt"  # beside the tiny config
        torch.save(state_dict, path)
        with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_sam3(path, imgsz=TINY_IMGSZ)
    good = tmp_path / "good.pt"  # with the ImageNet classifier older files carry: skipped by name
    torch.save({**state, DETECTOR + TRUNK_PREFIX + "classifier.classifier.l.weight": torch.zeros(1000, 640)}, good)
    assert load_sam3(good, imgsz=TINY_IMGSZ).backbone.dart_backbone_name == trunk
    res = run("detect", make_image_file(tmp_path), "-c", "person", "--checkpoint", good, "--imgsz", TINY_IMGSZ,
              "--skip-blocks", "1", "-o", tmp_path / "o")
    assert res.exit_code == 2 and "brings its own backbone" in " ".join(res.output.split())


def make_image_file(folder: Path) -> Path:
    import cv2

    path = folder / "im.png"
    cv2.imwrite(str(path), make_image(90, 160))
    return path
