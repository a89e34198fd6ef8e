"""TensorRT engines (run only with a CUDA GPU and TensorRT; skipped otherwise) and the no-GPU refusal."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from dart.detector import Detector
from dart.errors import DependencyError
from tests.conftest import make_image
from tests.export_helpers import tiny_engines

CLASSES = ["person", "car", "dog", "cat", "bus"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_build_without_gpu_is_one_sentence(tmp_path_factory, tiny_ckpt, tmp_path):
    from dart.export.tensorrt_build import build_engine

    folder = tiny_engines(tmp_path_factory, tiny_ckpt)
    with pytest.raises(DependencyError, match="needs a CUDA GPU"):
        build_engine(folder / "backbone.onnx", tmp_path / "backbone.engine")
    assert not (tmp_path / "backbone.engine").exists()


@pytest.fixture(scope="module")
def trt_engines(tmp_path_factory, tiny_ckpt):
    from dart.export.tensorrt_build import build_engine

    onnx_dir = tiny_engines(tmp_path_factory, tiny_ckpt)
    out = tmp_path_factory.mktemp("trt")
    for stage in ("backbone", "encdec"):
        build_engine(onnx_dir / f"{stage}.onnx", out / f"fp32/{stage}.engine", fp16=False)
        build_engine(onnx_dir / f"{stage}.onnx", out / f"fp16/{stage}.engine", fp16=True)
    return out


@pytest.mark.cuda
@pytest.mark.tensorrt
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_tensorrt_fp32_matches_torch(trt_engines, tiny_loaded, tiny_ckpt, cuda_graph):
    from dart.backends.torch_backend import TorchBackend

    image = make_image(120, 200, seed=3)
    ref = Detector(TorchBackend(copy.deepcopy(tiny_loaded), device="cuda"), CLASSES, conf=0.1, masks=True)
    det = Detector.from_engines(engines=trt_engines / "fp32", classes=CLASSES, backend="tensorrt", checkpoint=tiny_ckpt,
                                conf=0.1, masks=True, backend_options={"cuda_graph": cuda_graph})
    assert det.backend.device.type == "cuda" and det.max_classes_per_batch == 3
    for _ in range(3):  # the third call replays the captured graph
        a, b = ref.detect(image), det.detect(image)
        assert len(a) == len(b) > 0
        np.testing.assert_allclose(np.sort(a.scores), np.sort(b.scores), atol=1e-3)


@pytest.mark.cuda
@pytest.mark.tensorrt
def test_tensorrt_fp16_close_and_features_stay_on_gpu(trt_engines, tiny_ckpt):
    from dart.export.verify import cosine
    from dart.preprocess import preprocess, to_rgb

    fp32 = Detector.from_engines(engines=trt_engines / "fp32", backend="tensorrt", checkpoint=tiny_ckpt)
    fp16 = Detector.from_engines(engines=trt_engines / "fp16", backend="tensorrt", checkpoint=tiny_ckpt)
    pixels = preprocess([to_rgb(make_image())], fp32.backend.imgsz, "cuda")
    a, b = fp32.backend.backbone(pixels), fp16.backend.backbone(pixels)
    assert all(t.is_cuda for t in b)
    assert min(cosine(x, y) for x, y in zip(a, b)) > 0.99
    assert fp16.backend.backbone_meta.precision == "fp16"


@pytest.mark.cuda
@pytest.mark.tensorrt
def test_precision_spec_build(tmp_path_factory, tiny_ckpt, tmp_path):
    from dart.export.mixed_precision import PrecisionSpec
    from dart.export.tensorrt_build import build_engine

    onnx_dir = tiny_engines(tmp_path_factory, tiny_ckpt)
    result = build_engine(onnx_dir / "backbone.onnx", tmp_path / "backbone.engine", fp16=True,
                          precision=PrecisionSpec.parse("1,2"), timing_cache=tmp_path / "timing.cache")
    assert result.fp32_nodes and (tmp_path / "timing.cache").stat().st_size > 0
    assert result.metadata.fp32_layers == ["block 1", "block 2"]


@pytest.mark.cuda
@pytest.mark.tensorrt
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_tensorrt_two_stream_video_equals_sequential(trt_engines, tiny_ckpt, tmp_path, cuda_graph):
    """dart video on engines: the backbone engine (frame t+1) and the encoder-decoder engine (frame t) run on the
    pipeline's two streams, with or without CUDA graphs, and give the sequential run's detections."""
    import cv2

    from dart.video import run_video, same_detections

    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (200, 120))
    for i in range(10):
        writer.write(np.ascontiguousarray(np.roll(make_image(120, 200, seed=3), 3 * i, axis=1)))
    writer.release()
    det = Detector.from_engines(engines=trt_engines / "fp32", classes=CLASSES, backend="tensorrt", checkpoint=tiny_ckpt,
                                conf=0.1, backend_options={"cuda_graph": cuda_graph})
    runs = {}
    for sequential in (True, False):
        dets = []
        result = run_video(det, path, sequential=sequential, progress=False,
                           on_frame=lambda frame, d: dets.append(d))
        assert result.frames == 10
        runs[sequential] = dets
    assert same_detections(runs[True], runs[False], atol=1e-4)
    assert sum(len(d) for d in runs[True]) > 0
