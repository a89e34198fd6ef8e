"""``dart eval coco``: scoring against pycocotools, resume, sharding across ranks, errors, the CLI end to end."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from typer.testing import CliRunner

from dart.classes import COCO80
from dart.cli import build_app
from dart.errors import InputError
from dart.eval import store as st
from dart.eval.coco import METRICS, category_ids, evaluate_coco, load_annotations, score
from tests.coco_data import COCO_IDS, SIZES, GroundTruthDetector, write_dataset
from tests.tiny import TINY_IMGSZ


@pytest.fixture()
def dataset(tmp_path):
    return write_dataset(tmp_path / "coco")


def pycocotools_stats(annotations, results_file, iou_type="bbox"):
    """The reference: pycocotools used directly on the files, the way its own README does it."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotations))
        dt = gt.loadRes(str(results_file))
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(METRICS, ev.stats.tolist()))


def test_ground_truth_predictions_score_ap_one(dataset, tmp_path):
    images, ann = dataset
    res = evaluate_coco(GroundTruthDetector(ann), images, ann, tmp_path / "out", progress=False)
    assert res.metrics["bbox"]["AP"] == pytest.approx(1.0)
    assert res.metrics["bbox"]["AP50"] == pytest.approx(1.0) and res.metrics["bbox"]["AP75"] == pytest.approx(1.0)
    assert res.images == len(SIZES) and res.detections == len(json.loads(ann.read_text())["annotations"])
    summary = json.loads(res.summary_path.read_text())
    assert summary["metrics"]["bbox"]["AP"] == pytest.approx(1.0) and summary["images"] == len(SIZES)
    rows = json.loads(res.results_path.read_text())
    assert {r["category_id"] for r in rows} <= set(COCO_IDS) and all(len(r["bbox"]) == 4 for r in rows)


def test_ground_truth_masks_score_segm_ap_one(dataset, tmp_path):
    images, ann = dataset
    res = evaluate_coco(GroundTruthDetector(ann, masks=True), images, ann, tmp_path / "out", masks=True,
                        progress=False)
    assert res.metrics["segm"]["AP"] == pytest.approx(1.0)
    assert all("segmentation" in r for r in json.loads(res.results_path.read_text()))


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_perturbed_predictions_match_pycocotools(dataset, tmp_path, iou_type):
    images, ann = dataset
    masks = iou_type == "segm"
    res = evaluate_coco(GroundTruthDetector(ann, perturb=True, masks=masks), images, ann, tmp_path / "out",
                        masks=masks, progress=False)
    ours = res.metrics[iou_type]
    assert 0.05 < ours["AP"] < 0.95, "the perturbation must make the test discriminative"
    reference = pycocotools_stats(ann, res.results_path, iou_type)
    assert ours == pytest.approx(reference, abs=1e-12)


def test_score_with_no_results_is_zero(dataset):
    _, ann = dataset
    assert score(load_annotations(ann), [], "bbox") == {m: 0.0 for m in METRICS}


def test_interrupted_run_resumes_to_the_same_numbers(dataset, tmp_path):
    images, ann = dataset
    full = evaluate_coco(GroundTruthDetector(ann, perturb=True), images, ann, tmp_path / "full", progress=False)

    out = tmp_path / "resumed"
    first = GroundTruthDetector(ann, perturb=True, interrupt_after=2)
    with pytest.raises(KeyboardInterrupt):
        evaluate_coco(first, images, ann, out, progress=False)
    assert len(st.done_ids(out)) == 2 and not (out / "results.json").exists()
    # A crash in the middle of a line leaves a partial record: it must be ignored and cut off.
    with (out / "predictions-rank0.jsonl").open("a") as f:
        f.write('{"image_id": 999, "results": [{"bbo')

    second = GroundTruthDetector(ann, perturb=True)
    resumed = evaluate_coco(second, images, ann, out, progress=False)
    assert len(second.seen) == len(SIZES) - 2 and not set(second.seen) & set(first.seen)
    assert resumed.metrics == full.metrics
    assert json.loads((out / "results.json").read_text()) == json.loads((tmp_path / "full" / "results.json").read_text())
    lines = (out / "predictions-rank0.jsonl").read_text().splitlines()
    assert len(lines) == len(SIZES) and all(json.loads(line) for line in lines)

    third = GroundTruthDetector(ann, perturb=True)  # everything done: nothing is detected again
    assert evaluate_coco(third, images, ann, out, progress=False).metrics == full.metrics and not third.seen


def test_resume_refuses_other_settings_and_no_resume_starts_over(dataset, tmp_path):
    images, ann = dataset
    out = tmp_path / "out"
    evaluate_coco(GroundTruthDetector(ann), images, ann, out, settings={"conf": 0.05}, progress=False)
    with pytest.raises(InputError, match=r"other settings \(conf: 0.05 before, 0.3 now\).*--overwrite"):
        evaluate_coco(GroundTruthDetector(ann), images, ann, out, settings={"conf": 0.3}, progress=False)
    again = GroundTruthDetector(ann)
    evaluate_coco(again, images, ann, out, settings={"conf": 0.3}, resume=False, progress=False)
    assert len(again.seen) == len(SIZES)


def test_shard_splits_images_without_overlap():
    items = list(range(11))
    parts = [st.shard(items, r, 3) for r in range(3)]
    assert parts[0] == [0, 3, 6, 9] and parts[2] == [2, 5, 8]
    assert sorted(sum(parts, [])) == items
    with pytest.raises(InputError, match="not a valid rank"):
        st.shard(items, 3, 3)


def test_ranks_merge_to_the_single_process_result(dataset, tmp_path):
    images, ann = dataset
    single = evaluate_coco(GroundTruthDetector(ann, perturb=True), images, ann, tmp_path / "single", progress=False)
    out = tmp_path / "sharded"
    ranks = {}
    for rank in (2, 1, 0):  # rank 0 last: it merges once the others have marked their share complete
        det = GroundTruthDetector(ann, perturb=True)
        result = evaluate_coco(det, images, ann, out, rank=rank, world=3, progress=False, shard_timeout=5)
        ranks[rank] = det.seen
        assert (result is None) == (rank != 0)
    assert sorted(sum(ranks.values(), [])) == sorted(json.loads(ann.read_text())["images"][i]["id"]
                                                     for i in range(len(SIZES)))
    assert result.metrics == single.metrics
    assert sorted(p.name for p in out.glob("predictions-rank*.jsonl")) == [f"predictions-rank{r}.jsonl" for r in range(3)]


def test_rank_zero_waits_for_unfinished_ranks(dataset, tmp_path):
    images, ann = dataset
    with pytest.raises(Exception, match="ranks 1 did not finish"):
        evaluate_coco(GroundTruthDetector(ann), images, ann, tmp_path / "out", rank=0, world=2, progress=False,
                      shard_timeout=0.1)


def test_dist_env_reads_torchrun_variables(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert st.dist_env() == (3, 4, 1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(InputError):
        st.dist_env()


def test_bad_inputs_are_sentences(tmp_path, dataset):
    images, ann = dataset
    det = GroundTruthDetector(ann)
    with pytest.raises(InputError, match="does not exist"):
        evaluate_coco(det, images, tmp_path / "nope.json", tmp_path / "o", progress=False)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_annotations(bad)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(InputError, match="no 'annotations' list"):
        load_annotations(bad)
    (images / "img002.jpg").unlink()
    with pytest.raises(InputError, match=r"1 of 6 images .* missing .*img002.jpg"):
        evaluate_coco(det, images, ann, tmp_path / "o", progress=False)


def test_class_names_must_map_to_categories(tmp_path):
    _, ann = write_dataset(tmp_path / "d", categories=["person", "car", "bicycle", "dog", "cat", "horse"])
    coco = load_annotations(ann)
    assert category_ids(["car", "Person"], coco) == [COCO_IDS[1], COCO_IDS[0]]
    with pytest.raises(InputError, match=r"74 class name\(s\) have no category .*'motorcycle'.*--categories dataset"):
        category_ids(COCO80, coco)


def test_cli_end_to_end_on_tiny_model(tmp_path, tiny_ckpt, dataset):
    images, ann = dataset
    out = tmp_path / "eval"
    args = ["eval", "coco", "--images", images, "--annotations", ann, "--max-images", 1, "--checkpoint", tiny_ckpt,
            "--imgsz", TINY_IMGSZ, "--device", "cpu", "-o", out]
    res = CliRunner().invoke(build_app(), [str(a) for a in args])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 1 and summary["classes"] == 80
    assert set(summary["metrics"]["bbox"]) == set(METRICS)
    assert all(-1.0 <= v <= 1.0 for v in summary["metrics"]["bbox"].values())
    assert summary["settings"]["setup"]["imgsz"] == TINY_IMGSZ
    results = json.loads((out / "results.json").read_text())
    assert len(results) == summary["detections"] and {r["image_id"] for r in results} <= {100}
    for word in ("AP50", "AP75", "AP_S"):
        assert word in res.output

    bad = CliRunner().invoke(build_app(), [str(a) for a in args[:-2]] + ["-o", str(out), "--conf", "0.5"])
    assert bad.exit_code == 2 and "other settings" in bad.output


def test_cli_tiles(tmp_path, tiny_ckpt, dataset):
    """--tile evaluates the tiled detector; its settings are part of the run (a resume with another tile is
    refused)."""
    images, ann = dataset
    out = tmp_path / "eval"
    args = ["eval", "coco", "--images", images, "--annotations", ann, "--max-images", 1, "--checkpoint", tiny_ckpt,
            "--imgsz", TINY_IMGSZ, "--device", "cpu", "-o", out, "--tile", 64, "--batch", 4]
    res = CliRunner().invoke(build_app(), [str(a) for a in args])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["tile"] == {"size": 64, "overlap": 0.2}
    bad = CliRunner().invoke(build_app(), [str(a) for a in args[:-4]] + ["--tile", "96"])
    assert bad.exit_code == 2 and "other settings" in bad.output


def test_configs_compare_setups_across_backends(tmp_path, tmp_path_factory, tiny_ckpt):
    """One table for several setups; the onnxruntime setup scores the same detections as the torch one."""
    from tests.export_helpers import tiny_engines

    engines = tiny_engines(tmp_path_factory, tiny_ckpt)
    images, ann = write_dataset(tmp_path / "d", categories=["person", "car", "bicycle", "dog", "cat", "bus"])
    configs = tmp_path / "setups.yaml"
    configs.write_text(f"setups:\n  - name: torch\n  - name: ort\n    backend: onnxruntime\n    engines: {engines}\n")
    out = tmp_path / "cmp"
    res = CliRunner(env={"COLUMNS": "200"}).invoke(build_app(), [str(a) for a in [
        "eval", "coco", "--images", images, "--annotations", ann, "--categories", "dataset", "--max-images", 2,
        "--checkpoint", tiny_ckpt, "--imgsz", TINY_IMGSZ, "--device", "cpu", "--configs", configs, "-o", out]])
    assert res.exit_code == 0, res.output
    comparison = json.loads((out / "comparison.json").read_text())
    assert list(comparison) == ["torch", "ort"] and comparison["ort"]["setup"]["backend"] == "onnxruntime"
    for name in comparison:
        assert name in res.output and (out / name / "summary.json").is_file()

    def rows(name):
        data = json.loads((out / name / "results.json").read_text())
        return sorted(data, key=lambda r: (r["image_id"], r["category_id"], -r["score"]))

    torch_rows, ort_rows = rows("torch"), rows("ort")
    assert len(torch_rows) == len(ort_rows) > 0
    for a, b in zip(torch_rows, ort_rows):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-3) and a["bbox"] == pytest.approx(b["bbox"], abs=0.05)
    assert comparison["ort"]["metrics"]["bbox"] == pytest.approx(comparison["torch"]["metrics"]["bbox"], abs=1e-3)


def test_setups_build_pruned_student_and_synthetic_detectors(tmp_path, tiny_ckpt):
    from dart.setup import Setup, load_setups
    from tests.tiny import tiny_config

    base = Setup.from_dict({"checkpoint": str(tiny_ckpt), "imgsz": TINY_IMGSZ, "device": "cpu"})
    pruned = Setup.from_dict({"name": "p", "skip_blocks": [1, 2], "mask_blocks": ["3:mlp"]}, base)
    det = pruned.build_detector(["person", "car"])
    assert len(det.backend.backbone_stage.vit.layers) == 2 and det.classes == ["person", "car"]
    assert pruned.describe()["prune"] == "skip 1,2; mask 3:mlp"

    config = tmp_path / "config.json"
    tiny_config().to_json_file(str(config))
    student = Setup.from_dict({"name": "s", "backbone": "repvit_m0_9", "synthetic": True,
                               "synthetic_config": str(config)}, base)
    det = student.build_detector(["person"])
    assert det.backend.backbone_name == "repvit_m0_9" and det.backend.fingerprint.startswith("synthetic-")
    assert student.describe()["checkpoint"].startswith("synthetic") and student.label().endswith("[synthetic weights]")
    with pytest.raises(InputError, match="needs student_weights"):
        Setup.from_dict({"backbone": "repvit_m0_9"}, base).build_detector(["person"])

    bad = tmp_path / "bad.yaml"
    for text, message in [("- name: a\n  imgsz: 100\n", "setup 1: imgsz must be a positive multiple of 14"),
                          ("- name: a\n  imgsize: 112\n", "unknown key 'imgsize'; allowed keys: backbone"),
                          ("- name: a\n- name: a\n", "'a' is used twice"),
                          ("- name: a\n  imgsz: '112'\n", "'imgsz' must be int, got str")]:
        bad.write_text(text)
        with pytest.raises(InputError, match=message):
            load_setups(bad, base)
