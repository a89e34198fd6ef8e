"""``dart.eval.mot`` against the MOTChallenge evaluator: every HOTA, CLEAR and identity figure equals TrackEval's
(recorded in ``tests/data/mot_reference.json`` by ``tests/data/make_mot_reference.py``, which needs TrackEval in a
separate venv) on each recorded scenario and combined, at two IoU thresholds and under MOT17 rules; IDF1, MOTA and
ID switches also equal motmetrics' (dev extra), computed here on the same inputs. Then ``dart eval mot``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import motmetrics as mm  # dev extra
import numpy as np
import pytest
from typer.testing import CliRunner

from dart.cli import build_app
from dart.errors import InputError
from dart.eval.mot import ALPHAS, HOTA_CURVES, evaluate_mot, iou_xywh, read_mot

REFERENCE = json.loads((Path(__file__).parent / "data" / "mot_reference.json").read_text())
SEQUENCES = REFERENCE["sequences"]
CLEAR_NAMES = {"TP": "CLR_TP", "FP": "CLR_FP", "FN": "CLR_FN", "Recall": "CLR_Re", "Precision": "CLR_Pr",
               "MOTA": "MOTA", "MOTP": "MOTP", "MODA": "MODA", "sMOTA": "sMOTA", "MOTAL": "MOTAL", "IDSW": "IDSW",
               "Frag": "Frag", "MT": "MT", "PT": "PT", "ML": "ML"}
IDENTITY_NAMES = ("IDF1", "IDP", "IDR", "IDTP", "IDFP", "IDFN")
TOL = 1e-9


def fmt(row) -> str:
    return ",".join(str(int(v)) if float(v).is_integer() else repr(float(v)) for v in row)


def write_mot(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(fmt(r) + "\n" for r in rows))
    return path


def assert_same(mine: dict, curves: dict, ref: dict, where: str, hota: bool = True) -> None:
    """Every figure of ``ref`` (TrackEval's result dicts by metric) equals dart's, to 1e-9."""
    if hota:
        for key in HOTA_CURVES:
            np.testing.assert_allclose(curves[key], ref["HOTA"][key], rtol=0, atol=TOL, err_msg=f"{where} {key}")
            assert mine[key] == pytest.approx(np.mean(ref["HOTA"][key]), abs=TOL), (where, key)
        for key in ("TP", "FN", "FP"):
            np.testing.assert_array_equal(curves[key], ref["HOTA"][f"HOTA_{key}"], err_msg=f"{where} HOTA_{key}")
        for key in ("HOTA(0)", "LocA(0)", "HOTALocA(0)"):
            assert mine[key] == pytest.approx(ref["HOTA"][key], abs=TOL), (where, key)
    for ours, theirs in CLEAR_NAMES.items():
        assert mine[ours] == pytest.approx(ref["CLEAR"][theirs], abs=TOL), (where, ours, mine[ours], ref["CLEAR"][theirs])
    for key in IDENTITY_NAMES:
        assert mine[key] == pytest.approx(ref["Identity"][key], abs=TOL), (where, key, mine[key], ref["Identity"][key])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The recorded scenarios as MOT files: gt/<sequence>.txt and pred/<sequence>.txt (empty files included)."""
    root = tmp_path_factory.mktemp("mot")
    for name, seq in SEQUENCES.items():
        write_mot(root / "gt" / f"{name}.txt", seq["gt"])
        write_mot(root / "pred" / f"{name}.txt", seq["pred"])
    return root


@pytest.fixture(scope="module")
def report(files):
    return evaluate_mot(files / "gt", files / "pred")


# ------------------------------------------------------------------------------------------------ TrackEval
def test_reference_covers_the_scenarios_it_should():
    ref = {name: seq["trackeval"] for name, seq in SEQUENCES.items()}
    assert len(ref) >= 10 and ref["perfect"]["HOTA"]["HOTA"] == [1.0] * 19
    assert ref["id_swap"]["CLEAR"]["IDSW"] > 0 and ref["fragments"]["CLEAR"]["Frag"] > 0
    assert ref["empty_prediction"]["CLEAR"]["CLR_TP"] == 0 and ref["no_ground_truth"]["CLEAR"]["CLR_FP"] > 0
    tp = np.array(ref["localisation"]["HOTA"]["HOTA_TP"])
    assert (np.diff(tp) < 0).sum() >= 15, "the localisation sweep must give most alphas their own TP count"


@pytest.mark.parametrize("name", list(SEQUENCES))
def test_every_figure_equals_trackeval(report, name):
    assert_same(report.rows[name], report.curves[name], SEQUENCES[name]["trackeval"], name)


def test_combined_equals_trackeval(report):
    assert_same(report.combined, report.combined_curves, REFERENCE["combined"], "combined")
    assert report.missing == [] and report.extra == []
    assert report.combined["GT"] == sum(len(s["gt"]) for s in SEQUENCES.values())


def test_other_iou_threshold_equals_trackeval():
    """Arrays in, instead of files, and CLEAR / identity at IoU 0.3."""
    gt = {name: np.array(seq["gt"]).reshape(-1, 9) for name, seq in SEQUENCES.items()}
    pred = {name: np.array(seq["pred"]).reshape(-1, 10) for name, seq in SEQUENCES.items()}
    rep = evaluate_mot(gt, pred, iou=0.3)
    for name, seq in SEQUENCES.items():
        assert_same(rep.rows[name], rep.curves[name], seq["trackeval_iou_0.3"], name, hota=False)
    assert_same(rep.combined, rep.combined_curves, REFERENCE["combined_iou_0.3"], "combined", hota=False)
    at_05 = evaluate_mot(gt, pred)
    assert rep.combined["MOTA"] > at_05.combined["MOTA"] and rep.combined["HOTA"] == at_05.combined["HOTA"]


def test_mot17_layout_and_rules_equal_trackeval_end_to_end(tmp_path):
    """MOTChallenge folders (SEQ/gt/gt.txt, seqinfo.ini longer than the annotations) scored by trackeval.Evaluator
    with MOT17 preprocessing: flag-0 rows, distractors and other classes handled the same way."""
    bench = REFERENCE["mot17"]
    for name, seq in bench["sequences"].items():
        write_mot(tmp_path / "MOT17" / name / "gt" / "gt.txt", seq["gt"])
        (tmp_path / "MOT17" / name / "seqinfo.ini").write_text(f"[Sequence]\nname={name}\nseqLength={seq['frames']}\n")
        write_mot(tmp_path / "tracker" / "data" / f"{name}.txt", seq["pred"])
    rep = evaluate_mot(tmp_path / "MOT17", tmp_path / "tracker", mot17=True)
    for name, seq in bench["sequences"].items():
        assert_same(rep.rows[name], rep.curves[name], bench["trackeval"][name], name)
        assert rep.rows[name]["Frames"] == seq["frames"]
    assert_same(rep.combined, rep.combined_curves, bench["trackeval"]["COMBINED_SEQ"], "combined")
    every_row = evaluate_mot(tmp_path / "MOT17", tmp_path / "tracker")  # flag-0, static, car rows count as gt
    assert every_row.combined["GT"] > rep.combined["GT"] and every_row.combined["HOTA"] < rep.combined["HOTA"]


# ------------------------------------------------------------------------------------------------ motmetrics
@pytest.mark.parametrize("name", [n for n in SEQUENCES if SEQUENCES[n]["gt"]])
def test_idf1_mota_idsw_equal_motmetrics(report, name):
    """motmetrics (its own IoU, its own matching) on the same rows. Not compared: Frag and MOTP, which
    motmetrics defines differently (it keeps a track's last match across gaps); MOTA without ground truth, -inf
    in motmetrics (0 in TrackEval)."""
    seq = SEQUENCES[name]
    gt, pred = np.array(seq["gt"]).reshape(-1, 9), np.array(seq["pred"]).reshape(-1, 10)
    acc = mm.MOTAccumulator(auto_id=True)
    for frame in range(1, seq["frames"] + 1):
        g, p = gt[gt[:, 0] == frame], pred[pred[:, 0] == frame]
        dist = 1.0 - mm.distances.boxiou(g[:, None, 2:6], p[None, :, 2:6]) if len(g) and len(p) else np.empty(
            (len(g), len(p)))
        acc.update(g[:, 1].astype(int).tolist(), p[:, 1].astype(int).tolist(), np.where(dist > 0.5, np.nan, dist))
    theirs = mm.metrics.create().compute(acc, metrics=["idf1", "mota", "num_switches"], name=name).iloc[0]
    ours = report.rows[name]
    assert ours["IDF1"] == pytest.approx(theirs["idf1"], abs=1e-12)
    assert ours["MOTA"] == pytest.approx(theirs["mota"], abs=1e-12)
    assert ours["IDSW"] == theirs["num_switches"]


# ------------------------------------------------------------------------------------------------ API, inputs
def test_iou_and_reading(tmp_path):
    a = np.array([[0, 0, 10, 10], [5, 5, 10, 10], [100, 100, 0, 0]], dtype=float)
    np.testing.assert_allclose(iou_xywh(a, a[:2]), [[1, 25 / 175], [25 / 175, 1], [0, 0]])
    path = tmp_path / "a.txt"
    path.write_text("1,3,10.5,20,30,40\n\n2, 3, 11, 20, 30, 40, 0.9, 2, -1, -1\n3 4 1 2 3 4 1 1 0.5\n")
    rows = read_mot(path)
    np.testing.assert_array_equal(rows, [[1, 3, 10.5, 20, 30, 40, 1, -1, -1], [2, 3, 11, 20, 30, 40, 0.9, 2, -1],
                                         [3, 4, 1, 2, 3, 4, 1, 1, 0.5]])
    path.write_text("")
    assert read_mot(path).shape == (0, 9)


def test_single_files_and_missing_and_extra_sequences(tmp_path, files):
    one = evaluate_mot(files / "gt" / "id_swap.txt", files / "pred" / "id_swap.txt")
    assert list(one.rows) == ["id_swap"] and one.combined == one.rows["id_swap"]
    assert_same(one.rows["id_swap"], one.curves["id_swap"], SEQUENCES["id_swap"]["trackeval"], "single")
    named = evaluate_mot(files / "gt" / "crowded.txt", files / "pred")  # <sequence>.txt found in the folder
    assert named.rows["crowded"]["HOTA"] == pytest.approx(np.mean(SEQUENCES["crowded"]["trackeval"]["HOTA"]["HOTA"]))
    write_mot(tmp_path / "gt" / "a.txt", SEQUENCES["perfect"]["gt"])
    write_mot(tmp_path / "gt" / "b.txt", SEQUENCES["misses"]["gt"])
    write_mot(tmp_path / "pred" / "a.txt", SEQUENCES["perfect"]["pred"])
    write_mot(tmp_path / "pred" / "zzz.txt", SEQUENCES["misses"]["pred"])
    rep = evaluate_mot(tmp_path / "gt", tmp_path / "pred")
    assert rep.missing == ["b"] and rep.extra == ["zzz"]
    assert rep.rows["b"]["FN"] == len(SEQUENCES["misses"]["gt"]) and rep.rows["b"]["HOTA"] == 0.0
    assert rep.rows["a"]["HOTA"] == 1.0 and 0 < rep.combined["HOTA"] < 1


@pytest.mark.parametrize(("gt", "pred", "message"), [
    ("1,1,0,0,10,10\n", None, "does not exist"),
    ("1,1,0,0,10,10\n1,x,0,0,10,10\n", "1,1,0,0,10,10\n", r"gt.txt:2 is not a MOT row"),
    ("1,1,0,0,10,10\n", "1,1,0,0,10\n", r"pred.txt:1 is not a MOT row"),
    ("1.5,1,0,0,10,10\n", "1,1,0,0,10,10\n", "whole numbers"),
    ("1,1,0,0,10,10\n\n1,2,0,0,-10,10\n", "1,1,0,0,10,10\n", "gt.txt:3 has a negative width"),
    ("1,1,0,0,10,10\n", "1,7,0,0,10,10\n1,7,5,5,10,10\n", "the prediction has the same id twice in frame 1"),
])
def test_bad_input_is_one_sentence(tmp_path, gt, pred, message):
    (tmp_path / "gt.txt").write_text(gt)
    if pred is not None:
        (tmp_path / "pred.txt").write_text(pred)
    with pytest.raises(InputError, match=message):
        evaluate_mot(tmp_path / "gt.txt", tmp_path / "pred.txt")


def test_bad_layouts_are_one_sentence(tmp_path, files):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="has no <sequence>.txt"):
        evaluate_mot(tmp_path / "empty", files / "pred")
    with pytest.raises(InputError, match="give a folder of <sequence>.txt predictions"):
        evaluate_mot(files / "gt", files / "pred" / "perfect.txt")
    with pytest.raises(InputError, match="predictions sequence 'a', row 2 has frame 2.5"):
        evaluate_mot({"a": [[1, 1, 0, 0, 5, 5]]}, {"a": [[1, 1, 0, 0, 5, 5], [2.5, 1, 0, 0, 5, 5]]})
    with pytest.raises(InputError, match="table of numbers"):
        evaluate_mot({"a": [[1, 1, 0, 0, 5, 5]]}, {"a": [[1, 1, 0, 0, 5, 5], [2]]})
    with pytest.raises(InputError, match="IoU threshold"):
        evaluate_mot(files / "gt" / "perfect.txt", files / "pred" / "perfect.txt", iou=0.0)


def test_scores_the_mot_rows_dart_track_writes(tmp_path):
    """``Detections.to_mot`` (what ``dart track --save-mot`` writes: 10 columns, frames from 1, 2 decimals) is read
    as it should: exact boxes give HOTA 1; exchanging the two IDs half-way gives two ID switches and, by hand,
    AssA = 10 / (10 + 10 + 10) for each id pair (each track covers half of each object)."""
    from dart.detections import Detections

    gt, lines, swapped = [], [], []
    for frame in range(1, 21):
        boxes = np.array([[10 + 3 * frame, 20, 50 + 3 * frame, 100], [300, 40 + 2 * frame, 360, 160 + 2 * frame]])
        gt += [[frame, oid, *box[:2], *(box[2:] - box[:2]), 1, 1, 1] for oid, box in zip((1, 2), boxes)]
        dets = Detections(boxes, [0.9, 0.8], [0, 0], ["person", "person"], track_ids=[5, 6])
        lines += dets.to_mot(frame)
        swapped += Detections(boxes, [0.9, 0.8], [0, 0], ["a", "a"], track_ids=[5, 6] if frame <= 10 else [6, 5]).to_mot(
            frame)
    write_mot(tmp_path / "gt.txt", gt)
    (tmp_path / "tracks.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "swapped.txt").write_text("\n".join(swapped) + "\n")
    assert len(lines[0].split(",")) == 10 and lines[0].startswith("1,5,13.00,20.00,40.00,80.00,")
    perfect = evaluate_mot(tmp_path / "gt.txt", tmp_path / "tracks.txt").combined
    assert perfect["HOTA"] == 1.0 and perfect["IDF1"] == 1.0 and perfect["MOTA"] == 1.0 and perfect["GT"] == 40
    swap = evaluate_mot(tmp_path / "gt.txt", tmp_path / "swapped.txt").combined
    assert swap["IDSW"] == 2 and swap["DetA"] == 1.0 and swap["IDF1"] == 0.5
    assert swap["AssA"] == pytest.approx(1 / 3) and swap["HOTA"] == pytest.approx(np.sqrt(1 / 3))


def test_importable_without_torch():
    code = "import sys, dart.eval.mot; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------------ CLI
def run(*args):
    return CliRunner().invoke(build_app(), ["eval", "mot", *map(str, args)], env={"COLUMNS": "200"})


def test_cli_table_and_summary(tmp_path, files, report):
    (files / "pred_partial").mkdir(exist_ok=True)
    for name in ("perfect", "crowded"):
        (files / "pred_partial" / f"{name}.txt").write_text((files / "pred" / f"{name}.txt").read_text())
    res = run("--gt", files / "gt", "--pred", files / "pred", "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert "HOTA" in res.output and "combined" in res.output and "crowded" in res.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["combined"] == pytest.approx(report.combined) and summary["alphas"][0] == 0.05
    assert summary["sequences"]["random_3"] == pytest.approx(report.rows["random_3"])
    assert summary["curves"]["localisation"]["HOTA"] == pytest.approx(report.curves["localisation"]["HOTA"])
    assert len(summary["combined_curves"]["DetA"]) == len(ALPHAS) == 19
    res = run("--gt", files / "gt", "--pred", files / "pred_partial", "-o", tmp_path / "partial", "--iou", "0.3")
    assert res.exit_code == 0, res.output
    assert "no prediction file for sequence 'id_swap'" in res.output
    partial = json.loads((tmp_path / "partial" / "summary.json").read_text())
    assert partial["iou"] == 0.3 and "id_swap" in partial["missing"] and len(partial["missing"]) == len(SEQUENCES) - 2
    assert partial["sequences"]["id_swap"]["TP"] == 0


def test_cli_bad_input_exits_2_and_keeps_the_summary(tmp_path, files):
    res = run("--gt", files / "gt" / "perfect.txt", "--pred", files / "pred" / "perfect.txt", "-o", tmp_path)
    assert res.exit_code == 0, res.output
    before = (tmp_path / "summary.json").read_text()
    bad = tmp_path / "bad.txt"
    bad.write_text("1,1,0,0,10,10\nnot a row\n")
    res = run("--gt", files / "gt" / "perfect.txt", "--pred", bad, "-o", tmp_path, "--overwrite")
    assert res.exit_code == 2 and "bad.txt:2 is not a MOT row" in res.output and "Traceback" not in res.output
    res = run("--gt", tmp_path / "nowhere", "--pred", bad, "-o", tmp_path, "--overwrite")
    assert res.exit_code == 2 and "does not exist" in res.output
    assert (tmp_path / "summary.json").read_text() == before
