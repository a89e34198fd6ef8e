"""The onnxruntime backend runs the same Detector as PyTorch and gives the same detections."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from dart.backends.torch_backend import TorchBackend
from dart.detector import Detector
from dart.errors import CacheError, InputError
from tests.conftest import make_image
from tests.export_helpers import engines_with_encdec, tiny_engines
from tests.tiny import TINY_IMGSZ, save_tiny_checkpoint

CLASSES = ["person", "car", "dog", "cat", "bus"]  # 5 classes > the engine's 3: chunked


@pytest.fixture(scope="module")
def engines(tmp_path_factory, tiny_ckpt):
    return tiny_engines(tmp_path_factory, tiny_ckpt)


def assert_same(a, b):
    assert len(a) == len(b) > 0
    order_a, order_b = np.lexsort((a.scores, a.class_ids)), np.lexsort((b.scores, b.class_ids))
    np.testing.assert_array_equal(a.class_ids[order_a], b.class_ids[order_b])
    np.testing.assert_allclose(a.scores[order_a], b.scores[order_b], atol=1e-4)
    np.testing.assert_allclose(a.xyxy[order_a], b.xyxy[order_b], atol=1e-2)
    if a.masks is not None:
        mismatch = (a.masks[order_a] != b.masks[order_b]).mean()
        assert mismatch < 1e-3


def test_same_detections_as_torch(engines, tiny_loaded, tiny_ckpt):
    image = make_image(120, 200, seed=3)
    torch_det = Detector(TorchBackend(tiny_loaded, device="cpu"), CLASSES, conf=0.1, masks=True)
    ort_det = Detector.from_engines(engines / "backbone.onnx", engines / "encdec.onnx", CLASSES, backend="onnxruntime",
                                    device="cpu", checkpoint=tiny_ckpt, conf=0.1, masks=True)
    assert ort_det.backend.name == "onnxruntime" and ort_det.max_classes_per_batch == 3
    assert_same(torch_det.detect(image), ort_det.detect(image))
    batch_t = torch_det.detect_batch([image, make_image(seed=5)])
    batch_o = ort_det.detect_batch([image, make_image(seed=5)])
    for a, b in zip(batch_t, batch_o):
        assert_same(a, b)


def test_class_counts_one_to_max(engines, tiny_loaded, tiny_ckpt):
    image = make_image(seed=7)
    torch_det = Detector(TorchBackend(tiny_loaded, device="cpu"), conf=0.05)
    ort_det = Detector.from_engines(engines=engines, backend="onnxruntime", device="cpu", checkpoint=tiny_ckpt,
                                    conf=0.05)
    for count in (1, 2, 3):
        torch_det.set_classes(CLASSES[:count])
        ort_det.set_classes(CLASSES[:count])
        assert_same(torch_det.detect(image), ort_det.detect(image))


def test_fixed_class_engine_pads(tmp_path, engines, tiny_loaded, tiny_ckpt):
    engines_with_encdec(tmp_path, engines, tiny_loaded, max_classes=2, dynamic_classes=False)
    image = make_image(seed=2)
    torch_det = Detector(TorchBackend(tiny_loaded, device="cpu"), conf=0.05)
    ort_det = Detector.from_engines(engines=tmp_path, backend="onnxruntime", device="cpu", checkpoint=tiny_ckpt,
                                    conf=0.05)
    assert not ort_det.backend.dynamic_classes
    for names in (CLASSES[:1], CLASSES[:3]):  # fewer than 2: padded; more: chunked then padded
        torch_det.set_classes(names)
        ort_det.set_classes(names)
        assert_same(torch_det.detect(image), ort_det.detect(image))


def test_cpu_runs_a_wide_dynamic_export_four_classes_a_call(tmp_path, engines, tiny_loaded, tiny_ckpt):
    """An export for 6 classes a call runs 4 at a time on the CPU provider (its attention memory grows with each
    class), and 6 classes still detect what PyTorch detects."""
    from dart.backends.onnxruntime_backend import CPU_CLASSES_PER_CALL

    engines_with_encdec(tmp_path, engines, tiny_loaded, max_classes=6)
    image = make_image(seed=4)
    torch_det = Detector(TorchBackend(tiny_loaded, device="cpu"), CLASSES + ["tree"], conf=0.05)
    ort_det = Detector.from_engines(engines=tmp_path, classes=CLASSES + ["tree"], backend="onnxruntime", device="cpu",
                                    checkpoint=tiny_ckpt, conf=0.05)
    assert ort_det.backend.encdec_meta.max_classes == 6
    assert ort_det.backend.max_classes == ort_det.max_classes_per_batch == CPU_CLASSES_PER_CALL == 4
    calls = []
    run = ort_det.backend._run_encdec
    ort_det.backend._run_encdec = lambda inputs: calls.append(inputs["text"].shape[0]) or run(inputs)
    assert_same(torch_det.detect(image), ort_det.detect(image))
    assert calls == [4, 2]


def test_complete_text_cache_never_loads_pytorch(engines, tiny_loaded, tmp_path, monkeypatch):
    cache = tmp_path / "text.safetensors"
    Detector(TorchBackend(tiny_loaded, device="cpu"), CLASSES[:3], text_cache=cache)  # writes the cache
    import dart.models.loading as loading

    def forbidden(*args, **kwargs):
        raise AssertionError("the PyTorch model was loaded")

    monkeypatch.setattr(loading, "load_sam3", forbidden)
    det = Detector.from_engines(engines=engines, classes=CLASSES[:3], backend="onnxruntime", device="cpu",
                                checkpoint="facebook/sam3", text_cache=cache)
    assert len(det.detect(make_image())) >= 0
    with pytest.raises(AssertionError, match="was loaded"):  # a new name needs the text encoder
        det.set_classes(["bird"])
    nocheck = Detector.from_engines(engines=engines, backend="onnxruntime", device="cpu", text_cache=cache)
    with pytest.raises(CacheError, match="not in the text cache"):
        nocheck.set_classes(["bird"])


def test_engines_folder_text_cache_is_used_without_flag(engines, tiny_loaded, tmp_path, monkeypatch):
    """An engines folder holding text.safetensors (as the TensorRT quick start writes it) needs no --text-cache."""
    import shutil

    from dart.setup import Setup

    folder = tmp_path / "engines"
    shutil.copytree(engines, folder)
    Detector(TorchBackend(tiny_loaded, device="cpu"), CLASSES[:3], text_cache=folder / "text.safetensors")
    import dart.models.loading as loading

    def forbidden(*args, **kwargs):
        raise AssertionError("the PyTorch model was loaded")

    monkeypatch.setattr(loading, "load_sam3", forbidden)
    setup = Setup(engines=str(folder), device="cpu")
    assert setup.engines_text_cache() == str(folder / "text.safetensors")
    det = setup.build_detector(CLASSES[:3], conf=0.1)
    assert det.classes == CLASSES[:3] and len(det.detect(make_image())) >= 0
    assert Setup(engines=str(engines), device="cpu").engines_text_cache() is None  # none there: none used


def test_text_cache_built_for_an_engines_folder(engines, tiny_ckpt, tmp_path):
    """`dart text-cache build --engines DIR` checks the checkpoint is the engines' own and writes DIR/text.safetensors."""
    import shutil

    from typer.testing import CliRunner

    from dart.cli import build_app
    from dart.text_cache import read_cache_info

    folder = tmp_path / "engines"
    shutil.copytree(engines, folder)
    args = ["text-cache", "build", "--engines", str(folder), "-c", "person", "car", "--device", "cpu"]
    res = CliRunner().invoke(build_app(), [*args, "--checkpoint", str(tiny_ckpt)])
    assert res.exit_code == 0, res.output
    assert read_cache_info(folder / "text.safetensors")["classes"] == ["person", "car"]
    other = save_tiny_checkpoint(tmp_path / "other", seed=1)
    res = CliRunner().invoke(build_app(), [*args, "--checkpoint", str(other)])
    assert res.exit_code == 2 and "were exported from checkpoint" in res.output
    res = CliRunner().invoke(build_app(), ["text-cache", "build", "-c", "person", "--checkpoint", str(tiny_ckpt)])
    assert res.exit_code == 2 and "say where the cache goes" in res.output


def test_text_encoder_from_another_checkpoint_is_refused(engines, tmp_path):
    other = save_tiny_checkpoint(tmp_path / "other", seed=1)
    det = Detector.from_engines(engines=engines, backend="onnxruntime", device="cpu", checkpoint=other)
    with pytest.raises(InputError, match="engines were built from checkpoint .* is [0-9a-f]{16}"):
        det.set_classes(["person"])


def test_mismatched_stages_are_refused(engines, tmp_path):
    from dart.export.metadata import read_onnx_metadata, write_onnx_metadata

    model = onnx.load(str(engines / "encdec.onnx"))
    meta = read_onnx_metadata(engines / "encdec.onnx")
    meta.imgsz = 224
    write_onnx_metadata(model, meta)
    onnx.save(model, str(tmp_path / "encdec.onnx"))
    with pytest.raises(InputError, match="imgsz 112 but the encoder-decoder at imgsz 224"):
        Detector.from_engines(engines / "backbone.onnx", tmp_path / "encdec.onnx", backend="onnxruntime")
    with pytest.raises(InputError, match="holds the backbone stage"):
        Detector.from_engines(engines / "backbone.onnx", engines / "backbone.onnx", backend="onnxruntime")
    with pytest.raises(InputError, match="has no backbone.engine"):
        Detector.from_engines(engines=engines, backend="tensorrt")
    with pytest.raises(InputError, match="was built for imgsz 112, not imgsz 224"):
        Detector.from_engines(engines=engines, backend="onnxruntime", imgsz=224)


def test_cli_detect_and_export(engines, tiny_loaded, tiny_ckpt, tmp_path):
    from dart.cli import build_app

    cache = tmp_path / "text.safetensors"
    Detector(TorchBackend(tiny_loaded, device="cpu"), ["person", "car"], text_cache=cache)
    image = tmp_path / "street.jpg"
    import cv2

    cv2.imwrite(str(image), make_image())
    app, runner = build_app(), CliRunner()
    args = ["detect", str(image), "--engines", str(engines), "--text-cache", str(cache), "--conf", "0.05",
            "-o", str(tmp_path / "out"), "-c", "person", "car"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "street.json").is_file()
    # (--overwrite: the output folder is checked first, and holds the results of the run above)
    result = runner.invoke(app, [*args, "--imgsz", "224", "--overwrite"])
    assert result.exit_code == 2 and "built for imgsz 112, not imgsz 224" in result.output
    result = runner.invoke(app, [*args, "--skip-blocks", "1", "--overwrite"])
    assert result.exit_code == 2 and "pruning 'none', not 'skip 1'" in result.output
    out = tmp_path / "e.onnx"
    result = runner.invoke(app, ["export", "encdec", "-m", str(tiny_ckpt), "--imgsz", str(TINY_IMGSZ),
                                 "--max-classes", "2", "--no-simplify", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "onnxruntime vs PyTorch" in result.output and out.is_file()
    folder = tmp_path / "engines"  # -o without an .onnx suffix is a folder: the stage's usual name goes in it
    result = runner.invoke(app, ["export", "encdec", "-m", str(tiny_ckpt), "--imgsz", str(TINY_IMGSZ),
                                 "--max-classes", "2", "--no-simplify", "--no-verify", "-o", f"{folder}/"])
    assert result.exit_code == 0, result.output
    assert (folder / "encdec.onnx").is_file() and out.is_file()
    result = runner.invoke(app, ["export", "backbone", "-m", str(tiny_ckpt), "--imgsz", "100", "-o", str(out)])
    assert result.exit_code == 2 and "multiple of 14" in result.output
