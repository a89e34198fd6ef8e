"""Association helpers for trackers: pairwise IoU and thresholded minimum-cost assignment (Hungarian / LAPJV
via ``scipy.optimize.linear_sum_assignment``)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a [N, 4]`` with every box in ``b [M, 4]`` (xyxy) -> ``[N, M]``.

    Computed in float32 when both inputs are float32 (what trackers use: half the memory traffic), else float64.
    """
    dtype = np.float32 if (np.asarray(a).dtype == np.float32 and np.asarray(b).dtype == np.float32) else np.float64
    a = np.asarray(a, dtype=dtype).reshape(-1, 4)
    b = np.asarray(b, dtype=dtype).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=dtype)
    ax1, ay1, ax2, ay2 = a.T[:, :, None]  # columns [N, 1]
    bx1, by1, bx2, by2 = b.T.copy()  # contiguous rows [M]: the inner loop of every broadcast operation below
    inter = np.minimum(ax2, bx2)
    inter -= np.maximum(ax1, bx1)
    np.maximum(inter, 0, out=inter)
    height = np.minimum(ay2, by2)
    height -= np.maximum(ay1, by1)
    np.maximum(height, 0, out=height)
    inter *= height
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1)
    union -= inter
    np.maximum(union, 1e-12, out=union)
    inter /= union
    return inter


def linear_assignment(cost: np.ndarray, max_cost: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one matching that only accepts pairs with ``cost <= max_cost``.

    Returns ``(matches [K, 2] (row, col), unmatched_rows, unmatched_cols)``.
    """
    rows, cols = cost.shape
    if not rows or not cols:
        return np.empty((0, 2), dtype=np.int64), np.arange(rows), np.arange(cols)
    admissible = cost <= max_cost
    per_row = admissible.sum(axis=1)
    per_col = admissible.sum(axis=0)
    if per_row.max() <= 1 and per_col.max() <= 1:
        # every row and column has at most one admissible pair: those pairs are the unique optimum (each saves
        # at least 1e-4 over leaving both sides unmatched, and none competes with another), no solver needed
        r = per_row.nonzero()[0]
        c = admissible[r].argmax(axis=1)
        free_rows = (per_row == 0).nonzero()[0]
        free_cols = (per_col == 0).nonzero()[0]
    else:
        # inadmissible pairs cost just above the limit: never preferred to leaving both sides unmatched
        r, c = linear_sum_assignment(np.minimum(cost, max_cost + 1e-4))
        keep = admissible[r, c]
        r, c = r[keep], c[keep]
        row_free = np.ones(rows, dtype=bool)
        col_free = np.ones(cols, dtype=bool)
        row_free[r] = False
        col_free[c] = False
        free_rows, free_cols = row_free.nonzero()[0], col_free.nonzero()[0]
    matches = np.empty((len(r), 2), dtype=np.int64)
    matches[:, 0] = r
    matches[:, 1] = c
    return matches, free_rows, free_cols
