"""Rich tables for distillation runs."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def history_table(history: list[dict[str, Any]], title: str = "distillation") -> Table:
    """One row per epoch: step, train loss, validation loss and validation cosine per FPN level."""
    table = Table(title=title, title_justify="left")
    for name in ("epoch", "step", "train loss", "val loss", "cos 4x", "cos 2x", "cos 1x", "lr"):
        table.add_column(name, justify="right")
    for rec in history:
        cos = rec.get("val_cosine") or ["", "", ""]
        table.add_row(str(rec["epoch"]), str(rec["step"]), f"{rec['train_loss']:.4g}",
                      f"{rec['val_loss']:.4g}" if "val_loss" in rec else "",
                      *[f"{c:.4f}" if c != "" else "" for c in cos], f"{rec['lr']:.2e}")
    if not history:
        table.caption = "no epochs were run"
    return table
