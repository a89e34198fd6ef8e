"""Latency of every registered backbone (``dart bench backbones`` renders :func:`benchmark_backbones`).

Latency does not depend on the weights, so without a checkpoint the SAM3 vision encoder is built from SAM3's
default config with random weights (no download) and students are built without their ImageNet weights.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dart.pruning.spec import PruneSpec


class _VisionOnly(nn.Module):
    """Just what backbones need from a ``Sam3Model``: ``config`` and ``vision_encoder``."""

    def __init__(self, config: Any, vision_encoder: nn.Module):
        super().__init__()
        self.config = config
        self.vision_encoder = vision_encoder


def sam3_vision(checkpoint: str | Path | None = None, config: Any = None, imgsz: int = 1008) -> nn.Module:
    """A model with SAM3's ``vision_encoder``: from ``checkpoint``, else randomly initialised from ``config``
    (default: SAM3's own ``Sam3Config()``)."""
    from dart.models.sam3 import set_image_size

    if checkpoint is not None:
        from dart.models.loading import load_sam3

        model = load_sam3(checkpoint, imgsz=imgsz).model
        return _VisionOnly(model.config, model.vision_encoder)
    from transformers import Sam3Config
    from transformers.models.sam3.modeling_sam3 import Sam3VisionModel

    config = copy.deepcopy(config) if config is not None else Sam3Config()
    holder = _VisionOnly(config, Sam3VisionModel(config.vision_config).eval())
    set_image_size(holder, imgsz)
    return holder


@torch.inference_mode()
def time_module(module: nn.Module, pixels: torch.Tensor, *, warmup: int = 3, runs: int = 10) -> list[float]:
    """Milliseconds of ``runs`` forward passes after ``warmup`` untimed ones (CUDA-synchronised)."""
    cuda = pixels.device.type == "cuda"
    for _ in range(max(0, warmup)):
        module(pixels)
    times = []
    for _ in range(max(1, runs)):
        if cuda:
            torch.cuda.synchronize(pixels.device)
        start = time.perf_counter()
        module(pixels)
        if cuda:
            torch.cuda.synchronize(pixels.device)
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def benchmark_backbones(
    imgsz: int = 1008,
    device: str | torch.device = "auto",
    runs: int = 10,
    *,
    warmup: int = 3,
    names: Sequence[str] | None = None,
    precision: str = "fp32",
    batch: int = 1,
    checkpoint: str | Path | None = None,
    sam3_config: Any = None,
    prune: PruneSpec | None = None,
) -> list[dict[str, Any]]:
    """Time every registered backbone (or ``names``) on ``device``; one dict per backbone.

    Keys: ``backbone``, ``params_m``, ``imgsz``, ``batch``, ``device``, ``precision``, ``median_ms``,
    ``mean_ms``, ``min_ms``, ``fps`` (images per second) and ``error`` (``None``, or why it could not run:
    a backbone that fails is reported, the others still run). With ``prune``, a ``sam3 (pruned …)`` row follows
    the full ``sam3`` row.
    """
    from dart.backends.base import choose_precision, resolve_device, resolve_precision
    from dart.models.sam3 import validate_imgsz
    from dart.pruning.spec import apply_pruning
    from dart.students.registry import backbone_names, get_factory

    validate_imgsz(imgsz)
    dev = resolve_device(device)
    precision = choose_precision(precision, dev)[0]  # rows record what ran, not "auto"
    dtype = resolve_precision(precision, dev)
    holder = sam3_vision(checkpoint, sam3_config, imgsz)
    pixels = torch.randn(batch, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0)).to(dev, dtype)
    todo: list[tuple[str, Any]] = [(name, None) for name in (names or backbone_names())]
    if prune:
        at = next((i + 1 for i, (n, _) in enumerate(todo) if n == "sam3"), len(todo))
        todo.insert(at, (f"sam3 (pruned: {prune})", prune))
    rows = []
    for name, spec in todo:
        row: dict[str, Any] = {"backbone": name, "params_m": None, "imgsz": imgsz, "batch": batch,
                               "device": _device_name(dev), "precision": precision, "median_ms": None,
                               "mean_ms": None, "min_ms": None, "fps": None, "error": None}
        try:
            if spec is not None:
                pruned = _VisionOnly(holder.config, copy.deepcopy(holder.vision_encoder))
                apply_pruning(pruned, spec)
                module = get_factory("sam3")(pruned)
            else:
                module = get_factory(name)(holder)
            module = module.to(dev, dtype).eval()
            row["params_m"] = sum(p.numel() for p in module.parameters()) / 1e6
            times = time_module(module, pixels, warmup=warmup, runs=runs)
            row.update(median_ms=statistics.median(times), mean_ms=statistics.fmean(times), min_ms=min(times),
                       fps=batch * 1000.0 / statistics.median(times))
        except Exception as exc:  # noqa: BLE001 - one broken backbone must not hide the others
            row["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        finally:
            module = None
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
    return rows


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def backbones_table(rows: list[dict[str, Any]], title: str | None = None):
    """A rich table of :func:`benchmark_backbones` rows, fastest first, with the speed-up over ``sam3``."""
    from rich.table import Table

    base = next((r["median_ms"] for r in rows if r["backbone"] == "sam3" and r["median_ms"]), None)
    first = rows[0] if rows else {}
    table = Table(title=title or f"backbone latency, {first.get('imgsz')}px, batch {first.get('batch')}, "
                                 f"{first.get('precision')} on {first.get('device')}", title_justify="left")
    for name, justify in (("backbone", "left"), ("params (M)", "right"), ("median ms", "right"),
                          ("min ms", "right"), ("images/s", "right"), ("vs sam3", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    ok = sorted((r for r in rows if r["error"] is None), key=lambda r: r["median_ms"])
    for r in ok:
        speed = f"{base / r['median_ms']:.2f}x" if base else ""
        table.add_row(r["backbone"], f"{r['params_m']:.1f}", f"{r['median_ms']:.2f}", f"{r['min_ms']:.2f}",
                      f"{r['fps']:.1f}", speed)
    for r in rows:
        if r["error"] is not None:
            table.add_row(r["backbone"], "", "", "", "", f"[red]{r['error']}[/]")
    return table
