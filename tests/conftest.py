from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.tiny import TINY_IMGSZ, save_tiny_checkpoint

# Every model in the suite is tiny: one intra-op thread is faster than several, and avoids oversubscribing
# a 2-core CI machine. Commands run in-process set their threads from DART_THREADS (default: every CPU).
torch.set_num_threads(1)
os.environ.setdefault("DART_THREADS", "1")
# The CLI's default precision is auto (bf16 on a CPU that computes it natively); tests compare numbers across
# backends and machines, so their commands run in fp32 unless a test asks otherwise.
os.environ.setdefault("DART_PRECISION", "fp32")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run the tests marked slow (minutes each on a CPU; their results are recorded in "
                          "BENCHMARKS.md or the session notes)")


def pytest_collection_modifyitems(config, items):
    has_cuda = torch.cuda.is_available()
    run_slow = config.getoption("--runslow")
    try:
        import tensorrt  # noqa: F401

        has_trt = has_cuda
    except ImportError:
        has_trt = False
    for item in items:
        if "cuda" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "tensorrt" in item.keywords and not has_trt:
            item.add_marker(pytest.mark.skip(reason="needs TensorRT and a CUDA GPU"))
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: run with --runslow"))


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A tiny random SAM3 checkpoint folder in transformers format, with a tokenizer."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny_sam3"))


@pytest.fixture(scope="session")
def tiny_loaded(tiny_ckpt):
    from dart.models.loading import load_sam3

    return load_sam3(tiny_ckpt, imgsz=TINY_IMGSZ)


@pytest.fixture(scope="session")
def tiny_backend(tiny_loaded):
    from dart.backends.torch_backend import TorchBackend

    return TorchBackend(tiny_loaded, device="cpu")


def make_image(height: int = 90, width: int = 160, seed: int = 0) -> np.ndarray:
    """A BGR test image with a few coloured shapes."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
    cv2.rectangle(img, (width // 8, height // 6), (width // 2, height // 2), (0, 0, 255), -1)
    cv2.circle(img, (3 * width // 4, 2 * height // 3), min(height, width) // 6, (255, 200, 0), -1)
    return img


def image_folder(folder: Path, count: int) -> Path:
    """``folder`` with ``count`` different test images ``im0.png`` ... (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        cv2.imwrite(str(folder / f"im{i}.png"), make_image(90, 160, seed=i))
    return folder


@pytest.fixture()
def image_file(tmp_path) -> Path:
    path = tmp_path / "street.jpg"
    cv2.imwrite(str(path), make_image())
    return path
