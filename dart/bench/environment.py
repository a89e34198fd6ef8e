"""What a benchmark ran on: the device and the versions that matter, for every table header and JSON file."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

import torch

from dart import __version__

OPTIONAL = ("onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt", "timm", "sam3")


def device_name(device: torch.device | str) -> str:
    """``NVIDIA H100 80GB HBM3 (cuda:0)`` or ``CPU x86_64, 16 threads``."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"{torch.cuda.get_device_name(index)} (cuda:{index})"
    processor = platform.processor() or platform.machine()
    return f"CPU {processor}, {torch.get_num_threads()} threads of {os.cpu_count()} cores"


def environment(device: torch.device | str) -> dict[str, Any]:
    """Device, OS, Python and library versions (``None`` for optional libraries that are not installed)."""
    versions: dict[str, Any] = {
        "dart": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
    }
    for name in ("transformers", *OPTIONAL):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name not in ("onnxruntime-gpu",):
                versions[name] = None
    return {"device": device_name(device), "platform": platform.platform(), "versions": versions}


def header(env: dict[str, Any]) -> str:
    """One line for the top of a table: the device and the versions that are installed."""
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v is not None)
    return f"{env['device']} | {versions}"
