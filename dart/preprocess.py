"""Images in, ``pixel_values`` out — the same numbers as ``transformers``' ``Sam3ImageProcessor``.

SAM3 sees the whole image squashed to ``imgsz x imgsz`` (bilinear, antialiased, on uint8), scaled to [0, 1]
and normalised with mean 0.5 / std 0.5. Because the resize is a plain stretch, a normalised model box maps back
to original pixels by multiplying with ``(W, H, W, H)`` — exactly, for any aspect ratio.

Images are accepted as a path, an OpenCV-style BGR ``uint8`` array ``[H, W, 3]`` (what ``cv2.imread`` and video
decoders return), or a PIL image (RGB). Resizing runs on the model's device.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import cv2
import numpy as np

from dart.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image as PILImage

ImageInput = Union[str, Path, np.ndarray, "PILImage.Image"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
MEAN = 0.5
STD = 0.5


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as a BGR ``uint8`` array; a missing or unreadable file is one clear sentence."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"image '{path}' does not exist.")
    if path.is_dir():
        raise InputError(f"'{path}' is a folder, not an image.")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise InputError(f"cannot read image '{path}': the file is empty, corrupt or not an image format OpenCV knows.")
    return image


def to_rgb(image: ImageInput) -> np.ndarray:
    """Any accepted image input -> contiguous RGB ``uint8 [H, W, 3]``."""
    if isinstance(image, (str, Path)):
        image = load_image(image)
    elif not isinstance(image, np.ndarray):
        if hasattr(image, "convert"):  # PIL
            return np.array(image.convert("RGB"))  # a writable copy: torch warns on read-only arrays
        raise InputError(f"unsupported image type {type(image).__name__}: pass a path, a BGR numpy array or a PIL image.")
    if image.dtype != np.uint8:
        raise InputError(f"image arrays must be uint8, got {image.dtype}.")
    if image.ndim == 2:
        return np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2))
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise InputError(f"image arrays must be [H, W, 3] (BGR), got shape {tuple(image.shape)}.")
    code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(image, code)


def preprocess(
    images: list[np.ndarray], imgsz: int, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> torch.Tensor:
    """RGB ``uint8`` arrays -> normalised ``pixel_values [B, 3, imgsz, imgsz]`` on ``device``.

    The images travel as ``uint8`` (a quarter of float32's bytes) and are resized and normalised where they
    land; to a GPU they go from pinned memory (PyTorch caches those blocks), so the copy is asynchronous and the
    host does not wait for it. ``dtype`` defaults to float32."""
    import torch
    from torchvision.transforms.v2 import functional as tvf

    device = torch.device(device)
    pinned = device.type == "cuda"
    batch = []
    for rgb in images:
        source = torch.from_numpy(rgb)
        if pinned:
            source = source.pin_memory()
        tensor = source.to(device, non_blocking=True).permute(2, 0, 1)
        batch.append(tvf.resize(tensor, [imgsz, imgsz], interpolation=tvf.InterpolationMode.BILINEAR, antialias=True))
    pixels = torch.stack(batch).to(torch.float32).div_(255.0)
    return pixels.sub_(MEAN).div_(STD).to(dtype or torch.float32)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def image_size(image: Any) -> tuple[int, int]:
    """(height, width) of an RGB array."""
    return int(image.shape[0]), int(image.shape[1])
