"""Synthetic (random-initialised) SAM3 models for speed measurements.

Speed does not depend on the weight values, so ``dart bench --synthetic`` measures a randomly initialised model
of the full SAM3 size (or of a config the user gives) without downloading the gated weights. Such a model's
detections are meaningless: every result made with it is labelled ``synthetic``, and ``dart eval`` refuses it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dart.errors import InputError
from dart.models.loading import LoadedSam3
from dart.models.sam3 import DEFAULT_IMGSZ, fingerprint_model, follow_meta, set_image_size

SYNTHETIC_SOURCE = "synthetic"


def synthetic_config(config: str | Path | None = None):
    """SAM3's default (full-size) ``Sam3Config``, or the one in a ``config.json`` file / a folder holding one."""
    from transformers import Sam3Config

    if config is None:
        return Sam3Config()
    path = Path(config)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise InputError(f"synthetic config '{config}' does not exist; pass a Sam3Config JSON file or a folder with "
                         "config.json.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Sam3Config(**{k: v for k, v in data.items() if k not in {"architectures", "transformers_version"}})
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"synthetic config '{path}' is not a valid Sam3Config JSON ({exc}).") from exc


def synthetic_sam3(config: str | Path | None = None, *, imgsz: int = DEFAULT_IMGSZ, seed: int = 0) -> LoadedSam3:
    """A random-initialised SAM3 (float32, CPU, eval mode) set up for ``imgsz``; it has no tokenizer."""
    from transformers import Sam3Model
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    cfg = synthetic_config(config)
    torch.manual_seed(seed)
    model = follow_meta(Sam3Model(cfg).eval())
    fingerprint = "synthetic-" + fingerprint_model(model)[:7]
    set_image_size(model, imgsz)
    return LoadedSam3(model=model, fingerprint=fingerprint, source=SYNTHETIC_SOURCE, tokenizer_source=None)
