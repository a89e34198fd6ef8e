"""Association helpers for trackers: IoU (between every pair of two box sets, or along a list of pairs), the pairs of
boxes that overlap at all, and thresholded minimum-cost assignment (Hungarian / LAPJV via
``scipy.optimize.linear_sum_assignment``), dense or over a sparse list of candidate pairs."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

_SLACK = 1e-4  # inadmissible pairs cost max_cost + _SLACK in the solver: never preferred to leaving both unmatched


def pair_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of the boxes ``a`` with the boxes ``b`` element by element, one coordinate (x1, y1, x2, y2) per row of
    the first axis: ``a [4, E]``, ``b [4, E]`` -> ``[E]`` (any shapes that broadcast after the first axis)."""
    inter = np.minimum(a[2:], b[2:])
    inter -= np.maximum(a[:2], b[:2])
    np.maximum(inter, 0, out=inter)  # overlap width and height
    size_a, size_b = a[2:] - a[:2], b[2:] - b[:2]
    iou = inter[0] * inter[1]
    union = size_a[0] * size_a[1] + size_b[0] * size_b[1]
    union -= iou
    np.maximum(union, 1e-12, out=union)
    iou /= union
    return iou


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a [N, 4]`` with every box in ``b [M, 4]`` (xyxy) -> ``[N, M]``.

    Computed in float32 when both inputs are float32 (what trackers use: half the memory traffic), else float64.
    """
    dtype = np.float32 if (np.asarray(a).dtype == np.float32 and np.asarray(b).dtype == np.float32) else np.float64
    a = np.asarray(a, dtype=dtype).reshape(-1, 4)
    b = np.asarray(b, dtype=dtype).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=dtype)
    return pair_iou(a.T[:, :, None], b.T.copy()[:, None, :])  # [4, N, 1] with [4, 1, M]


def overlapping_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)`` of the pairs ``a[rows[k]]``, ``b[cols[k]]`` (xyxy) whose boxes overlap in both x and y,
    in row-major order: every pair with a non-zero :func:`box_iou` is among them."""
    if not len(a) or not len(b):
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    a, b = a.T[:, :, None], b.T.copy()[:, None, :]  # [4, N, 1] and contiguous [4, 1, M]
    overlap = a[2:] > b[:2]  # [2, N, M]: x2 of a beyond x1 of b, and the same in y
    overlap &= b[2:] > a[:2]
    return np.divmod(np.flatnonzero(overlap[0] & overlap[1]), b.shape[2])


def sparse_assignment(rows: np.ndarray, cols: np.ndarray, cost: np.ndarray,
                      max_cost: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`linear_assignment` over a sparse cost matrix: ``cost[k]`` is the cost of pairing ``rows[k]`` with
    ``cols[k]`` (each pair listed once), and every pair not listed costs more than ``max_cost + 1e-4``.
    Returns the matched ``(rows, cols)``, only pairs with ``cost <= max_cost``.

    The solver only sees the pairs that compete: a pair alone in its row and its column (in the usual frame, most
    of them) is matched without it; the others go to ``linear_sum_assignment`` as one small dense matrix.
    """
    admissible = cost <= max_cost
    rows_ok, cols_ok = rows[admissible], cols[admissible]
    if not len(rows_ok) or (np.bincount(rows_ok).max() <= 1 and np.bincount(cols_ok).max() <= 1):
        # every row and column has at most one admissible pair: those pairs are the unique optimum (each saves
        # at least 1e-4 over leaving both sides unmatched, and none competes with another), no solver needed
        return rows_ok, cols_ok
    # In the solver a pair costs min(cost, limit): those just above max_cost still count (then get dropped), so
    # they take part in the competition like admissible ones.
    limit = cost.dtype.type(max_cost + _SLACK)  # rounded to the costs' precision, as the solver would see it
    near = cost < limit
    rows, cols, cost = rows[near], cols[near], cost[near]
    alone = (np.bincount(rows).take(rows) == 1) & (np.bincount(cols).take(cols) == 1)
    compete = ~alone
    alone &= cost <= max_cost
    rows_sub, cols_sub = rows[compete], cols[compete]
    r_sub, c_sub = np.bincount(rows_sub).nonzero()[0], np.bincount(cols_sub).nonzero()[0]  # sorted, unique
    sub = np.empty((len(r_sub), len(c_sub)), dtype=cost.dtype)
    sub.fill(limit)
    sub[np.searchsorted(r_sub, rows_sub), np.searchsorted(c_sub, cols_sub)] = cost[compete]
    i, j = linear_sum_assignment(sub)
    keep = sub[i, j] <= max_cost
    return np.concatenate([rows[alone], r_sub[i[keep]]]), np.concatenate([cols[alone], c_sub[j[keep]]])


def linear_assignment(cost: np.ndarray, max_cost: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one matching that only accepts pairs with ``cost <= max_cost``.

    Returns ``(matches [K, 2] (row, col), unmatched_rows, unmatched_cols)``.
    """
    n_rows, n_cols = cost.shape
    rows, cols = np.nonzero(cost <= max_cost + 2 * _SLACK)  # every pair the solver would not ignore, and more
    r, c = sparse_assignment(rows, cols, cost[rows, cols], max_cost)
    matches = np.stack([r, c], axis=1).astype(np.int64, copy=False).reshape(-1, 2)
    row_free = np.ones(n_rows, dtype=bool)
    col_free = np.ones(n_cols, dtype=bool)
    row_free[r] = False
    col_free[c] = False
    return matches, row_free.nonzero()[0], col_free.nonzero()[0]
