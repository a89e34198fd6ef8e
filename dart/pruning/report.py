"""Rich tables for prune searches and specs."""

from __future__ import annotations

from rich.table import Table

from dart.pruning.search import LEVEL_NAMES, SearchResult


def _cos(values: list[float]) -> list[str]:
    return [f"{v:.4f}" for v in values]


def importance_table(result: SearchResult, limit: int | None = None) -> Table:
    """Phase 1: every unit removed alone, least important first."""
    table = Table(title=f"phase 1: each {result.granularity} removed alone ({result.num_images} images, "
                        f"{result.imgsz}px), least important first", title_justify="left")
    table.add_column("rank", justify="right", style="dim")
    table.add_column("unit", style="bold")
    table.add_column("attention")
    table.add_column("loss (MSE)", justify="right")
    for name in LEVEL_NAMES:
        table.add_column(f"cos {name}", justify="right")
    table.add_column("est. speed-up", justify="right")
    rows = result.importance if limit is None else result.importance[:limit]
    for i, u in enumerate(rows, 1):
        table.add_row(str(i), u.unit, "[red]global[/]" if u.global_attn else "windowed", f"{u.loss:.4g}",
                      *_cos(u.cosine), f"{u.speedup:.3f}x")
    if limit is not None and len(result.importance) > limit:
        table.caption = f"... and {len(result.importance) - limit} more"
    return table


def steps_table(result: SearchResult, chosen: int | None = None) -> Table:
    """Phase 2: cumulative removal; the row of the saved spec is highlighted."""
    table = Table(title="phase 2: greedy removal (cumulative)", title_justify="left")
    table.add_column("step", justify="right")
    table.add_column("removed", style="bold")
    table.add_column("attention")
    table.add_column("loss (MSE)", justify="right")
    for name in LEVEL_NAMES:
        table.add_column(f"cos {name}", justify="right")
    table.add_column("est. speed-up", justify="right")
    chosen = len(result.steps) if chosen is None else chosen
    for s in result.steps:
        style = "reverse" if s.step == chosen else None
        table.add_row(str(s.step), s.unit, "[red]global[/]" if s.global_attn else "windowed", f"{s.loss:.4g}",
                      *_cos(s.cosine), f"{s.speedup:.3f}x", style=style)
    if result.global_blocks:
        table.caption = ("global-attention blocks: " + ", ".join(map(str, result.global_blocks))
                         + " (the costliest blocks; removing them often hurts most)")
    return table
