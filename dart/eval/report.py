"""Rich tables for evaluation results."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.table import Table

from dart.eval.coco import TABLE_METRICS


def _cell(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value < 0:  # pycocotools: -1 means no ground truth in that area range
        return "n/a"
    return f"{100.0 * value:.1f}"


def metrics_table(rows: Sequence[tuple[str, str, dict[str, float]]], title: str = "COCO evaluation") -> Table:
    """One row per ``(setup, iou_type, metrics)``; numbers in percent, as papers report COCO AP."""
    table = Table(title=title, title_justify="left")
    table.add_column("setup", style="bold")
    table.add_column("type")
    for metric in TABLE_METRICS:
        table.add_column(metric, justify="right")
    for setup, iou_type, metrics in rows:
        table.add_row(setup, iou_type, *[_cell(metrics.get(m)) for m in TABLE_METRICS])
    table.caption = "AP in % (pycocotools COCOeval); AP_S/M/L: small, medium, large objects"
    return table
