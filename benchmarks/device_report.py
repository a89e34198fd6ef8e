"""The rows for BENCHMARKS.md from one run of ``benchmarks/device_suite.sh``: its stage table, video FPS and the peer
table, each with what it ran on, set against the goals of the GPU issue where the numbers allow.

    python benchmarks/device_report.py RESULT_DIR --stages-markdown WORK/stages.md -o RESULT_DIR/rows.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

GOALS = {"backbone_ms": 12.0, "fps_4": 60.0, "fps_80": 12.0, "research_ratio": 2.0, "cosine": 0.999}


def measured_for_goals(report: dict[str, Any], imgsz: int) -> bool:
    """The goals are H200 figures at 1008 px: other runs (the CPU smoke mode) are reported without them."""
    return imgsz == 1008 and "cuda" in str(report.get("environment", {}).get("device", "")).lower()


def load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def video_rows(result: Path) -> list[str]:
    first = load(result / "video-4.json") or load(result / "video-80.json")
    lines = [f"{first['header']}, {first['precision']}, {first['result']['imgsz']} px" if first else "", "",
             "| classes | sequential FPS | pipelined FPS | speed-up | same detections | backbone ms | enc-dec ms |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for classes in (4, 80):
        report = load(result / f"video-{classes}.json")
        if report is None:
            lines.append(f"| {classes} | not measured (see the suite's log) | | | | | |")
            continue
        run = report["result"]
        seq, pip = run["sequential"], run["pipelined"]
        stages = seq.get("stages", {})
        goal = GOALS["fps_4"] if classes == 4 else GOALS["fps_80"]
        mark = ""
        if measured_for_goals(report, run["imgsz"]):
            mark = f" ({'meets' if pip['fps'] >= goal else 'below'} the {goal:.0f} FPS goal)"
        lines.append(f"| {run['classes']} | {seq['fps']:.1f} | {pip['fps']:.1f}{mark} | "
                     f"{run['speedup']:.2f}x | {run['identical']} | {stages.get('backbone', float('nan')):.1f} | "
                     f"{stages.get('encdec', float('nan')):.1f} |")
    return lines


def peer_rows(result: Path) -> list[str]:
    report = load(result / "peers.json")
    if report is None:
        return ["peers: not measured (no DART research code carried, or the step failed: see the suite's log)"]
    counts = [str(c) for c in report["settings"]["counts"]]
    lines = [f"{report['header']}", "",
             "| system | ran as | " + " | ".join(f"{c} classes, s / image" for c in counts)
             + " | image part ms | peak GPU MB |",
             "| --- | --- | " + " | ".join("---" for _ in counts) + " | --- | --- |"]
    rows = report["systems"]
    research = {row["precision"]: row for row in rows if row.get("family") == "research" and "per_image_s" in row}
    for row in rows:
        if "per_image_s" not in row:
            lines.append(f"| {row['system']} | failed: {row.get('error', '')} | |")
            continue
        cells = []
        for c in counts:
            value = row["per_image_s"].get(c)
            cell = "" if value is None else f"{value * 1000:.1f} ms"
            peer = research.get(row["precision"]) or research.get("fp16") or research.get("fp32")
            if row.get("family") == "dart" and peer is not None and c in peer["per_image_s"] and value:
                cell += f" ({peer['per_image_s'][c] / value:.2f}x {peer['system']})"
            cells.append(cell)
        lines.append(f"| {row['system']} | {row.get('runs_on', '')} | " + " | ".join(cells)
                     + f" | {row['image_s'] * 1000:.1f} | {row.get('peak_cuda_mb', '')} |")
    return lines


def goal_lines(result: Path) -> list[str]:
    stages = load(result / "stages.json")
    if stages is None:
        return []
    if not measured_for_goals(stages, stages["settings"]["imgsz"]):
        return []
    lines = []
    for row in stages["rows"]:
        if "error" in row or row["precision"] != "bf16":
            continue
        ms = row["backbone_ms"]
        lines.append(f"- bf16 {row['mode']} backbone: {ms:.1f} ms against the {GOALS['backbone_ms']:.0f} ms goal "
                     f"({'met' if ms <= GOALS['backbone_ms'] else 'not met'})")
    worst = [(row["precision"], row["mode"], min(row["fpn_cosine"], row["logits_cosine_path"]))
             for row in stages["rows"] if "error" not in row]
    if worst:
        precision, mode, value = min(worst, key=lambda x: x[2])
        lines.append(f"- lowest cosine against fp32: {value:.6f} ({precision} {mode}; goal >= {GOALS['cosine']})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path, help="the suite's result folder")
    parser.add_argument("--stages-markdown", type=Path, help="stage_times.py's --markdown output")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()

    from dart.io import write_text

    env = (args.result / "environment.txt")
    parts = ["# device suite results", "", "```", env.read_text().strip() if env.is_file() else "no environment.txt",
             "```", "", "## Stages (benchmarks/stage_times.py)", ""]
    stages_md = args.stages_markdown
    parts.append(stages_md.read_text() if stages_md and stages_md.is_file() else "not measured")
    parts += ["", *goal_lines(args.result), "", "## Video: sequential vs pipelined (`dart bench video`)", "",
              *video_rows(args.result), "", "## Peers (`dart bench peers`)", "", *peer_rows(args.result), ""]
    write_text(args.output, "\n".join(parts))
    print("\n".join(parts))


if __name__ == "__main__":
    main()
