"""The fast paths of the tracker give the same numbers as the plain computations they replace: IoU along a list of
pairs, the overlapping-pairs prefilter, the sparse assignment, the Kalman filter on one track per column, and the
invariants ByteTrack relies on instead of sorting or computing every IoU."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from dart.detections import Detections
from dart.tracking import ByteTrack
from dart.tracking.kalman import KalmanFilter, xyxy_to_cxcywh
from dart.tracking.matching import box_iou, linear_assignment, overlapping_pairs, pair_iou, sparse_assignment


def random_boxes(rng: np.random.Generator, n: int, dtype=np.float32, degenerate: bool = False) -> np.ndarray:
    corner = rng.uniform(0, 200, (n, 2))
    size = rng.uniform(-5 if degenerate else 1, 60, (n, 2))
    return np.concatenate([corner, corner + size], axis=1).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pair_iou_and_overlapping_pairs_match_box_iou_bit_for_bit(dtype):
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 40, dtype, degenerate=True), random_boxes(rng, 30, dtype, degenerate=True)
    dense = box_iou(a, b)
    rows, cols = np.divmod(np.arange(a.shape[0] * b.shape[0]), b.shape[0])
    assert np.array_equal(pair_iou(a[rows].T, b[cols].T), dense.ravel())
    r, c = overlapping_pairs(a, b)
    positive = np.argwhere(dense > 0)
    assert set(map(tuple, positive.tolist())) <= set(zip(r.tolist(), c.tolist()))  # no pair with IoU > 0 missed
    assert np.array_equal(r * b.shape[0] + c, np.sort(r * b.shape[0] + c))  # row-major order
    overlap_x = (a[r, 2] > b[c, 0]) & (b[c, 2] > a[r, 0])
    overlap_y = (a[r, 3] > b[c, 1]) & (b[c, 3] > a[r, 1])
    assert (overlap_x & overlap_y).all()
    assert overlapping_pairs(a[:0], b)[0].shape == (0,)


def dense_reference(cost: np.ndarray, max_cost: float) -> set[tuple[int, int]]:
    """The plain thresholded assignment: direct when no row or column has two admissible pairs, else scipy on the
    whole matrix with every cost clipped just above the limit."""
    admissible = cost <= max_cost
    if admissible.sum(axis=1).max() <= 1 and admissible.sum(axis=0).max() <= 1:
        return set(map(tuple, np.argwhere(admissible).tolist()))
    r, c = linear_sum_assignment(np.minimum(cost, max_cost + 1e-4))
    return {(i, j) for i, j in zip(r.tolist(), c.tolist()) if admissible[i, j]}


@pytest.mark.parametrize("seed", range(40))
def test_sparse_assignment_equals_the_dense_solver(seed):
    rng = np.random.default_rng(seed)
    n_rows, n_cols = rng.integers(1, 25, 2)
    cost = np.ones((n_rows, n_cols), dtype=np.float32)  # no overlap: cost 1
    listed = rng.random((n_rows, n_cols)) < rng.uniform(0.05, 0.4)
    cost[listed] = rng.uniform(0.0, 1.0, listed.sum())
    near = listed & (rng.random((n_rows, n_cols)) < 0.1)  # just above the limit: only the solver sees these
    cost[near] = rng.uniform(0.50001, 0.50009, near.sum())
    rows, cols = np.nonzero(listed)
    r, c = sparse_assignment(rows, cols, cost[rows, cols], 0.5)
    assert set(zip(r.tolist(), c.tolist())) == dense_reference(cost, 0.5)
    matches, free_rows, free_cols = linear_assignment(cost, 0.5)
    assert set(map(tuple, matches.tolist())) == dense_reference(cost, 0.5)
    assert sorted([*matches[:, 0], *free_rows]) == list(range(n_rows))
    assert sorted([*matches[:, 1], *free_cols]) == list(range(n_cols))


def test_near_limit_pairs_take_part_in_the_competition():
    """A pair just above the limit is dropped, but in the solver it still competes: here it makes the admissible
    (0, 0) lose to (1, 0), as the dense solver decides."""
    cost = np.array([[0.49990, 0.50005], [0.49991, 1.0]], dtype=np.float32)
    rows, cols = np.nonzero(cost < 1)
    r, c = sparse_assignment(rows, cols, cost[rows, cols], 0.5)
    assert set(zip(r.tolist(), c.tolist())) == dense_reference(cost, 0.5) == {(1, 0)}


def test_kalman_columns_equal_rows_bit_for_bit():
    rng = np.random.default_rng(3)
    kf = KalmanFilter()
    z = xyxy_to_cxcywh(random_boxes(rng, 9, np.float64))
    mean, cov = kf.initiate(z)
    mean_c, cov_c = kf.initiate_columns(np.ascontiguousarray(z.T))
    for _ in range(4):
        mean, cov = kf.predict(mean, cov)
        mean_c, cov_c = kf.predict_columns(mean_c, cov_c)
        assert np.array_equal(mean, mean_c.T) and np.array_equal(cov, cov_c.transpose(2, 0, 1))
        z = z + rng.normal(0, 2, z.shape)
        mean, cov = kf.update(mean, cov, z)
        mean_c, cov_c = kf.update_columns(mean_c, cov_c, np.ascontiguousarray(z.T))
        assert np.array_equal(mean, mean_c.T) and np.array_equal(cov, cov_c.transpose(2, 0, 1))


def test_duplicate_prefilter_bound_holds():
    """ByteTrack tests |centre gap| <= (1 - t) * 0.505 * (w_a + w_b) before computing the IoU of a tracked and a
    lost track: every pair with IoU > t must pass it, in x and in y."""
    rng = np.random.default_rng(5)
    centre = rng.uniform(100, 110, (20000, 2, 2))  # [pair, box, xy]
    size = rng.uniform(10, 30, (20000, 2, 2))
    size[:, 1] = size[:, 0] * rng.uniform(0.8, 1.25, (20000, 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=2)
    iou = pair_iou(boxes[:, 0].T, boxes[:, 1].T)
    for t in (0.3, 0.6, 0.85):
        close = iou > t
        assert close.sum() > 50  # the test covers pairs above the threshold
        gap = np.abs(centre[:, 0] - centre[:, 1])
        reach = (1.0 - t) * 0.505 * (size[:, 0] + size[:, 1])
        assert (gap[close] <= reach[close] + 1e-6).all()


def test_outputs_are_in_track_id_order_without_sorting():
    """Tracks are stored in birth order, so the confirmed ones come out in increasing ID order."""
    rng = np.random.default_rng(7)
    tracker = ByteTrack()
    pos = rng.uniform(50, 400, (30, 2))
    seen = 0
    for f in range(60):
        visible = rng.random(30) < 0.8
        pos += rng.normal(0, 2, pos.shape)
        xyxy = np.concatenate([pos - 15, pos + 15], axis=1)[visible]
        scores = rng.uniform(0.3, 0.95, len(xyxy))
        out = tracker.update(Detections(xyxy, scores, np.zeros(len(xyxy)), ["a"] * len(xyxy)))
        ids = out.track_ids.tolist()
        assert ids == sorted(ids)
        seen = max(seen, len(ids))
    assert seen > 10
