"""The GPU machine's one-shot suite (benchmarks/device_suite.sh) runs here first, in its CPU smoke mode: a tiny random
SAM3, every step but the CUDA tests and the peers, the result files the device tool brings back, and the report
that turns them into BENCHMARKS.md rows. A GPU run is ten minutes that cannot be repeated in a session: what can
break without a GPU must break here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    base = tmp_path_factory.mktemp("device_suite")
    result, work, carry = base / "result", base / "work", base / "carry"
    carry.mkdir()  # nothing carried: no installs, no DART research code
    env = {**os.environ, "SMOKE": "1", "DEVICE": "cpu", "CARRY": str(carry), "WORK": str(work),
           "PYTHON": sys.executable, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_suite.sh"), str(result)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    return proc, result


def test_smoke_run_finishes_every_step(smoke):
    proc, result = smoke
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "FAILED" not in proc.stdout and "skipped," not in proc.stdout
    assert "== peers: skipped (no DART research code" in proc.stdout
    # what the device tool brings back: at most 8 files, all at the top of the result folder
    files = sorted(p.name for p in result.iterdir())
    assert files == ["environment.txt", "logs.tar.gz", "rows.md", "stages.json", "video-4.json", "video-80.json"]


def test_stage_times_cover_every_precision_and_count(smoke):
    _, result = smoke
    report = json.loads((result / "stages.json").read_text())
    assert report["benchmark"] == "stage-times" and report["settings"]["counts"] == [1, 2, 17]
    rows = {(row["precision"], row["mode"]): row for row in report["rows"]}
    assert set(rows) == {("fp32", "eager"), ("bf16", "eager")}
    for row in rows.values():
        assert "error" not in row, row
        assert row["backbone_ms"] > 0 and row["backbone_no_masks_ms"] > 0 and set(row["encdec_ms"]) == {"1", "2", "17"}
    assert rows[("fp32", "eager")]["fpn_cosine"] == pytest.approx(1.0)  # fp32 is the reference
    assert rows[("fp32", "eager")]["boxes_max_abs_path"] == 0.0
    bf16 = rows[("bf16", "eager")]
    assert 0.999 <= bf16["fpn_cosine"] < 1.0 and 0.999 <= bf16["logits_cosine_stage"] <= 1.0 + 1e-9


def test_video_runs_both_modes_with_the_same_detections(smoke):
    _, result = smoke
    for classes, count in (("4", 4), ("80", 80)):
        report = json.loads((result / f"video-{classes}.json").read_text())
        run = report["result"]
        assert run["classes"] == count and run["frames"] == 4 and run["identical"] is True
        assert run["sequential"]["fps"] > 0 and run["pipelined"]["fps"] > 0


def test_report_rows_and_logs(smoke):
    _, result = smoke
    rows = (result / "rows.md").read_text()
    assert "| fp32 | eager |" in rows and "| bf16 | eager |" in rows
    assert "| 4 |" in rows and "| 80 |" in rows
    assert "goal" not in rows  # the H200 goals are not set against a CPU smoke run
    assert "peers: not measured" in rows
    with tarfile.open(result / "logs.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"logs/stages.log", "logs/video-4.log", "logs/video-80.log", "logs/peers.log"} <= names


def test_prepare_refuses_a_folder_that_is_not_the_research_code(tmp_path):
    env = {**os.environ, "DART_REPO": str(tmp_path), "PYTHON": sys.executable}
    # pip is not reached: the clone is checked before anything is downloaded
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_prepare.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "is not a clone of the DART research code" in proc.stderr
