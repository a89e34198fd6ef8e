"""Rich tables for benchmark results."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich.table import Table
from rich.text import Text


def fps_text(fps: float) -> str:
    """FPS with the digits that matter: '31.4', '0.48', '0.0206' (a slow CPU must not read '0.0')."""
    if not math.isfinite(fps) or fps >= 10:
        return f"{fps:.1f}"
    return f"{fps:.3g}"


def class_scaling_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"class scaling | {report['header']}", title_justify="left")
    for name, justify in (("setup", "left"), ("runs on", "left"), ("classes", "right"), ("FPS", "right"),
                          ("total ms", "right"),
                          ("backbone ms", "right"), ("encdec ms", "right"), ("post ms", "right"),
                          ("pre ms", "right")):
        table.add_column(name, justify=justify)
    for setup in report["setups"]:
        for i, row in enumerate(setup["rows"]):
            runs_on = " ".join(str(setup[k]) for k in ("backend", "precision", "device") if setup.get(k))
            table.add_row(Text(setup["label"]) if i == 0 else "", runs_on if i == 0 else "", str(row["classes"]),
                          fps_text(row["fps"]),
                          f"{row['total_ms']:.2f}", f"{row['backbone_ms']:.2f}", f"{row['encdec_ms']:.2f}",
                          f"{row['post_ms']:.2f}", f"{row['preprocess_ms']:.2f}")
        table.add_section()
    s = report["settings"]
    caption = f"medians of {s['runs']} runs after {s['warmup']} warm-up runs; {s['timing']}"
    if any(x.get("synthetic") for x in report["setups"]):
        caption += "; [bold yellow]synthetic = random weights: speed only, detections meaningless[/]"
    table.caption = caption
    return table


def video_table(result: dict[str, Any], title: str) -> Table:
    """Sequential vs pipelined: FPS, ms per frame and per-stage medians, one row per mode."""
    modes = {k: v for k, v in result.items() if isinstance(v, dict) and "fps" in v}
    if not modes:
        return records_table(flatten(result), title)
    stages: list[str] = []
    for entry in modes.values():
        stages.extend(s for s in (entry.get("stages") or {}) if s not in stages)
    table = Table(title=title, title_justify="left")
    for name in ("mode", "frames", "FPS", "ms/frame", *[f"{s} ms" for s in stages]):
        table.add_column(name, justify="left" if name == "mode" else "right")
    for mode, entry in modes.items():
        table.add_row(mode, fmt(entry.get("frames")), fmt(entry.get("fps")), fmt(entry.get("ms_per_frame")),
                      *[fmt((entry.get("stages") or {}).get(s)) for s in stages])
    notes = [f"{k}: {fmt(result[k])}" for k in ("speedup", "identical") if k in result]
    table.caption = "; ".join(notes)
    return table


def records_table(rows: Sequence[dict[str, Any]], title: str) -> Table:
    """A table of flat records (the union of their keys as columns), numbers rounded."""
    table = Table(title=title, title_justify="left")
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    for column in columns:
        numeric = all(isinstance(r.get(column), (int, float)) for r in rows if r.get(column) is not None)
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*[fmt(row.get(c)) for c in columns])
    return table


def fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.2f}" if abs(value) < 1e4 else f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={fmt(v)}" for k, v in value.items())
    return str(value)


def flatten(result: dict[str, Any]) -> list[dict[str, Any]]:
    """``{"sequential": {...}, "pipelined": {...}, "frames": 200}`` -> one record per nested mapping (with the
    top-level scalars repeated), or a single record when nothing is nested."""
    scalars = {k: v for k, v in result.items() if not isinstance(v, dict)}
    nested = {k: v for k, v in result.items() if isinstance(v, dict)}
    if not nested:
        return [scalars]
    return [{"mode": k, **{kk: vv for kk, vv in v.items() if not isinstance(vv, dict)}, **scalars}
            for k, v in nested.items()]


def peers_table(report: dict[str, Any]) -> Table:
    """One row per system: seconds per image at each class count with the speed-up over the fastest peer, the
    image part, load time and peak memory."""
    counts = [str(c) for c in report["settings"]["counts"]]
    table = Table(title=f"dart and its peers | {report['header']}", title_justify="left")
    table.add_column("system")
    table.add_column("runs on")
    for c in counts:
        table.add_column(f"{c} cls s/img", justify="right")
    table.add_column("image part s", justify="right")
    table.add_column("load s", justify="right")
    table.add_column("peak MB", justify="right")
    for row in report["systems"]:
        if "error" in row:
            table.add_row(row["system"], Text(f"failed: {row['error']}", style="red"), *[""] * (len(counts) + 3))
            continue
        cells = []
        for c in counts:
            seconds, speedup = row["per_image_s"].get(c), row.get("speedup", {}).get(c)  # same precision
            text = "" if seconds is None else f"{seconds:.3g}"
            if speedup is not None and row["family"] == "dart":
                text += f" ({speedup:.2f}x)"
            cells.append(text)
        table.add_row(row["system"], row["runs_on"], *cells, f"{row['image_s']:.3g}", f"{row['load_s']:.1f}",
                      f"{row['peak_rss_mb']:.0f}")
    s = report["settings"]
    rounds = s.get("rounds", 1)
    over = f", then over {rounds} rounds in alternating order" if rounds > 1 else ""
    table.caption = (f"medians of {s['runs']} runs ({s['runs_large']} above 16 classes) after {s['warmup']} warm-up{over}; "
                     f"(Nx) = speed-up over the fastest peer computing in the same precision; {s['imgsz']} px, "
                     f"{s['threads']} threads")
    return table
