"""A constant-velocity Kalman filter on boxes, vectorised over tracks (the motion model of SORT-style trackers).

The state of a track is ``(cx, cy, w, h, vcx, vcy, vw, vh)``: box centre, width, height and their velocities in
pixels per frame. Width and height are filtered separately (as in BoT-SORT) rather than as aspect ratio and
height (ByteTrack's original filter, whose near-constant aspect ratio cannot follow a box that changes shape,
e.g. an object entering through the image border). Process and measurement noise scale with the box size.

With a constant-velocity motion model and diagonal noise, the 8x8 filter splits exactly into four independent
two-state filters, one per box coordinate (its position and its velocity): every covariance that would couple two
coordinates stays zero. The covariance is therefore stored as three numbers per coordinate — position variance,
position-velocity covariance, velocity variance — in ``covariance [N, 3, 4]``, and prediction and update are a
handful of element-wise operations over all tracks at once (no batched matrix solves).
:func:`full_covariance` rebuilds the 8x8 matrices; the tests check the result against the textbook 8x8 filter.
Trackers keep one track per column (``[8, N]`` states, ``[3, 4, N]`` covariances: the ``*_columns`` methods), so that
every one of those operations runs over contiguous memory.
"""

from __future__ import annotations

import numpy as np

NDIM = 4
POS, CROSS, VEL = 0, 1, 2  # rows of the compact covariance


def xyxy_to_cxcywh(xyxy: np.ndarray) -> np.ndarray:
    """``[N, 4]`` corner boxes -> ``[N, 4]`` (centre x, centre y, width, height)."""
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    return centres_columns(xyxy.T).T


def centres_columns(corners: np.ndarray) -> np.ndarray:
    """:func:`xyxy_to_cxcywh` with one box per column: ``[4, N]`` (x1, y1, x2, y2) -> ``[4, N]`` float64."""
    out = np.empty((4, corners.shape[1]))
    wh = np.subtract(corners[2:], corners[:2], out=out[2:])
    np.add(corners[:2], wh / 2, out=out[:2])
    return out


def cxcywh_to_xyxy(cxcywh: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """Inverse of :func:`xyxy_to_cxcywh`; also accepts full states ``[N, 8]`` (the first four columns are used)."""
    cxcywh = np.asarray(cxcywh)
    if cxcywh.ndim == 1:
        cxcywh = cxcywh.reshape(-1, 4)
    return corners_columns(cxcywh.T, dtype).T


def corners_columns(cxcywh: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """:func:`cxcywh_to_xyxy` with one box (or state) per column: ``[4+, N]`` -> ``[4, N]`` (x1, y1, x2, y2)."""
    centre, half = cxcywh[:2], cxcywh[2:4] * 0.5
    out = np.empty((4, cxcywh.shape[1]), dtype=dtype)
    # computed in the inputs' precision, then rounded once to ``dtype`` (as ``.astype(dtype)`` would)
    np.subtract(centre, half, out=out[:2])
    np.add(centre, half, out=out[2:])
    return out


def full_covariance(covariance: np.ndarray) -> np.ndarray:
    """Compact ``[N, 3, 4]`` covariances -> the equivalent ``[N, 8, 8]`` matrices (for inspection and tests)."""
    n = len(covariance)
    out = np.zeros((n, 2 * NDIM, 2 * NDIM))
    i = np.arange(NDIM)
    out[:, i, i] = covariance[:, POS]
    out[:, i, i + NDIM] = covariance[:, CROSS]
    out[:, i + NDIM, i] = covariance[:, CROSS]
    out[:, i + NDIM, i + NDIM] = covariance[:, VEL]
    return out


def _rows(mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[N, 8]`` states and ``[N, 3, 4]`` covariances -> the columns layout (contiguous ``[8, N]``, ``[3, 4, N]``)."""
    return np.ascontiguousarray(mean.T), np.ascontiguousarray(covariance.transpose(1, 2, 0))


class KalmanFilter:
    """Kalman filter for image-space boxes, batched over tracks.

    ``std_weight_position`` / ``std_weight_velocity`` scale the noise with the box width / height (1/20 and 1/160,
    the values of DeepSORT, ByteTrack and BoT-SORT).

    :meth:`initiate`, :meth:`predict`, :meth:`project` and :meth:`update` take one track per row (``mean [N, 8]``,
    ``covariance [N, 3, 4]``). The ``*_columns`` methods do the same with one track per column (``[8, N]`` and
    ``[3, 4, N]``), the layout trackers keep their state in: every operation then runs over contiguous memory.
    """

    def __init__(self, std_weight_position: float = 1.0 / 20, std_weight_velocity: float = 1.0 / 160):
        self.std_weight_position = std_weight_position
        self.std_weight_velocity = std_weight_velocity
        self.motion = np.eye(2 * NDIM)  # F, for reference: x' = F x
        self.motion[:NDIM, NDIM:] = np.eye(NDIM)

    def _plus_noise(self, weight: float, mean: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``values [4, N] + (weight * (w, h, w, h))**2`` per track: the noise of each coordinate scales with the
        box width or height."""
        n = values.shape[-1]
        return (values.reshape(2, 2, n) + np.square(weight * mean[2:4])).reshape(4, n)  # (x, y), (w, h) + (w, h)

    def initiate(self, measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """New tracks from unassociated measurements ``[N, 4]`` (cx, cy, w, h): zero velocity, wide uncertainty."""
        measurement = np.asarray(measurement, dtype=np.float64).reshape(-1, NDIM)
        mean, covariance = self.initiate_columns(measurement.T)
        return mean.T, covariance.transpose(2, 0, 1)

    def initiate_columns(self, measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`initiate` for measurements ``[4, N]`` -> ``mean [8, N]``, ``covariance [3, 4, N]``."""
        mean = np.concatenate([measurement, np.zeros_like(measurement)])
        covariance = np.zeros((3, NDIM, mean.shape[1]))
        covariance[POS] = self._plus_noise(2 * self.std_weight_position, mean, covariance[POS])
        covariance[VEL] = self._plus_noise(10 * self.std_weight_velocity, mean, covariance[VEL])
        return mean, covariance

    def predict(self, mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One frame ahead for every track: ``x' = F x``, ``P' = F P F^T + Q`` (Q from the current box size)."""
        mean, covariance = self.predict_columns(*_rows(mean, covariance))
        return mean.T, covariance.transpose(2, 0, 1)

    def predict_columns(self, mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict` for ``mean [8, N]``, ``covariance [3, 4, N]``."""
        c, v = covariance[CROSS], covariance[VEL]
        pos = 2 * c
        pos += covariance[POS]
        pos += v
        out = np.empty_like(covariance)
        out[POS] = self._plus_noise(self.std_weight_position, mean, pos)  # p + 2c + v + q_pos
        np.add(c, v, out=out[CROSS])
        out[VEL] = self._plus_noise(self.std_weight_velocity, mean, v)  # v + q_vel
        mean = mean.copy()
        mean[:NDIM] += mean[NDIM:]
        return mean, out

    def project(self, mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted measurement and its variance per coordinate: ``(H x [N, 4], diag(H P H^T + R) [N, 4])``."""
        predicted, variance = self.project_columns(*_rows(mean, covariance))
        return predicted.T, variance.T

    def project_columns(self, mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`project` for ``mean [8, N]``, ``covariance [3, 4, N]`` -> ``[4, N]``, ``[4, N]``."""
        return mean[:NDIM], self._plus_noise(self.std_weight_position, mean, covariance[POS])

    def update(self, mean: np.ndarray, covariance: np.ndarray, measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Correct each track with its associated measurement ``[N, 4]`` (cx, cy, w, h)."""
        if len(mean) == 0:
            return mean, covariance
        measurement = np.asarray(measurement, dtype=np.float64).reshape(-1, NDIM)
        mean, covariance = self.update_columns(*_rows(mean, covariance), measurement.T)
        return mean.T, covariance.transpose(2, 0, 1)

    def update_columns(self, mean: np.ndarray, covariance: np.ndarray,
                       measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`update` for ``mean [8, N]``, ``covariance [3, 4, N]``, ``measurement [4, N]``."""
        predicted, s = self.project_columns(mean, covariance)
        gain = covariance[:2] / s  # [2, 4, N]: the gains of the positions (p / s) and of the velocities (c / s)
        innovation = measurement - predicted
        n = mean.shape[1]
        mean = (mean.reshape(2, NDIM, n) + gain * innovation).reshape(2 * NDIM, n)
        # p - (p/s) p, c - (p/s) c, v - (c/s) c
        covariance = covariance - gain.take([0, 0, 1], axis=0) * covariance.take([POS, CROSS, CROSS], axis=0)
        return mean, covariance
