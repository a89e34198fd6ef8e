"""How speed scales with the number of classes: FPS and per-stage milliseconds (backbone, encoder-decoder,
post-processing) for each requested class count and setup.

The backbone runs once per image whatever the number of classes; the encoder-decoder runs batched over the
classes (in chunks of ``max_classes``), so its cost grows with them. Every point is the median of ``runs`` timed
``detect`` calls after ``warmup`` untimed ones; stages are timed with CUDA events on a GPU and with the wall clock
on the CPU; the end-to-end time per image is synchronised wall clock.

>>> from dart.bench.class_scaling import class_scaling
>>> rows = class_scaling(detector, [1, 4, 16, 80], image, warmup=5, runs=20)
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dart.bench.plot import line_plot
from dart.classes import COCO80
from dart.errors import InputError
from dart.io import write_json

DEFAULT_COUNTS = (1, 2, 4, 8, 16, 80)
STAGE_COLUMNS = ("preprocess", "backbone", "encdec", "post")


def parse_counts(text: str | Sequence[int]) -> list[int]:
    """``"1,2,4,8"`` -> ``[1, 2, 4, 8]`` (sorted, unique, each at least 1)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    counts = []
    for item in items:
        value = str(item).strip()
        if not value:
            continue
        if not value.isdigit() or int(value) < 1:
            raise InputError(f"--classes-counts takes positive whole numbers like 1,2,4,8,16,80; got '{value}'.")
        counts.append(int(value))
    if not counts:
        raise InputError("--classes-counts is empty; give class counts like 1,2,4,8,16,80.")
    return sorted(set(counts))


def class_names(count: int) -> list[str]:
    """The first ``count`` COCO names, then ``object 81``, ``object 82`` ... beyond 80."""
    return list(COCO80[:count]) + [f"object {i + 1}" for i in range(80, count)]


def bench_image(path: str | Path | None = None, size: tuple[int, int] = (720, 1280)) -> np.ndarray:
    """The image to time: a file, or a fixed synthetic BGR frame (speed does not depend on the content)."""
    if path is not None:
        from dart.preprocess import load_image

        return load_image(path)
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)


def class_scaling(detector, counts: Sequence[int], image: np.ndarray, *, warmup: int = 3, runs: int = 10,
                  prepare: Callable[[list[str]], None] | None = None,
                  on_point: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Time ``detector.detect(image)`` for every class count; one row per count:
    ``{"classes", "fps", "total_ms", "preprocess_ms", "backbone_ms", "encdec_ms", "post_ms", "runs"}`` (medians).

    ``prepare(names)`` runs before ``set_classes`` (synthetic setups seed random text features there).
    """
    from dart.bench.timing import stage_timer, time_calls  # torch: this module's parsers are used before it

    device = detector.backend.device
    rows = []
    for count in counts:
        names = class_names(count)
        if prepare is not None:
            prepare(names)
        detector.set_classes(names)
        timer = stage_timer(device)
        previous = detector.timer
        for _ in range(max(0, warmup)):
            detector.detect(image)
        detector.timer = timer
        try:
            totals = time_calls(lambda: detector.detect(image), device, warmup=0, runs=runs)
        finally:
            detector.timer = previous
        stages = timer.summary()
        total = statistics.median(totals)
        row: dict[str, Any] = {"classes": count, "fps": 1000.0 / total if total > 0 else float("inf"),
                               "total_ms": total}
        for stage in STAGE_COLUMNS:
            row[f"{stage}_ms"] = stages.get(stage, {}).get("median", 0.0)
        row["runs"] = len(totals)
        rows.append(row)
        if on_point is not None:
            on_point(row)
    return rows


def write_report(report: dict[str, Any], output: str | Path, stem: str = "class_scaling") -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.png`` (FPS vs classes, one line per setup) into ``output``."""
    output = Path(output)
    json_path, png_path = output / f"{stem}.json", output / f"{stem}.png"
    write_json(json_path, report)
    series = {s["label"]: [(r["classes"], r["fps"]) for r in s["rows"]] for s in report["setups"]}
    env = report["environment"]
    line_plot(series, png_path, title="FPS vs number of classes", xlabel="classes", ylabel="FPS",
              subtitle=f"{env['device']}, {report['settings']['imgsz_note']}")
    return json_path, png_path


def make_report(setups: list[dict[str, Any]], device: Any, settings: dict[str, Any]) -> dict[str, Any]:
    from dart.bench.environment import environment, header

    env = environment(device)
    return {"benchmark": "class-scaling", "environment": env, "header": header(env), "settings": settings,
            "setups": setups}
