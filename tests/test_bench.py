"""``dart bench``: every benchmark runs on a tiny model on the CPU and writes a parseable JSON and a PNG plot.

Speed itself is never asserted (it is measured, not tested); the structure of what is measured is.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dart.bench.class_scaling import class_names, class_scaling, parse_counts
from dart.bench.plot import PALETTE, line_plot, nice_ticks
from dart.cli import build_app
from dart.errors import InputError
from dart.timing import StageTimer
from tests.conftest import make_image
from tests.tiny import TINY_IMGSZ, tiny_config


def run(*args):
    return CliRunner(env={"COLUMNS": "200"}).invoke(build_app(), [str(a) for a in args])


def read_png(path):
    image = cv2.imread(str(path))
    assert image is not None, f"{path} is not a decodable image"
    return image


def has_colour(image, bgr, tolerance=10) -> bool:
    return bool((np.abs(image.astype(int) - np.array(bgr)).max(axis=2) <= tolerance).sum() > 20)


@pytest.fixture(scope="module")
def tiny_config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    tiny_config().to_json_file(str(path))
    return path


def test_class_scaling_cli_writes_json_and_png(tmp_path, tiny_ckpt):
    out = tmp_path / "bench"
    res = run("bench", "class-scaling", "--classes-counts", "3,1", "--warmup", 0, "--runs", 2, "--checkpoint",
              tiny_ckpt, "--imgsz", TINY_IMGSZ, "--device", "cpu", "-o", out)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "class_scaling.json").read_text())
    assert report["benchmark"] == "class-scaling" and "torch" in report["environment"]["versions"]
    assert report["environment"]["device"].startswith("CPU")
    (setup,) = report["setups"]
    assert setup["synthetic"] is False and setup["setup"]["imgsz"] == TINY_IMGSZ
    assert [r["classes"] for r in setup["rows"]] == [1, 3]
    for row in setup["rows"]:
        assert row["runs"] == 2 and row["fps"] == pytest.approx(1000.0 / row["total_ms"])
        assert row["backbone_ms"] > 0 and row["encdec_ms"] > 0 and row["post_ms"] > 0
        assert row["backbone_ms"] + row["encdec_ms"] + row["post_ms"] <= row["total_ms"] * 1.05
    png = read_png(out / "class_scaling.png")
    assert png.shape == (600, 960, 3) and has_colour(png, PALETTE[0])
    for word in ("class scaling", "backbone", "encdec", "FPS", "CPU"):
        assert word in res.output


def test_synthetic_setups_are_labelled_and_plotted_one_line_each(tmp_path, tiny_config_file):
    configs = tmp_path / "setups.yaml"
    configs.write_text("setups:\n  - name: full\n  - name: pruned\n    skip_blocks: [1, 2]\n")
    out = tmp_path / "bench"
    res = run("bench", "class-scaling", "--synthetic", "--synthetic-config", tiny_config_file, "--configs", configs,
              "--classes-counts", "1,2", "--warmup", 0, "--runs", 1, "--imgsz", TINY_IMGSZ, "--device", "cpu",
              "-o", out)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "class_scaling.json").read_text())
    assert [s["name"] for s in report["setups"]] == ["full", "pruned"]
    assert all(s["synthetic"] and s["label"].endswith("[synthetic weights]") for s in report["setups"])
    assert report["setups"][0]["setup"]["checkpoint"].startswith("synthetic")
    assert report["setups"][1]["setup"]["prune"] == "skip 1,2"
    assert "synthetic" in res.output and "speed only" in res.output.replace("\n", " ")
    assert "pruned [synthetic weights]: building" in " ".join(res.output.split())  # printed, not eaten as markup
    png = read_png(out / "class_scaling.png")
    assert has_colour(png, PALETTE[0]) and has_colour(png, PALETTE[1]), "one line per setup"


def test_eval_refuses_synthetic_weights(tmp_path):
    configs = tmp_path / "setups.yaml"
    configs.write_text("- name: random\n  synthetic: true\n")
    (tmp_path / "ann.json").write_text("{}")
    res = run("eval", "coco", "--images", tmp_path, "--annotations", tmp_path / "ann.json", "--configs", configs)
    assert res.exit_code == 2 and "never for accuracy" in res.output


def test_class_scaling_library_times_each_count(tiny_backend):
    from dart.detector import Detector

    det = Detector(tiny_backend, conf=0.2)
    seen = []
    rows = class_scaling(det, [2, 5], make_image(), warmup=1, runs=3, prepare=seen.append)
    assert [r["classes"] for r in rows] == [2, 5] and [len(s) for s in seen] == [2, 5]
    assert det.classes == class_names(5) and all(r["runs"] == 3 for r in rows)
    assert isinstance(det.timer, StageTimer), "the detector's own timer is put back"


def test_counts_and_names():
    assert parse_counts("16, 1,4,4") == [1, 4, 16]
    for bad in ("0", "a", "1,-2", ""):
        with pytest.raises(InputError, match="classes-counts"):
            parse_counts(bad)
    names = class_names(82)
    assert names[:2] == ["person", "bicycle"] and names[80:] == ["object 81", "object 82"]
    assert len(set(names)) == 82


def test_line_plot_and_ticks(tmp_path):
    assert nice_ticks(93.0) == [0, 20, 40, 60, 80, 100]
    path = line_plot({"a": [(1, 10.0), (4, 8.0), (80, 2.0)], "b": [(1, 30.0), (80, 5.0)]}, tmp_path / "p.png",
                     title="t", xlabel="classes", ylabel="FPS")
    image = read_png(path)
    assert has_colour(image, PALETTE[0]) and has_colour(image, PALETTE[1])


def test_backbones_cli(tmp_path, tiny_config_file):
    out = tmp_path / "bench"
    res = run("bench", "backbones", "--names", "sam3", "--synthetic-config", tiny_config_file, "--skip-blocks", "1",
              "--imgsz", TINY_IMGSZ, "--device", "cpu", "--runs", 2, "--warmup", 0, "-o", out)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "backbones.json").read_text())
    names = [r["backbone"] for r in report["rows"]]
    assert names[0] == "sam3" and names[1].startswith("sam3 (pruned") and len(names) == 2
    assert all(r["error"] is None and r["median_ms"] > 0 for r in report["rows"])
    assert report["rows"][1]["params_m"] < report["rows"][0]["params_m"]
    assert read_png(out / "backbones.png").shape[1] == 960


def test_video_cli(tmp_path, tiny_ckpt):
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 90))
    for i in range(6):
        writer.write(make_image(seed=i))
    writer.release()
    out = tmp_path / "bench"
    res = run("bench", "video", clip, "--classes", "person", "car", "--max-frames", 4, "--warmup", 1,
              "--checkpoint", tiny_ckpt, "--imgsz", TINY_IMGSZ, "--device", "cpu", "-o", out)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "video.json").read_text())
    assert report["classes"] == ["person", "car"] and report["environment"]["versions"]["torch"] == torch.__version__
    for mode in ("sequential", "pipelined"):
        assert report["result"][mode]["frames"] == 4 and report["result"][mode]["fps"] > 0
    assert report["result"]["identical"] is True
    read_png(out / "video.png")
    assert "sequential" in res.output and "pipelined" in res.output


@pytest.mark.cuda
def test_cuda_event_timer_measures_gpu_work():
    from dart.bench.timing import CudaEventTimer

    timer = CudaEventTimer()
    x = torch.randn(2048, 2048, device="cuda")
    for _ in range(3):
        with timer("matmul"):
            x @ x
    summary = timer.summary()
    assert summary["matmul"]["n"] == 3 and summary["matmul"]["median"] > 0


def test_alternating_takes_turns_in_alternating_order():
    from dart.bench.timing import alternating

    order: list[str] = []
    times = alternating({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, 3)
    assert order == ["a", "b", "b", "a", "a", "b"]
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert all(t >= 0 for v in times.values() for t in v)
