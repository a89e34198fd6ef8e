"""Association helpers for trackers: pairwise IoU and thresholded minimum-cost assignment (Hungarian / LAPJV
via ``scipy.optimize.linear_sum_assignment``)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a [N, 4]`` with every box in ``b [M, 4]`` (xyxy) -> ``[N, M]``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iw = np.minimum(a[:, 2:3], b[:, 2]) - np.maximum(a[:, 0:1], b[:, 0])
    ih = np.minimum(a[:, 3:4], b[:, 3]) - np.maximum(a[:, 1:2], b[:, 1])
    np.maximum(iw, 0.0, out=iw)
    np.maximum(ih, 0.0, out=ih)
    inter = iw * ih
    union = area_a[:, None] + area_b - inter
    np.maximum(union, 1e-12, out=union)
    return inter / union


def linear_assignment(cost: np.ndarray, max_cost: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one matching that only accepts pairs with ``cost <= max_cost``.

    Returns ``(matches [K, 2] (row, col), unmatched_rows, unmatched_cols)``.
    """
    rows, cols = cost.shape
    if rows == 0 or cols == 0:
        return np.empty((0, 2), dtype=np.int64), np.arange(rows), np.arange(cols)
    # inadmissible pairs cost just above the limit: never preferred to leaving both sides unmatched
    bounded = np.minimum(cost, max_cost + 1e-4)
    r, c = linear_sum_assignment(bounded)
    keep = bounded[r, c] <= max_cost
    r, c = r[keep], c[keep]
    row_free = np.ones(rows, dtype=bool)
    col_free = np.ones(cols, dtype=bool)
    row_free[r] = False
    col_free[c] = False
    return np.stack([r, c], axis=1).astype(np.int64), np.flatnonzero(row_free), np.flatnonzero(col_free)
