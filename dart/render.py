"""Rich tables shared by the commands (detections, per-stage timings)."""

from __future__ import annotations

from collections import Counter

from rich.table import Table

from dart.detections import Detections


def precision_line(backend) -> str | None:
    """``"precision: bf16 (auto: bf16 matrix products run 3.9x faster than fp32 on this CPU)"`` when the precision
    was chosen by ``auto``; None when it was given."""
    reason = getattr(backend, "precision_reason", None)
    return f"precision: {backend.precision} ({reason})" if reason else None


def count(n: int, noun: str) -> str:
    """``"1 detection"``, ``"3 detections"``, ``"2 classes"``."""
    if n == 1:
        return f"{n} {noun}"
    return f"{n} {noun}es" if noun.endswith(("s", "x", "ch", "sh")) else f"{n} {noun}s"


def detections_table(dets: Detections, title: str, limit: int = 50) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right", style="dim")
    table.add_column("class", style="bold")
    table.add_column("score", justify="right")
    table.add_column("box x1, y1, x2, y2 (px)")
    if dets.track_ids is not None:
        table.add_column("track", justify="right")
    order = dets.sorted()
    for i in range(min(len(order), limit)):
        row = [str(i + 1), str(order.class_names[i]), f"{order.scores[i]:.3f}",
               ", ".join(f"{v:.1f}" for v in order.xyxy[i])]
        if order.track_ids is not None:
            row.append(str(int(order.track_ids[i])))
        table.add_row(*row)
    if len(order) > limit:
        table.caption = f"... and {len(order) - limit} more"
    if not len(order):
        table.caption = "no detections above the threshold"
    return table


def summary_table(per_image: list[tuple[str, Detections]], classes: list[str]) -> Table:
    table = Table(title="detections per image", title_justify="left")
    table.add_column("image")
    table.add_column("total", justify="right")
    for name in classes:
        table.add_column(name, justify="right")
    for image, dets in per_image:
        counts = Counter(str(n) for n in dets.class_names)
        table.add_row(image, str(len(dets)), *[str(counts.get(n, 0) or "") for n in classes])
    return table


def timing_table(summary: dict[str, dict[str, float]], title: str = "per-stage timing") -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("stage")
    table.add_column("median ms", justify="right")
    table.add_column("mean ms", justify="right")
    table.add_column("min ms", justify="right")
    table.add_column("runs", justify="right")
    total = 0.0
    for stage, s in summary.items():
        note = " (once per class list)" if stage == "text" else ""
        table.add_row(stage + note, f"{s['median']:.2f}", f"{s['mean']:.2f}", f"{s['min']:.2f}", str(s["n"]))
        if stage != "text":
            total += s["median"]
    table.add_row("[bold]per image[/]", f"[bold]{total:.2f}[/]", "", "", "")
    if total > 0:
        table.caption = f"{1000.0 / total:.1f} images/s (sum of per-image stage medians)"
    return table
