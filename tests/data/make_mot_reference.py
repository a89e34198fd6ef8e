"""Regenerate ``tests/data/mot_reference.json``: small deterministic tracking scenarios and the figures TrackEval
(the MOTChallenge evaluator) gives for them, for ``tests/test_eval_mot.py`` to compare ``dart.eval.mot`` with.

TrackEval is NOT a dart dependency (it requires the GUI ``opencv-python``, which would replace dart's
``opencv-python-headless``), so this script runs in a separate virtual environment, outside the repository::

    python3 -m venv /tmp/te-venv
    /tmp/te-venv/bin/pip install trackeval==1.3.0 --no-deps
    /tmp/te-venv/bin/pip install numpy scipy tabulate pillow opencv-python-headless matplotlib
    /tmp/te-venv/bin/python tests/data/make_mot_reference.py          # writes tests/data/mot_reference.json

What it records:

- ``sequences``: per scenario the ground-truth and predicted rows (``frame,id,x,y,w,h,conf,class,visibility``
  and ``frame,id,x,y,w,h,score,class,-1,-1``), the number of frames, and the results of TrackEval's ``HOTA``,
  ``CLEAR`` and ``Identity`` metric classes (``eval_sequence``) on them; ``combined``: their
  ``combine_sequences`` over all scenarios. CLEAR and Identity are also run at an IoU threshold of 0.3
  (``clear_identity_iou_0.3``). The data handed to the metric classes is built as TrackEval's MOT dataset builds
  it without preprocessing: ids relabelled 0..n-1 in sorted order, rows in file order, IoU of x,y,w,h boxes by
  TrackEval's own ``_calculate_box_ious``.
- ``mot17``: a MOT17-style benchmark (pedestrians, flag-0 rows, distractor and other classes, ``seqinfo.ini``
  with more frames than annotated) scored end to end by ``trackeval.Evaluator`` with ``MotChallenge2DBox``
  (files on disk, MOT17 preprocessing on), per sequence and ``COMBINED_SEQ``.

Scenarios: perfect tracking, an ID swap, fragments, false positives, misses, a crowded scene with swaps between
neighbours, duplicate predictions, a localisation sweep (IoU from 0.04 to 0.99), empty frames and gaps, an empty
prediction, no ground truth, and three random scenes.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

import trackeval
from trackeval.datasets._base_dataset import _BaseDataset

OUT = Path(__file__).resolve().with_name("mot_reference.json")
W, H = 640, 480


# ------------------------------------------------------------------------------------------------ scenarios
def walk(oid, frames, x0, y0, vx, vy, w, h):
    """Ground-truth rows of one object moving at constant speed over ``frames``."""
    return [[f, oid, round(x0 + vx * i, 2), round(y0 + vy * i, 2), w, h, 1, 1, 1.0] for i, f in enumerate(frames)]


def as_pred(rows, rng=None, jitter=0.0, ids=None, drop=0.0, score=0.9):
    """Prediction rows from ground-truth rows: jittered boxes, ids renamed by ``ids(frame, id)``, some dropped."""
    out = []
    for f, oid, x, y, w, h, *_ in rows:
        if drop and rng.random() < drop:
            continue
        box = [x, y, w, h]
        if jitter:
            box = [v + rng.normal(0, jitter) for v in box]
            box[2], box[3] = max(box[2], 1.0), max(box[3], 1.0)
        out.append([f, ids(f, oid) if ids else oid, *[round(v, 2) for v in box], score, 0, -1, -1])
    return out


def by_frame(rows):
    return sorted(rows, key=lambda r: (r[0], r[1]))


def perfect():
    gt = walk(1, range(1, 21), 50, 100, 5, 0, 40, 80) + walk(2, range(1, 21), 300, 200, -3, 2, 60, 60) \
        + walk(3, range(5, 21), 500, 50, 0, 4, 30, 70)
    rename = {1: 7, 2: 3, 3: 12}
    return by_frame(gt), by_frame(as_pred(gt, ids=lambda f, i: rename[i]))


def id_swap(rng):
    gt = walk(1, range(1, 31), 100, 200, 10, 0, 50, 100) + walk(2, range(1, 31), 400, 210, -10, 0, 50, 100)
    swap = {1: 2, 2: 1}
    return by_frame(gt), by_frame(as_pred(gt, rng, 1.5, ids=lambda f, i: swap[i] if f >= 16 else i))


def fragments(rng):
    gt = walk(1, range(1, 31), 60, 60, 6, 3, 40, 90) + walk(2, range(1, 31), 500, 300, -5, -2, 60, 50)

    def ids(f, i):
        if i == 1:
            return 1 if f < 18 else 5  # a new id after the second gap
        return 2 if f < 15 or f >= 25 else 9  # switches to 9, then back to 2

    pred = [r for r in as_pred(gt, rng, 1.0, ids=ids) if not (r[1] in (1, 5) and (8 <= r[0] <= 11 or 18 <= r[0] <= 20))]
    return by_frame(gt), by_frame(pred)


def false_positives(rng):
    gt = walk(1, range(1, 26), 80, 80, 4, 4, 50, 50) + walk(2, range(1, 26), 400, 100, -4, 6, 40, 100)
    pred = as_pred(gt, rng, 1.0)
    next_id = 100
    for f in range(1, 26):
        if rng.random() < 0.4:
            length = int(rng.integers(1, 4))
            x, y = rng.uniform(0, W - 60), rng.uniform(0, H - 60)
            for k in range(length):
                if f + k <= 25:
                    pred.append([f + k, next_id, round(x + 3 * k, 2), round(y, 2), 30.0, 30.0, 0.4, 0, -1, -1])
            next_id += 1
    return by_frame(gt), by_frame(pred)


def misses(rng):
    gt = []
    for oid in range(1, 5):
        gt += walk(oid, range(1, 31), 60 + 120 * oid, 100 + 20 * oid, 2 * (-1) ** oid, 3, 40, 80)
    return by_frame(gt), by_frame(as_pred(gt, rng, 2.0, drop=0.3))


def crowded(rng, n=10, frames=40):
    """``n`` objects in a small area (heavy overlap); predictions jittered, with swaps between neighbours."""
    pos = rng.uniform([150, 120], [330, 280], (n, 2))
    vel = rng.uniform(-3, 3, (n, 2))
    size = rng.uniform([30, 60], [50, 100], (n, 2))
    gt, pred = [], []
    ids = list(range(1, n + 1))
    next_id = 50
    for f in range(1, frames + 1):
        pos += vel
        bounce = (pos < [120, 100]) | (pos > [360, 300])
        vel[bounce] *= -1
        if rng.random() < 0.15:  # two neighbours swap their predicted ids
            i = int(rng.integers(n))
            j = int(np.argsort(np.linalg.norm(pos - pos[i], axis=1))[1])
            ids[i], ids[j] = ids[j], ids[i]
        if rng.random() < 0.05:  # one object gets a fresh id
            ids[int(rng.integers(n))] = next_id
            next_id += 1
        for i in range(n):
            box = [round(pos[i, 0], 2), round(pos[i, 1], 2), round(size[i, 0], 2), round(size[i, 1], 2)]
            gt.append([f, i + 1, *box, 1, 1, 1.0])
            if rng.random() < 0.08:
                continue
            noisy = [round(v + rng.normal(0, 4), 2) for v in box]
            pred.append([f, ids[i], *noisy, round(rng.uniform(0.3, 1), 4), 0, -1, -1])
    return by_frame(gt), by_frame(pred)


def duplicates(rng):
    """Two predicted tracks on one object (the better one changes), and one object split between two tracks."""
    gt = walk(1, range(1, 21), 100, 100, 5, 0, 60, 120) + walk(2, range(1, 21), 400, 300, -4, -3, 50, 50)
    pred = as_pred(gt, rng, 1.0)
    for f, oid, x, y, w, h, *_ in gt:
        if oid == 1:
            shift = 4 if f % 3 else 15
            pred.append([f, 3, x + shift, y + 2, w, h, 0.6, 0, -1, -1])
    return by_frame(gt), by_frame(pred)


def localisation():
    """Matched IoU sweeping 0.04 ... 0.99 (every alpha has its own TP count), plus constant-offset objects."""
    gt, pred = [], []
    for i, f in enumerate(range(1, 41)):
        x, y, w, h = 50.0 + 2 * i, 100.0, 80.0, 80.0
        gt.append([f, 1, x, y, w, h, 1, 1, 1.0])
        target = 0.04 + 0.95 * i / 39  # IoU of two equal boxes shifted by d along x: (w - d) / (w + d)
        d = round(w * (1 - target) / (1 + target), 2)
        pred.append([f, 1, x + d, y, w, h, 0.9, 0, -1, -1])
        gt.append([f, 2, 400.0, 300.0, 50.0, 50.0, 1, 1, 1.0])
        pred.append([f, 2, 400.0 + 12.5, 300.0 + 3.0, 50.0, 50.0, 0.9, 0, -1, -1])
    return by_frame(gt), by_frame(pred)


def gaps(rng):
    """Frames with nothing, frames with ground truth but no prediction, a prediction on a frame without ground
    truth, and a competing box right after a frame without predictions."""
    gt = [r for r in walk(1, range(1, 31), 100, 100, 3, 0, 60, 120) + walk(2, range(1, 31), 170, 105, 3, 0, 60, 120)
          if not 10 <= r[0] <= 12]
    pred = [r for r in as_pred(gt, rng, 0.5) if not 20 <= r[0] <= 22]
    pred.append([11, 8, 300.0, 300.0, 40.0, 40.0, 0.5, 0, -1, -1])
    for f in (23, 24):  # a new track hugging object 1 better than its own track does
        x = 100 + 3 * (f - 1)
        pred = [r for r in pred if not (r[0] == f and r[1] == 1)]
        pred.append([f, 1, x + 14.0, 100.0, 60.0, 120.0, 0.9, 0, -1, -1])
        pred.append([f, 6, x + 1.0, 100.0, 60.0, 120.0, 0.9, 0, -1, -1])
    return by_frame(gt), by_frame(pred)


def empty_prediction():
    gt = walk(1, range(1, 11), 50, 50, 5, 5, 40, 40) + walk(2, range(3, 9), 300, 50, 0, 5, 40, 80)
    return by_frame(gt), []


def no_ground_truth():
    pred = as_pred(walk(4, range(1, 9), 50, 50, 5, 5, 40, 40) + walk(5, range(2, 6), 300, 50, 0, 5, 40, 80))
    return [], by_frame(pred)


def random_scene(rng, frames=50, n=8):
    gt, pred = [], []
    next_id = 1000
    for oid in range(1, n + 1):
        start = int(rng.integers(1, frames // 2))
        end = int(rng.integers(start + 5, frames + 1))
        x, y = rng.uniform(0, W - 80), rng.uniform(0, H - 120)
        vx, vy = rng.uniform(-5, 5, 2)
        w, h = rng.uniform(20, 80), rng.uniform(40, 120)
        pid = oid
        for f in range(start, end + 1):
            box = [round(x + vx * (f - start), 2), round(y + vy * (f - start), 2), round(w, 2), round(h, 2)]
            gt.append([f, oid, *box, 1, 1, 1.0])
            if rng.random() < 0.04:
                pid = next_id
                next_id += 1
            if rng.random() < 0.1:
                continue
            pred.append([f, pid, *[round(v + rng.normal(0, 3), 2) for v in box], round(rng.uniform(0.3, 1), 4), 0,
                         -1, -1])
    for f in range(1, frames + 3):  # false positives, two frames past the ground truth too
        if rng.random() < 0.3:
            pred.append([f, next_id, round(rng.uniform(0, W - 40), 2), round(rng.uniform(0, H - 40), 2), 35.0,
                         35.0, 0.3, 0, -1, -1])
            next_id += 1
    return by_frame(gt), by_frame(pred)


def scenarios() -> dict[str, tuple[list, list]]:
    rng = np.random.default_rng(2024)
    return {
        "perfect": perfect(), "id_swap": id_swap(rng), "fragments": fragments(rng),
        "false_positives": false_positives(rng), "misses": misses(rng), "crowded": crowded(rng),
        "duplicates": duplicates(rng), "localisation": localisation(), "gaps": gaps(rng),
        "empty_prediction": empty_prediction(), "no_ground_truth": no_ground_truth(),
        "random_1": random_scene(rng), "random_2": random_scene(rng), "random_3": random_scene(rng, 60, 14),
    }


# ------------------------------------------------------------------------------------------------ trackeval
def trackeval_data(gt: list, pred: list, frames: int) -> dict:
    """The dict TrackEval's metric classes take, built as its MOT dataset builds it (without preprocessing)."""
    gt_a = np.array(gt, dtype=float).reshape(-1, 9)
    pred_a = np.array(pred, dtype=float).reshape(-1, 10)
    gt_ids, pred_ids = np.unique(gt_a[:, 1]), np.unique(pred_a[:, 1])
    data = {"num_timesteps": frames, "num_gt_ids": len(gt_ids), "num_tracker_ids": len(pred_ids),
            "num_gt_dets": len(gt_a), "num_tracker_dets": len(pred_a), "gt_ids": [], "tracker_ids": [],
            "similarity_scores": []}
    for f in range(1, frames + 1):
        g, p = gt_a[gt_a[:, 0] == f], pred_a[pred_a[:, 0] == f]
        data["gt_ids"].append(np.searchsorted(gt_ids, g[:, 1]).astype(int))
        data["tracker_ids"].append(np.searchsorted(pred_ids, p[:, 1]).astype(int))
        data["similarity_scores"].append(_BaseDataset._calculate_box_ious(g[:, 2:6], p[:, 2:6], box_format="xywh"))
    return data


def plain(value):
    """JSON-ready: numpy arrays and scalars to lists and floats."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [float(v) for v in value.ravel()] if value.ndim else float(value)
    if isinstance(value, (np.floating, np.integer, int, float)):
        return float(value)
    return value


def evaluate(metrics, data_per_seq: dict) -> tuple[dict, dict]:
    per_seq = {name: {m.get_name(): m.eval_sequence(data) for m in metrics} for name, data in data_per_seq.items()}
    combined = {m.get_name(): m.combine_sequences({name: res[m.get_name()] for name, res in per_seq.items()})
                for m in metrics}
    return per_seq, combined


# ------------------------------------------------------------------------------------------------ MOT17 layout
def mot17_benchmark(rng) -> dict:
    """Two MOT17-style sequences: pedestrians (class 1, flag 1), ignored pedestrians (flag 0), static persons
    (7) and reflections (12) that predictions may hit, cars (3) that count for nothing; seqinfo.ini longer than
    the annotations."""
    seqs = {}
    for name, frames, length in (("MOT17-90-DART", 25, 28), ("MOT17-91-DART", 20, 20)):
        gt = walk(1, range(1, frames + 1), 50, 80, 5, 0, 40, 100) + walk(2, range(1, frames + 1), 500, 90, -6, 1, 45, 110)
        static = [[f, 3, 300.0, 250.0, 40.0, 90.0, 0, 7, 0.8] for f in range(1, frames + 1)]
        ignored = [[f, 4, 150.0, 300.0, 35.0, 80.0, 0, 1, 0.3] for f in range(1, frames + 1)]
        car = [[f, 5, 400.0, 380.0, 120.0, 70.0, 0, 3, 1.0] for f in range(1, frames + 1)]
        reflection = [[f, 6, 200.0 + 2 * f, 40.0, 30.0, 60.0, 0, 12, 1.0] for f in range(1, frames // 2)]
        gt = by_frame(gt + static + ignored + car + reflection)
        pred = as_pred([r for r in gt if r[1] in (1, 2)], rng, 1.5, drop=0.1)
        for f in range(1, frames + 1):
            if f % 2:
                pred.append([f, 20, 301.0, 251.0, 40.0, 88.0, 0.5, 1, -1, -1])  # on the static person: removed
            if f % 3 == 0:
                pred.append([f, 21, 151.0, 300.0, 35.0, 80.0, 0.5, 1, -1, -1])  # on an ignored row: a false positive
            if f < 8:
                pred.append([f, 22, 402.0, 381.0, 118.0, 70.0, 0.5, 1, -1, -1])  # on the car: a false positive
            if f < frames // 2 and f % 4 == 1:
                pred.append([f, 23, 200.0 + 2 * f + 12.0, 40.0, 30.0, 60.0, 0.5, 1, -1, -1])  # IoU < 0.5: stays
        pred.append([length, 24, 100.0, 100.0, 30.0, 30.0, 0.5, 1, -1, -1])  # past the annotated frames
        seqs[name] = {"gt": gt, "pred": by_frame(pred), "frames": length}
    return seqs


def fmt(row) -> str:
    return ",".join(str(int(v)) if float(v).is_integer() else repr(float(v)) for v in row)


def run_mot17(seqs: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        gt_root, trk_root = root / "gt" / "MOT17-train", root / "trackers" / "MOT17-train" / "dart" / "data"
        trk_root.mkdir(parents=True)
        for name, seq in seqs.items():
            (gt_root / name / "gt").mkdir(parents=True)
            (gt_root / name / "gt" / "gt.txt").write_text("".join(fmt(r) + "\n" for r in seq["gt"]))
            (gt_root / name / "seqinfo.ini").write_text(f"[Sequence]\nname={name}\nseqLength={seq['frames']}\n")
            (trk_root / f"{name}.txt").write_text("".join(fmt(r) + "\n" for r in seq["pred"]))
        seqmap = root / "seqmap.txt"
        seqmap.write_text("name\n" + "".join(f"{n}\n" for n in seqs))
        eval_config = {**trackeval.Evaluator.get_default_eval_config(), "USE_PARALLEL": False, "PRINT_RESULTS": False,
                       "PRINT_CONFIG": False, "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False,
                       "PLOT_CURVES": False, "TIME_PROGRESS": False, "OUTPUT_EMPTY_CLASSES": False}
        data_config = {**trackeval.datasets.MotChallenge2DBox.get_default_dataset_config(),
                       "GT_FOLDER": str(root / "gt"), "TRACKERS_FOLDER": str(root / "trackers"),
                       "BENCHMARK": "MOT17", "SPLIT_TO_EVAL": "train", "TRACKERS_TO_EVAL": ["dart"],
                       "SEQMAP_FILE": str(seqmap), "PRINT_CONFIG": False}
        evaluator = trackeval.Evaluator(eval_config)
        metrics = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR({"PRINT_CONFIG": False}),
                   trackeval.metrics.Identity({"PRINT_CONFIG": False})]
        results, messages = evaluator.evaluate([trackeval.datasets.MotChallenge2DBox(data_config)], metrics)
        if messages["MotChallenge2DBox"]["dart"] != "Success":
            sys.exit(f"TrackEval failed: {messages}")
        res = results["MotChallenge2DBox"]["dart"]
        return {name: {k: v for k, v in res[name]["pedestrian"].items() if k in ("HOTA", "CLEAR", "Identity")}
                for name in [*seqs, "COMBINED_SEQ"]}


def main() -> None:
    seqs = scenarios()
    frames = {name: int(max([r[0] for r in gt + pred], default=0)) for name, (gt, pred) in seqs.items()}
    data = {name: trackeval_data(gt, pred, frames[name]) for name, (gt, pred) in seqs.items()}
    at_05 = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR({"PRINT_CONFIG": False}),
             trackeval.metrics.Identity({"PRINT_CONFIG": False})]
    at_03 = [trackeval.metrics.CLEAR({"THRESHOLD": 0.3, "PRINT_CONFIG": False}),
             trackeval.metrics.Identity({"THRESHOLD": 0.3, "PRINT_CONFIG": False})]
    per_seq, combined = evaluate(at_05, data)
    per_seq_03, combined_03 = evaluate(at_03, data)
    mot17 = mot17_benchmark(np.random.default_rng(17))
    mot17_results = run_mot17(mot17)
    out = {
        "generator": "tests/data/make_mot_reference.py",
        "trackeval": getattr(trackeval, "__version__", "1.3.0"),
        "sequences": {name: {"gt": gt, "pred": pred, "frames": frames[name], "trackeval": plain(per_seq[name]),
                             "trackeval_iou_0.3": plain(per_seq_03[name])}
                      for name, (gt, pred) in seqs.items()},
        "combined": plain(combined),
        "combined_iou_0.3": plain(combined_03),
        "mot17": {"sequences": mot17, "trackeval": plain(mot17_results)},
    }
    OUT.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB, {len(seqs)} scenarios + {len(mot17)} MOT17 sequences)")
    for name in seqs:
        h, c, i = (per_seq[name][k] for k in ("HOTA", "CLEAR", "Identity"))
        print(f"{name:18s} HOTA {np.mean(h['HOTA']):.3f} DetA {np.mean(h['DetA']):.3f} AssA {np.mean(h['AssA']):.3f} "
              f"MOTA {c['MOTA']:.3f} IDSW {c['IDSW']:.0f} Frag {c['Frag']:.0f} IDF1 {i['IDF1']:.3f}")


if __name__ == "__main__":
    main()
