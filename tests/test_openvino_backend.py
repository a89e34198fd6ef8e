"""The openvino backend runs the exported stages and gives the torch backend's detections; it works end to end
through detect, video, eval and bench."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("openvino", reason="OpenVINO (the openvino extra, in dev) runs this backend")

from dart.backends.torch_backend import TorchBackend  # noqa: E402
from dart.cli import build_app  # noqa: E402
from dart.detector import Detector  # noqa: E402
from dart.errors import InputError  # noqa: E402
from dart.preprocess import preprocess, to_rgb  # noqa: E402
from tests.conftest import make_image  # noqa: E402
from tests.export_helpers import engines_with_encdec, tiny_engines  # noqa: E402
from tests.test_onnxruntime_backend import CLASSES, assert_same  # noqa: E402
from tests.tiny import TINY_IMGSZ  # noqa: E402


@pytest.fixture(scope="module")
def engines(tmp_path_factory, tiny_ckpt):
    return tiny_engines(tmp_path_factory, tiny_ckpt)


def openvino(engines, tiny_ckpt, precision="fp32", **kwargs):
    return Detector.from_engines(engines=engines, backend="openvino", device="cpu", checkpoint=tiny_ckpt,
                                 backend_options={"precision": precision}, **kwargs)


def test_stage_outputs_equal_torch(engines, tiny_loaded, tiny_ckpt):
    torch_backend = TorchBackend(tiny_loaded, device="cpu")
    ov = openvino(engines, tiny_ckpt).backend
    assert ov.name == "openvino" and ov.precision == "fp32" and ov.max_classes == 3
    pixels = preprocess([to_rgb(make_image(seed=2))], TINY_IMGSZ)
    a, b = torch_backend.backbone(pixels), ov.backbone(pixels)
    for x, y in zip(a, b):
        torch.testing.assert_close(y, x, atol=1e-4, rtol=1e-3)
    text, mask = torch_backend.encode_text(CLASSES[:3])
    ha, hb = torch_backend.encdec(a, text, mask, return_state=True), ov.encdec(b, text, mask, return_state=True)
    for key in ("logits", "boxes", "presence"):
        torch.testing.assert_close(hb[key], ha[key], atol=1e-4, rtol=1e-3)
    pairs = torch.tensor([[0, 0], [0, 2]])
    torch.testing.assert_close(ov.masks(b, hb, text, mask, pairs), torch_backend.masks(a, ha, text, mask, pairs),
                               atol=1e-3, rtol=1e-3)


def test_without_a_mask_output_the_backbone_is_compiled_for_the_1x_level(tmp_path, engines, tiny_loaded, tiny_ckpt):
    """With an encoder-decoder exported without masks (the default), OpenVINO compiles the backbone for the 1x level
    alone (the two finer levels feed only the mask decoder): that level is the full graph's, and the detections are
    the torch backend's. A call that asks for every level (masks=True) compiles the whole backbone then."""
    engines_with_encdec(tmp_path, engines, tiny_loaded, max_classes=3)
    ov = openvino(tmp_path, tiny_ckpt).backend
    assert not ov.supports_masks and list(ov._backbones) == [False]
    pixels = preprocess([to_rgb(make_image(seed=2))], TINY_IMGSZ)
    alone, whole = ov.backbone(pixels, masks=False), ov.backbone(pixels)
    assert alone[0] is None and alone[1] is None and all(level is not None for level in whole)
    assert sorted(ov._backbones) == [False, True]
    two = ov.backbone(torch.cat([pixels, pixels]), masks=False)  # engines run image by image, then concatenate
    assert two[0] is None and two[1] is None and torch.equal(two[2][1:], alone[2])
    torch.testing.assert_close(alone[2], whole[2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone[2], TorchBackend(tiny_loaded, device="cpu").backbone(pixels)[2],
                               atol=1e-4, rtol=1e-3)
    image = make_image(seed=4)
    torch_det = Detector(TorchBackend(tiny_loaded, device="cpu"), CLASSES, conf=0.05)
    assert_same(torch_det.detect(image), openvino(tmp_path, tiny_ckpt, classes=CLASSES, conf=0.05).detect(image))


def test_encdec_compiled_per_class_count(engines, tiny_loaded, tiny_ckpt, monkeypatch):
    """The encoder-decoder is compiled for the shapes it is fed (faster than the dynamic file on OpenVINO), once
    per class count, the least recently used dropped beyond STATIC_KEPT; every count gives the torch outputs."""
    import dart.backends.openvino_backend as module

    monkeypatch.setattr(module, "STATIC_KEPT", 2)
    torch_backend = TorchBackend(tiny_loaded, device="cpu")
    ov = openvino(engines, tiny_ckpt).backend
    pixels = preprocess([to_rgb(make_image(seed=4))], TINY_IMGSZ)
    a, b = torch_backend.backbone(pixels), ov.backbone(pixels)
    seen = []
    for count in (1, 2, 1, 3):
        text, mask = torch_backend.encode_text(CLASSES[:count])
        ha, hb = torch_backend.encdec(a, text, mask), ov.encdec(b, text, mask)
        for key in ("logits", "boxes", "presence"):
            torch.testing.assert_close(hb[key], ha[key], atol=1e-4, rtol=1e-3)
        seen.append([dict(key)["text"][0] for key in ov._static])
    assert seen == [[1], [1, 2], [2, 1], [1, 3]]  # 1 reused, then 2 dropped as least recently used


def test_same_detections_as_torch(engines, tiny_loaded, tiny_ckpt):
    image = make_image(120, 200, seed=3)
    torch_det = Detector(TorchBackend(tiny_loaded, device="cpu"), CLASSES, conf=0.1, masks=True)
    ov_det = openvino(engines, tiny_ckpt, classes=CLASSES, conf=0.1, masks=True)
    assert_same(torch_det.detect(image), ov_det.detect(image))
    for a, b in zip(torch_det.detect_batch([image, make_image(seed=5)]), ov_det.detect_batch([image, make_image(seed=5)])):
        assert_same(a, b)


def test_bf16_hint_stays_close_and_says_what_ran(engines, tiny_loaded, tiny_ckpt):
    ov = openvino(engines, tiny_ckpt, precision="bf16").backend
    import openvino as ov_runtime

    native = "BF16" in ov_runtime.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert ov.precision == ("bf16" if native else "fp32")  # OpenVINO runs bf16 only where the CPU has it natively
    pixels = preprocess([to_rgb(make_image(seed=2))], TINY_IMGSZ)
    reference = TorchBackend(tiny_loaded, device="cpu").backbone(pixels)
    for x, y in zip(reference, ov.backbone(pixels)):
        assert torch.nn.functional.cosine_similarity(x.flatten(), y.flatten(), dim=0) > 0.99
    with pytest.raises(InputError, match="fp32 or bf16, not fp16"):
        openvino(engines, tiny_ckpt, precision="fp16")
    with pytest.raises(InputError, match="runs on the CPU"):
        Detector.from_engines(engines=engines, backend="openvino", device="cuda", checkpoint=tiny_ckpt)


def test_detect_video_eval_and_bench_end_to_end(tmp_path, engines, tiny_ckpt, image_file):
    """The CLI runs the backend through every command that runs a detector, and says what ran."""
    import cv2

    from dart.backends.torch_backend import TorchBackend as _  # noqa: F401 - the text encoder comes from -m
    from tests.coco_data import write_dataset

    runner, app = CliRunner(), build_app()
    common = ["--backend", "openvino", "--engines", str(engines), "-m", str(tiny_ckpt), "--device", "cpu"]
    res = runner.invoke(app, ["detect", str(image_file), "-c", "person", "car", "-o", str(tmp_path / "d"), *common,
                              "--conf", "0.05"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "d" / "street.json").read_text())["detections"]
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 90))
    for i in range(4):
        writer.write(make_image(seed=i))
    writer.release()
    res = runner.invoke(app, ["video", str(clip), "-c", "person", "--save-jsonl", str(tmp_path / "v.jsonl"), *common,
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "v.jsonl").read_text().splitlines()) == 4 and "openvino on cpu" in res.output
    images, annotations = write_dataset(tmp_path / "coco", categories=["person", "car", "dog"])
    res = runner.invoke(app, ["eval", "coco", "--images", str(images), "--annotations", str(annotations),
                              "--categories", "dataset", "-o", str(tmp_path / "e"), *common, "--max-images", "2"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "e" / "summary.json").read_text())["settings"]["runs_on"]["backend"] == "openvino"
    res = runner.invoke(app, ["bench", "class-scaling", *common, "--imgsz", str(TINY_IMGSZ), "--classes-counts", "1",
                              "--runs", "1", "--warmup", "0", "-o", str(tmp_path / "b"),
                              "--backend", "torch,openvino"])
    assert res.exit_code == 0, res.output
    setups = json.loads((tmp_path / "b" / "class_scaling.json").read_text())["setups"]
    assert [(s["name"], s["backend"]) for s in setups] == [("torch", "torch"), ("openvino", "openvino")]
    assert np.isfinite(setups[1]["rows"][0]["fps"])


def test_onnx_files_run_on_openvino_on_a_cpu_where_it_is_installed(engines):
    from dart.setup import Setup

    assert Setup(engines=str(engines), device="cpu").engine_kind() == "openvino"
    assert Setup(engines=str(engines), device="cuda").engine_kind() == "onnxruntime"  # its CUDA provider
    assert Setup(engines=str(engines), device="cpu", backend="onnxruntime").engine_kind() == "onnxruntime"
