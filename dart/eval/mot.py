"""Multi-object tracking accuracy on MOTChallenge files: HOTA, CLEAR MOT and identity metrics.

Written from the papers' definitions, with the conventions of TrackEval (the MOTChallenge evaluator), so the
figures are the ones the MOT leaderboards print (``tests/test_eval_mot.py`` compares them with TrackEval 1.3 to
1e-9 on recorded sequences, and IDF1 / MOTA / ID switches with motmetrics):

- HOTA (Luiten et al., IJCV 2020): at each localisation threshold alpha = 0.05, 0.10 ... 0.95, ground-truth and
  predicted boxes are matched one-to-one per frame by the Hungarian algorithm on ``alignment(gt id, pred id) *
  IoU``, where the alignment is the soft Jaccard overlap of the two trajectories over the whole sequence; a matched
  pair counts as a true positive at alpha if its IoU >= alpha. DetA = TP / (TP + FN + FP); AssA = the mean, over
  the true positives, of TPA / (TPA + FNA + FPA) of their pair of ids; HOTA = sqrt(DetA * AssA); DetRe, DetPr,
  AssRe, AssPr, LocA (mean IoU of the true positives) and OWTA = sqrt(DetRe * AssA) likewise. Every figure is the
  mean over the 19 alphas; HOTA(0) and LocA(0) are the values at the lowest alpha (0.05).
- CLEAR MOT (Bernardin & Stiefelhagen, 2008) at IoU >= ``iou`` (0.5): per-frame Hungarian matching that keeps
  the previous frame's pairs where it can; MOTA = 1 - (FN + FP + IDSW) / GT, MOTP (mean IoU of the matches),
  IDSW (a ground-truth object matched to another id than the last one it had), Frag (a ground-truth trajectory
  tracked again after an interruption), MT / PT / ML (tracked > 80 %, 20-80 %, < 20 % of its frames).
- Identity (Ristani et al., 2016) at IoU >= ``iou``: one global one-to-one matching of ground-truth ids to
  predicted ids maximising the frames they overlap; IDF1, IDP, IDR.

Combined over sequences as TrackEval does: HOTA sums the per-alpha TP / FN / FP and averages AssA, AssRe, AssPr
and LocA weighted by each sequence's TP; CLEAR and identity sum their counts and recompute the ratios.

Files: ``frame,id,x,y,w,h,conf,class,visibility`` (ground truth: ``conf`` is the "counts" flag) or
``frame,id,x,y,w,h,score,class,-1,-1`` (predictions, as ``dart track --save-mot`` writes them); frames count
from 1; boxes are top-left corner, width and height in pixels. By default every ground-truth row counts (custom
or synthetic ground truth). ``mot17=True`` applies the MOT17 preprocessing: predictions matched (IoU >= 0.5,
Hungarian) to a distractor (classes 2 person on vehicle, 7 static person, 8 distractor, 12 reflection) are
removed, then only pedestrian rows (class 1) with a non-zero flag stay in the ground truth.

Only numpy and scipy: importable without torch.
"""

from __future__ import annotations

import configparser
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from dart.errors import InputError
from dart.io import read_text

ALPHAS = np.arange(0.05, 0.99, 0.05)  # the 19 HOTA localisation thresholds, 0.05 ... 0.95
EPS = np.finfo(float).eps
COLUMNS = ("frame", "id", "x", "y", "w", "h", "conf", "class", "visibility")
PEDESTRIAN = 1
DISTRACTORS = (2, 7, 8, 12)  # MOT17: person on vehicle, static person, distractor, reflection

HOTA_CURVES = ("HOTA", "DetA", "AssA", "DetRe", "DetPr", "AssRe", "AssPr", "LocA", "OWTA")
HOTA_FIELDS = (*HOTA_CURVES, "HOTA(0)", "LocA(0)", "HOTALocA(0)")
CLEAR_FIELDS = ("MOTA", "MOTP", "MODA", "sMOTA", "MOTAL", "Recall", "Precision", "TP", "FP", "FN", "IDSW", "Frag",
                "MT", "PT", "ML")
IDENTITY_FIELDS = ("IDF1", "IDP", "IDR", "IDTP", "IDFP", "IDFN")
COUNT_FIELDS = ("Frames", "GT", "Pred", "GT_IDs", "Pred_IDs")

Rows = np.ndarray  # (N, 9) float64: COLUMNS
Source = str | Path | Mapping[str, Any]


# ------------------------------------------------------------------------------------------------ reading
def read_mot(path: str | Path) -> Rows:
    """Rows of a MOTChallenge text file as an ``(N, 9)`` float array: frame, id, x, y, w, h, conf, class,
    visibility (columns a file leaves out get conf 1, class -1, visibility -1; a 10th column is dropped).

    A missing file, a line that is not numbers, a frame or id that is not an integer, or a negative width or
    height is one :class:`InputError` sentence naming the file and line."""
    text = read_text(path, "MOT file")
    rows, numbers = [], []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            values = [float(p) for p in line.replace(",", " ").split()[:9]]
        except ValueError:
            values = []
        if len(values) < 6 or not all(map(math.isfinite, values)):
            raise InputError(f"{path}:{number} is not a MOT row (frame,id,x,y,w,h[,conf,class,visibility]): "
                             f"'{line[:60]}'.")
        rows.append(values + [1.0, -1.0, -1.0][len(values) - 6:])
        numbers.append(number)
    return _checked(np.array(rows, dtype=np.float64).reshape(-1, 9), str(path), numbers)


def _checked(rows: np.ndarray, where: str, lines: list[int] | None = None) -> Rows:
    """``rows`` as ``(N, 9)`` float64 (missing columns filled in), or an InputError naming the bad row (or
    file line)."""
    try:
        rows = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: MOT rows must be a table of numbers ({exc}).") from exc
    if rows.size == 0:
        return np.zeros((0, 9))
    if rows.ndim == 1:
        rows = rows[None]
    if rows.ndim != 2 or (len(rows) and rows.shape[1] < 6):
        raise InputError(f"{where}: MOT rows need at least 6 columns (frame,id,x,y,w,h), got shape {rows.shape}.")
    if rows.shape[1] < 9:
        fill = np.tile(np.array([1.0, -1.0, -1.0])[rows.shape[1] - 6:], (len(rows), 1))
        rows = np.concatenate([rows, fill], axis=1)
    rows = rows[:, :9]

    def place(i: int) -> str:
        return f"{where}:{lines[i]}" if lines else f"{where}, row {i + 1}"

    bad = np.flatnonzero((rows[:, :2] != np.round(rows[:, :2])).any(axis=1) | (rows[:, 0] < 0))
    if len(bad):
        raise InputError(f"{place(bad[0])} has frame {rows[bad[0], 0]:g} and id {rows[bad[0], 1]:g}; frames (from 1) "
                         "and ids must be whole numbers.")
    bad = np.flatnonzero((rows[:, 4] < 0) | (rows[:, 5] < 0))
    if len(bad):
        raise InputError(f"{place(bad[0])} has a negative width or height ({rows[bad[0], 4]:g} x "
                         f"{rows[bad[0], 5]:g}).")
    return rows


def sequence_files(path: str | Path, what: str = "ground truth") -> dict[str, Path]:
    """``{sequence: file}`` for a MOT file (its sequence is its name, or ``SEQ`` for ``SEQ/gt/gt.txt``) or a
    folder of ``<sequence>.txt`` files and/or MOTChallenge ``<sequence>/gt/gt.txt`` folders."""
    path = Path(path)
    if path.is_file():
        return {_sequence_name(path): path}
    if not path.is_dir():
        raise InputError(f"{what} '{path}' does not exist: give a MOT .txt file or a folder of <sequence>.txt files.")
    files = {p.stem: p for p in sorted(path.glob("*.txt"))}
    for gt in sorted(path.glob("*/gt/gt.txt")):
        name = gt.parent.parent.name
        if name in files:
            raise InputError(f"sequence '{name}' is in {what} '{path}' twice ({files[name].name} and {name}/gt/gt.txt).")
        files[name] = gt
    if not files and (path / "data").is_dir():  # TrackEval's tracker layout: TRACKER/data/<sequence>.txt
        files = {p.stem: p for p in sorted((path / "data").glob("*.txt"))}
    if not files:
        raise InputError(f"{what} folder '{path}' has no <sequence>.txt file and no <sequence>/gt/gt.txt.")
    return files


def _sequence_name(path: Path) -> str:
    if path.name == "gt.txt" and path.parent.name == "gt" and path.parent.parent.name:
        return path.parent.parent.name
    return path.stem


def _sequence_length(gt_file: Path) -> int | None:
    """``seqLength`` from a MOTChallenge ``seqinfo.ini`` beside ``SEQ/gt/gt.txt`` (None without one)."""
    ini = gt_file.parent.parent / "seqinfo.ini"
    if gt_file.name != "gt.txt" or not ini.is_file():
        return None
    parser = configparser.ConfigParser()
    try:
        parser.read(ini, encoding="utf-8")
        return int(parser["Sequence"]["seqLength"])
    except (configparser.Error, KeyError, ValueError):
        return None


def _load(source: Source, what: str) -> tuple[dict[str, Rows], dict[str, int]]:
    """``({sequence: rows}, {sequence: length from seqinfo.ini})`` from a path or a mapping of rows / paths."""
    if isinstance(source, Mapping):
        items = dict(source)
    else:
        items = sequence_files(source, what)
    sequences, lengths = {}, {}
    for name, value in items.items():
        if isinstance(value, (str, Path)):
            sequences[name] = read_mot(value)
            length = _sequence_length(Path(value))
            if length is not None:
                lengths[name] = length
        else:
            sequences[name] = _checked(value, f"{what} sequence '{name}'")
    return sequences, lengths


# ------------------------------------------------------------------------------------------------ geometry
def iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``[x, y, w, h]`` boxes, ``(len(a), len(b))``; 0 where the union is empty."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ax1, ay1, bx1, by1 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax1[:, None], bx1[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(ay1[:, None], by1[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > EPS)
    return np.clip(out, 0.0, 1.0)


def _max_match(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the one-to-one assignment maximising the summed ``score``."""
    return linear_sum_assignment(score, maximize=True)


# ------------------------------------------------------------------------------------------------ sequences
@dataclass
class _Frames:
    """One sequence ready for scoring: per frame, the contiguous gt / pred id indices and their IoU matrix."""

    gt: list[np.ndarray]
    pred: list[np.ndarray]
    iou: list[np.ndarray]
    num_gt_ids: int
    num_pred_ids: int
    num_gt: int
    num_pred: int


def _mot17_filter(gt: Rows, pred: Rows) -> tuple[Rows, Rows]:
    """MOT17 preprocessing, frame by frame: drop predictions that a Hungarian match at IoU >= 0.5 pairs with a
    distractor, then keep only pedestrian ground truth with a non-zero flag."""
    keep_pred = np.ones(len(pred), dtype=bool)
    for frame in np.intersect1d(gt[:, 0], pred[:, 0]):
        gi, pi = np.flatnonzero(gt[:, 0] == frame), np.flatnonzero(pred[:, 0] == frame)
        score = iou_xywh(gt[gi, 2:6], pred[pi, 2:6])
        score[score < 0.5 - EPS] = 0.0
        rows, cols = _max_match(score)
        matched = score[rows, cols] > EPS
        distractor = np.isin(gt[gi[rows[matched]], 7], DISTRACTORS)
        keep_pred[pi[cols[matched][distractor]]] = False
    keep_gt = (gt[:, 6] != 0) & (gt[:, 7] == PEDESTRIAN)
    return gt[keep_gt], pred[keep_pred]


def _prepare(name: str, gt: Rows, pred: Rows, num_frames: int) -> _Frames:
    gt_ids, gt_idx = np.unique(gt[:, 1].astype(np.int64), return_inverse=True)
    pred_ids, pred_idx = np.unique(pred[:, 1].astype(np.int64), return_inverse=True)
    first = int(min(1, gt[:, 0].min(initial=1), pred[:, 0].min(initial=1)))
    frames = _Frames([], [], [], len(gt_ids), len(pred_ids), len(gt), len(pred))
    gt_frame, pred_frame = gt[:, 0].astype(np.int64), pred[:, 0].astype(np.int64)
    gt_order, pred_order = np.argsort(gt_frame, kind="stable"), np.argsort(pred_frame, kind="stable")
    gt_bounds = np.searchsorted(gt_frame[gt_order], np.arange(first, num_frames + 2))
    pred_bounds = np.searchsorted(pred_frame[pred_order], np.arange(first, num_frames + 2))
    for t in range(num_frames - first + 1):
        gi = gt_order[gt_bounds[t]:gt_bounds[t + 1]]
        pi = pred_order[pred_bounds[t]:pred_bounds[t + 1]]
        for label, idx, ids in (("ground truth", gi, gt_idx), ("prediction", pi, pred_idx)):
            if len(np.unique(ids[idx])) != len(idx):
                raise InputError(f"sequence '{name}': the {label} has the same id twice in frame {t + first}.")
        frames.gt.append(gt_idx[gi])
        frames.pred.append(pred_idx[pi])
        frames.iou.append(iou_xywh(gt[gi, 2:6], pred[pi, 2:6]))
    return frames


def _hota(seq: _Frames) -> dict[str, np.ndarray]:
    """Per-alpha HOTA counts of one sequence: TP, FN, FP, LocA, AssA, AssRe, AssPr (arrays over ALPHAS)."""
    n_gt, n_pred = seq.num_gt_ids, seq.num_pred_ids
    # 1. how well each (gt id, pred id) pair of trajectories aligns over the whole sequence (soft Jaccard)
    overlap = np.zeros((n_gt, n_pred))
    gt_count, pred_count = np.zeros(n_gt), np.zeros(n_pred)
    for g, p, iou in zip(seq.gt, seq.pred, seq.iou):
        gt_count[g] += 1
        pred_count[p] += 1
        if len(g) and len(p):
            union = iou.sum(axis=1, keepdims=True) + iou.sum(axis=0, keepdims=True) - iou
            soft = np.zeros_like(iou)
            np.divide(iou, union, out=soft, where=union > EPS)
            overlap[g[:, None], p[None, :]] += soft
    alignment = overlap / np.maximum(gt_count[:, None] + pred_count[None, :] - overlap, EPS)
    # 2. per frame, the matching that maximises alignment x IoU; true positives at each alpha
    pairs_g, pairs_p, pairs_iou = [], [], []
    for g, p, iou in zip(seq.gt, seq.pred, seq.iou):
        if len(g) and len(p):
            rows, cols = _max_match(alignment[g[:, None], p[None, :]] * iou)
            pairs_g.append(g[rows])
            pairs_p.append(p[cols])
            pairs_iou.append(iou[rows, cols])
    if pairs_g:
        pg, pp, piou = np.concatenate(pairs_g), np.concatenate(pairs_p), np.concatenate(pairs_iou)
    else:
        pg = pp = np.zeros(0, dtype=np.int64)
        piou = np.zeros(0)
    hit = piou[None, :] >= ALPHAS[:, None] - EPS  # (alphas, matched pairs)
    tp = hit.sum(axis=1).astype(np.float64)
    loc = np.where(hit, piou[None, :], 0.0).sum(axis=1)
    # 3. association: per alpha, how often each id pair is a true positive, against the two ids' lengths
    ass_a, ass_re, ass_pr = np.zeros(len(ALPHAS)), np.zeros(len(ALPHAS)), np.zeros(len(ALPHAS))
    pair = pg * n_pred + pp
    for a in range(len(ALPHAS)):
        tpa = np.bincount(pair[hit[a]], minlength=n_gt * n_pred).reshape(n_gt, n_pred).astype(np.float64)
        ass_a[a] = (tpa * tpa / np.maximum(1.0, gt_count[:, None] + pred_count[None, :] - tpa)).sum()
        ass_re[a] = (tpa * tpa / np.maximum(1.0, gt_count[:, None])).sum()
        ass_pr[a] = (tpa * tpa / np.maximum(1.0, pred_count[None, :])).sum()
    return {"TP": tp, "FN": seq.num_gt - tp, "FP": seq.num_pred - tp,
            "AssA": ass_a / np.maximum(1.0, tp), "AssRe": ass_re / np.maximum(1.0, tp),
            "AssPr": ass_pr / np.maximum(1.0, tp), "LocA": np.maximum(1e-10, loc) / np.maximum(1e-10, tp)}


def _hota_final(c: dict[str, np.ndarray]) -> tuple[dict[str, float], dict[str, list[float]]]:
    tp, fn, fp = c["TP"], c["FN"], c["FP"]
    curves = {"DetRe": tp / np.maximum(1.0, tp + fn), "DetPr": tp / np.maximum(1.0, tp + fp),
              "DetA": tp / np.maximum(1.0, tp + fn + fp), "AssA": c["AssA"], "AssRe": c["AssRe"],
              "AssPr": c["AssPr"], "LocA": c["LocA"]}
    curves["HOTA"] = np.sqrt(curves["DetA"] * curves["AssA"])
    curves["OWTA"] = np.sqrt(curves["DetRe"] * curves["AssA"])
    metrics = {k: float(np.mean(curves[k])) for k in HOTA_CURVES}
    metrics["HOTA(0)"] = float(curves["HOTA"][0])
    metrics["LocA(0)"] = float(curves["LocA"][0])
    metrics["HOTALocA(0)"] = metrics["HOTA(0)"] * metrics["LocA(0)"]
    out = {k: [float(v) for v in curves[k]] for k in HOTA_CURVES}
    out.update({k: [float(v) for v in c[k]] for k in ("TP", "FN", "FP")})
    return metrics, out


def _clear(seq: _Frames, iou_thresh: float) -> dict[str, float]:
    """CLEAR MOT counts of one sequence: TP, FN, FP, IDSW, MOTP_sum, MT, PT, ML, Frag, Frames."""
    n = seq.num_gt_ids
    last = np.full(n, -1)  # the pred id each gt object was last matched to (kept across gaps): ID switches
    previous = np.full(n, -1)  # the pred id matched on the last frame that had both gt and predictions
    present, tracked, starts = np.zeros(n), np.zeros(n), np.zeros(n)
    tp = fn = fp = idsw = 0
    motp = 0.0
    for g, p, iou in zip(seq.gt, seq.pred, seq.iou):
        if not len(g):
            fp += len(p)
            continue
        present[g] += 1
        if not len(p):
            fn += len(g)
            continue
        # keeping last frame's pairs outweighs any IoU gain; pairs under the threshold never match
        score = 1000.0 * (previous[g][:, None] == p[None, :]) + iou
        score[iou < iou_thresh - EPS] = 0.0
        rows, cols = _max_match(score)
        ok = score[rows, cols] > EPS
        mg, mp = g[rows[ok]], p[cols[ok]]
        idsw += int(((last[mg] >= 0) & (last[mg] != mp)).sum())
        last[mg] = mp
        was_tracked = previous >= 0
        previous[:] = -1
        previous[mg] = mp
        starts += (previous >= 0) & ~was_tracked
        tracked[mg] += 1
        tp += len(mg)
        fn += len(g) - len(mg)
        fp += len(p) - len(mg)
        motp += float(iou[rows[ok], cols[ok]].sum())
    ratio = tracked[present > 0] / present[present > 0]
    mt = int((ratio > 0.8).sum())
    pt = int((ratio >= 0.2).sum()) - mt
    return {"TP": tp, "FN": fn, "FP": fp, "IDSW": idsw, "MOTP_sum": motp, "MT": mt, "PT": pt, "ML": n - mt - pt,
            "Frag": float((starts[starts > 0] - 1).sum()), "Frames": len(seq.gt)}


def _clear_final(c: dict[str, float], sequence: bool = False) -> dict[str, float]:
    tp, fn, fp, idsw = c["TP"], c["FN"], c["FP"], c["IDSW"]
    gt = max(1.0, tp + fn)
    out = {k: float(c[k]) for k in ("TP", "FP", "FN", "IDSW", "Frag", "MT", "PT", "ML")}
    out.update(MOTA=(tp - fp - idsw) / gt, MOTP=c["MOTP_sum"] / max(1.0, tp), MODA=(tp - fp) / gt,
               sMOTA=(c["MOTP_sum"] - fp - idsw) / gt, MOTAL=(tp - fp - (math.log10(idsw) if idsw else 0.0)) / gt,
               Recall=tp / gt, Precision=tp / max(1.0, tp + fp))
    if sequence and tp + fn == 0:  # as TrackEval: a sequence with no ground truth has MOTA 0, not -FP
        out.update(MOTA=0.0, MODA=0.0, sMOTA=0.0, MOTAL=0.0)
    return out


def _identity(seq: _Frames, iou_thresh: float) -> dict[str, float]:
    """IDTP, IDFN, IDFP of one sequence: the best one-to-one matching of whole trajectories."""
    together = np.zeros((seq.num_gt_ids, seq.num_pred_ids))
    for g, p, iou in zip(seq.gt, seq.pred, seq.iou):
        gi, pi = np.nonzero(iou >= iou_thresh - EPS)
        np.add.at(together, (g[gi], p[pi]), 1.0)
    idtp = float(together[_max_match(together)].sum()) if together.size else 0.0
    return {"IDTP": idtp, "IDFN": seq.num_gt - idtp, "IDFP": seq.num_pred - idtp}


def _identity_final(c: dict[str, float]) -> dict[str, float]:
    idtp, idfn, idfp = c["IDTP"], c["IDFN"], c["IDFP"]
    return {"IDF1": idtp / max(1.0, idtp + 0.5 * idfp + 0.5 * idfn), "IDP": idtp / max(1.0, idtp + idfp),
            "IDR": idtp / max(1.0, idtp + idfn), "IDTP": idtp, "IDFP": idfp, "IDFN": idfn}


# ------------------------------------------------------------------------------------------------ report
@dataclass
class MotReport:
    """Per-sequence and combined figures (ratios in [0, 1], counts as floats), named as TrackEval names them
    (CLEAR's ``CLR_TP``/``CLR_FP``/``CLR_FN``/``CLR_Re``/``CLR_Pr`` are ``TP``/``FP``/``FN``/``Recall``/
    ``Precision`` here). ``curves`` holds the HOTA figures at each of the 19 alphas (``ALPHAS``);
    ``missing`` lists ground-truth sequences that had no prediction file (scored as empty), ``extra``
    prediction sequences with no ground truth (ignored)."""

    rows: dict[str, dict[str, float]]
    combined: dict[str, float]
    curves: dict[str, dict[str, list[float]]]
    combined_curves: dict[str, list[float]]
    iou: float = 0.5
    mot17: bool = False
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"iou": self.iou, "mot17": self.mot17, "alphas": [round(float(a), 2) for a in ALPHAS],
                "sequences": self.rows, "combined": self.combined, "curves": self.curves,
                "combined_curves": self.combined_curves, "missing": self.missing, "extra": self.extra}


def evaluate_mot(gt: Source, pred: Source, iou: float = 0.5, mot17: bool = False) -> MotReport:
    """Score tracker output against ground truth, per sequence and combined.

    ``gt`` and ``pred`` are each a MOT file, a folder of ``<sequence>.txt`` (ground truth may also use the
    MOTChallenge ``<sequence>/gt/gt.txt`` layout, with ``seqinfo.ini`` for the length), or a mapping
    ``{sequence: rows or path}`` where rows are ``(N, >=6)`` arrays in file column order. A single ground-truth
    file is matched with a single prediction file whatever its name, or with ``<sequence>.txt`` in a prediction
    folder. ``iou`` is the match threshold of CLEAR and identity metrics (HOTA uses all 19 alphas)."""
    if not 0.0 < iou <= 1.0:
        raise InputError(f"the IoU threshold must be in (0, 1], got {iou}.")
    gt_seqs, lengths = _load(gt, "ground truth")
    if not gt_seqs:
        raise InputError("the ground truth has no sequence.")
    if not isinstance(pred, Mapping) and Path(pred).is_file() and len(gt_seqs) == 1:
        pred = {next(iter(gt_seqs)): pred}
    elif not isinstance(pred, Mapping) and Path(pred).is_file():
        raise InputError(f"the ground truth has {len(gt_seqs)} sequences: give a folder of <sequence>.txt "
                         f"predictions, not the single file '{pred}'.")
    pred_seqs, _ = _load(pred, "predictions")
    missing = [name for name in gt_seqs if name not in pred_seqs]
    extra = sorted(name for name in pred_seqs if name not in gt_seqs)
    rows, curves, hota_all, clear_all, ident_all = {}, {}, [], [], []
    for name, g in gt_seqs.items():
        p = pred_seqs.get(name, np.zeros((0, 9)))
        if mot17:
            g, p = _mot17_filter(g, p)
        last = int(max(g[:, 0].max(initial=0), p[:, 0].max(initial=0), lengths.get(name, 0)))
        seq = _prepare(name, g, p, last)
        h, c, i = _hota(seq), _clear(seq, iou), _identity(seq, iou)
        hota_all.append(h)
        clear_all.append(c)
        ident_all.append(i)
        metrics, curves[name] = _hota_final(h)
        metrics.update(_clear_final(c, sequence=True))
        metrics.update(_identity_final(i))
        metrics.update(Frames=float(c["Frames"]), GT=float(seq.num_gt), Pred=float(seq.num_pred),
                       GT_IDs=float(seq.num_gt_ids), Pred_IDs=float(seq.num_pred_ids))
        rows[name] = metrics
    combined, combined_curves = _combine(rows, hota_all, clear_all, ident_all)
    return MotReport(rows, combined, curves, combined_curves, iou=iou, mot17=mot17, missing=missing, extra=extra)


def _combine(rows, hota_all, clear_all, ident_all) -> tuple[dict[str, float], dict[str, list[float]]]:
    tp = sum(h["TP"] for h in hota_all)
    hota = {"TP": tp, "FN": sum(h["FN"] for h in hota_all), "FP": sum(h["FP"] for h in hota_all)}
    for key in ("AssA", "AssRe", "AssPr"):
        hota[key] = sum(h[key] * h["TP"] for h in hota_all) / np.maximum(1e-10, tp)
    hota["LocA"] = np.maximum(1e-10, sum(h["LocA"] * h["TP"] for h in hota_all)) / np.maximum(1e-10, tp)
    metrics, curves = _hota_final(hota)
    metrics.update(_clear_final({k: sum(c[k] for c in clear_all) for k in clear_all[0]}))
    metrics.update(_identity_final({k: sum(i[k] for i in ident_all) for k in ident_all[0]}))
    for key in COUNT_FIELDS:
        metrics[key] = float(sum(r[key] for r in rows.values()))
    return metrics, curves


TABLE = (("HOTA", "pct"), ("DetA", "pct"), ("AssA", "pct"), ("LocA", "pct"), ("MOTA", "pct"), ("IDF1", "pct"),
         ("IDSW", "int"), ("Frag", "int"), ("FP", "int"), ("FN", "int"))


def report_table(report: MotReport, title: str = "MOT evaluation"):
    """A rich table: one row per sequence, then the combined row; ratios in percent (every figure is in
    ``report.to_dict()``)."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)
    longest = max([len(name) + 2 for name in report.rows] + [8])
    table.add_column("sequence", style="bold", min_width=min(longest, 14), overflow="fold")
    for name, _ in TABLE:
        table.add_column(name, justify="right", no_wrap=True)

    def cells(m: dict[str, float]) -> list[str]:
        return [f"{100 * m[k]:.1f}" if kind == "pct" else f"{int(m[k])}" for k, kind in TABLE]

    for name, metrics in report.rows.items():
        table.add_row(name + (" *" if name in report.missing else ""), *cells(metrics))
    if len(report.rows) > 1:
        table.add_section()
        table.add_row("combined", *cells(report.combined), style="bold")
    table.caption = (f"HOTA, DetA, AssA, LocA: mean over IoU 0.05..0.95; MOTA, IDF1, IDSW, Frag, FP, FN at IoU >= "
                     f"{report.iou:g}" + ("; MOT17 rules" if report.mot17 else "")
                     + ("; * no prediction file (scored as empty)" if report.missing else ""))
    return table
