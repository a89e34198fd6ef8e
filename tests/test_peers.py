"""`dart bench peers`: dart, Meta's sam3 and transformers timed on the same weights, each as its users run it.

The weights are Meta's SAM3 made small by Meta's own builder (tests/meta_reference.py), saved as ``sam3.pt``. Meta's
builder hard-codes the full size, so the Meta row is measured in this process with the builder shrunk; the dart and
transformers rows also run through the command, each in a child process as for users.
"""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

pytest.importorskip("sam3", reason="Meta's sam3 package (in the dev extra) is a peer")

from dart.bench.class_scaling import class_names  # noqa: E402
from dart.bench.peers import (SYSTEMS, add_speedups, measure_system, parse_systems, prepare_weights,  # noqa: E402
                              run_peers)
from dart.cli import build_app  # noqa: E402
from dart.errors import InputError  # noqa: E402
from dart.models.tokenizer import installed_bpe_vocab  # noqa: E402
from tests.meta_reference import IMGSZ, build_meta_model, save_as_sam3_pt, shrunk_builder  # noqa: E402


def run_cli(*args):
    return CliRunner(env={"COLUMNS": "250"}).invoke(build_app(), [str(a) for a in args])


@pytest.fixture(scope="module")
def meta_checkpoint(tmp_path_factory):
    return save_as_sam3_pt(build_meta_model(installed_bpe_vocab()), tmp_path_factory.mktemp("peers_sam3"))


@pytest.fixture(scope="module")
def paths(meta_checkpoint, tmp_path_factory):
    return prepare_weights(meta_checkpoint, tmp_path_factory.mktemp("peers_work"), class_names(3))


def spec(paths, system, counts=(1, 3)):
    return {"system": system, **paths, "engines": None, "image": None, "counts": list(counts), "device": "cpu",
            "threads": 1, "warmup": 1, "runs": 2, "runs_large": 1}


def check_row(row, counts=("1", "3")):
    assert set(row["class_s"]) == set(counts) == set(row["per_image_s"]) == set(row["detections"])
    assert row["image_s"] > 0 and all(v > 0 for v in row["class_s"].values())
    for c in counts:
        assert row["per_image_s"][c] == pytest.approx(row["image_s"] + row["class_s"][c])
    assert row["peak_rss_mb"] >= row["rss_after_load_mb"] > 100  # a process with torch holds more than 100 MB


def test_prepare_weights_gives_every_system_the_same_weights(paths):
    import torch
    from transformers import Sam3Model

    from dart.models.loading import load_sam3
    from dart.text_cache import read_cache_info

    assert paths["imgsz"] == IMGSZ
    converted = Sam3Model.from_pretrained(paths["hf_folder"]).state_dict()
    dart_model = load_sam3(paths["meta_checkpoint"], imgsz=IMGSZ, tokenizer=paths["bpe"]).model.state_dict()
    assert converted.keys() == dart_model.keys()
    assert all(torch.equal(converted[k], dart_model[k]) for k in converted)
    assert read_cache_info(paths["text_cache"])["classes"] == class_names(3)


def test_no_transformers_copy_when_no_transformers_system_runs(meta_checkpoint, tmp_path):
    paths = prepare_weights(meta_checkpoint, tmp_path, ["person"], transformers=False)
    assert paths["hf_folder"] is None and paths["imgsz"] == IMGSZ and not (tmp_path / "transformers").exists()


@pytest.mark.parametrize("system", ["dart-fp32", "dart-auto", "meta-fp32", "meta-bf16", "transformers-fp32"])
def test_each_system_is_measured(paths, system):
    if SYSTEMS[system]["family"] == "meta":
        with shrunk_builder():
            row = measure_system(spec(paths, system))
    else:
        row = measure_system(spec(paths, system))
    check_row(row)
    assert row["system"] == system and row["threads"] == 1
    expected = {"dart-fp32": "dart torch fp32 cpu", "meta-fp32": "meta sam3 fp32 cpu",
                "meta-bf16": "meta sam3 bf16 cpu", "transformers-fp32": "transformers fp32 cpu"}
    assert row["runs_on"] == expected.get(system, row["runs_on"])


@pytest.mark.parametrize("system", ["dart-onnxruntime", "dart-openvino"])
def test_engine_systems_are_measured(paths, system, tmp_path_factory):
    from dart.export.onnx_export import export_backbone, export_encdec
    from dart.models.loading import load_sam3

    folder = tmp_path_factory.getbasetemp() / "peers_engines"
    if not (folder / "encdec.onnx").is_file():
        loaded = load_sam3(paths["meta_checkpoint"], imgsz=IMGSZ, tokenizer=paths["bpe"])
        export_backbone(loaded, folder / "backbone.onnx")
        export_encdec(loaded, folder / "encdec.onnx", max_classes=3, simplify=False)
    row = measure_system({**spec(paths, system), "engines": str(folder)})
    check_row(row)
    assert row["runs_on"] == f"dart {system.removeprefix('dart-')} fp32 cpu"


def test_speedups_are_against_the_fastest_peer_of_the_same_precision():
    report = {"settings": {"counts": [1, 4]}, "systems": [
        {"system": "dart-fp32", "family": "dart", "precision": "fp32", "per_image_s": {"1": 2.0, "4": 3.0}},
        {"system": "dart-auto", "family": "dart", "precision": "bf16", "per_image_s": {"1": 1.0, "4": 2.0}},
        {"system": "meta-fp32", "family": "meta", "precision": "fp32", "per_image_s": {"1": 4.0, "4": 9.0}},
        {"system": "meta-bf16", "family": "meta", "precision": "bf16", "per_image_s": {"1": 1.6, "4": 4.0}},
        {"system": "transformers-fp32", "family": "transformers", "precision": "fp32",
         "per_image_s": {"1": 3.0, "4": 12.0}},
        {"system": "dart-openvino", "error": "stopped"}]}
    add_speedups(report)
    assert report["best_peer"] == {"fp32": {"1": "transformers-fp32", "4": "meta-fp32"},
                                   "bf16": {"1": "meta-bf16", "4": "meta-bf16"},
                                   "any": {"1": "meta-bf16", "4": "meta-bf16"}}
    dart_fp32, dart_bf16, meta_fp32 = report["systems"][:3]
    assert dart_fp32["speedup"] == {"1": 1.5, "4": 3.0} and dart_fp32["speedup_any"] == {"1": 0.8, "4": 4 / 3}
    assert dart_bf16["speedup"] == {"1": 1.6, "4": 2.0} == dart_bf16["speedup_any"]
    assert meta_fp32["speedup"] == {"1": 0.75, "4": 1.0}
    assert "speedup" not in report["systems"][-1]


def test_systems_are_checked_before_anything_runs():
    assert "dart-onnxruntime" not in parse_systems(None, engines=False, research_repo=False)
    assert "dart-research-fp32" in parse_systems(None, engines=False, research_repo=True)
    with pytest.raises(InputError, match="unknown system 'meta'"):
        parse_systems("dart-fp32,meta", engines=False, research_repo=False)
    with pytest.raises(InputError, match="--engines"):
        parse_systems("dart-openvino", engines=False, research_repo=False)
    with pytest.raises(InputError, match="--research-repo"):
        parse_systems(["dart-research-fp32"], engines=False, research_repo=False)


def test_a_failing_system_is_a_row_not_a_crash(meta_checkpoint, tmp_path):
    fake = tmp_path / "DART"
    (fake / "sam3" / "model").mkdir(parents=True)
    (fake / "sam3" / "__init__.py").write_text("raise ImportError('this clone is broken')\n")
    report = run_peers(meta_checkpoint, ["dart-research-fp32"], counts=[1], research_repo=fake, device="cpu",
                       threads=1, warmup=0, runs=1)
    (row,) = report["systems"]
    assert row["system"] == "dart-research-fp32" and "this clone is broken" in row["error"]


def test_command_runs_systems_in_child_processes(meta_checkpoint, tmp_path):
    import cv2

    from tests.conftest import make_image

    out, photo = tmp_path / "bench", tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), make_image(90, 120, seed=3))
    result = run_cli("bench", "peers", str(meta_checkpoint), "--systems", "dart-fp32,transformers-fp32",
                     "--classes-counts", "1,2", "--runs", "1", "--warmup", "0", "--threads", "1", "--image", photo,
                     "-o", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "peers.json").read_text())
    assert [r["system"] for r in report["systems"]] == ["dart-fp32", "transformers-fp32"]
    for row in report["systems"]:
        check_row(row, ("1", "2"))
    assert report["best_peer"]["fp32"] == {"1": "transformers-fp32", "2": "transformers-fp32"}
    from dart import allocator

    if allocator.is_glibc() and allocator.ENV not in os.environ:
        # each child says how its malloc ran: dart's backend keeps freed blocks, the peer's process is left alone
        assert [r["cpu_allocator"] for r in report["systems"]] == ["kept for reuse (dart)", "glibc defaults"]
    assert report["settings"]["image"] == str(photo)
    assert (out / "peers.png").stat().st_size > 1000
    assert "dart and its peers" in result.output and "speed-up over the fastest peer" in result.output
    again = run_cli("bench", "peers", str(meta_checkpoint), "--systems", "dart-fp32", "-o", str(out))
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_command_refuses_bad_input_before_loading(meta_checkpoint, tmp_path):
    result = run_cli("bench", "peers", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "o"))
    assert result.exit_code == 2 and "does not exist" in result.output
    result = run_cli("bench", "peers", str(meta_checkpoint), "--research-repo", str(tmp_path), "-o", str(tmp_path / "o"))
    assert result.exit_code == 2 and "not a clone of the DART research code" in result.output
    result = run_cli("bench", "peers", str(meta_checkpoint), "--systems", "dart-openvino", "-o", str(tmp_path / "o"))
    assert result.exit_code == 2 and "--engines" in result.output


def test_rounds_alternate_the_order_and_give_medians(meta_checkpoint, monkeypatch):
    import dart.bench.peers as peers

    seen, clock = [], iter(range(1, 100))

    def fake_child(spec, work, research_repo, timeout_s, on_line):
        seen.append(spec["system"])
        t = float(next(clock))  # a machine that gets slower with every child
        return {"system": spec["system"], "family": peers.SYSTEMS[spec["system"]]["family"], "precision": "fp32",
                "runs_on": "fake", "load_s": 1.0, "image_s": t, "class_s": {"1": 1.0}, "per_image_s": {"1": t + 1},
                "peak_rss_mb": 100.0 * t}

    monkeypatch.setattr(peers, "_run_child", fake_child)
    report = peers.run_peers(meta_checkpoint, ["dart-fp32", "transformers-fp32"], counts=[1], device="cpu",
                             threads=1, rounds=3)
    assert seen == ["dart-fp32", "transformers-fp32", "transformers-fp32", "dart-fp32", "dart-fp32",
                    "transformers-fp32"]
    dart, hf = report["systems"]
    assert dart["image_s"] == 4.0 and hf["image_s"] == 3.0  # medians of (1, 4, 5) and (2, 3, 6)
    assert dart["rounds"] == [{"1": 2.0}, {"1": 5.0}, {"1": 6.0}] and dart["peak_rss_mb"] == 500.0
    assert report["settings"]["rounds"] == 3


def test_merge_rounds_leaves_out_failed_rounds():
    from dart.bench.peers import merge_rounds

    good = {"system": "x", "load_s": 1.0, "image_s": 2.0, "class_s": {"1": 1.0}, "per_image_s": {"1": 3.0},
            "peak_rss_mb": 10.0}
    merged = merge_rounds([good, {"system": "x", "error": "boom"}, dict(good, image_s=4.0, per_image_s={"1": 5.0})])
    assert merged["image_s"] == 3.0 and merged["per_image_s"] == {"1": 4.0} and merged["failed_rounds"] == 1
    assert merge_rounds([{"system": "x", "error": "boom"}, {"system": "x", "error": "again"}])["error"] == "boom"
