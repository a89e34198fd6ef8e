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
"""

from __future__ import annotations

import numpy as np

NDIM = 4
POS, CROSS, VEL = 0, 1, 2  # rows of the compact covariance


def xyxy_to_cxcywh(xyxy: np.ndarray) -> np.ndarray:
    """``[N, 4]`` corner boxes -> ``[N, 4]`` (centre x, centre y, width, height)."""
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    out = np.empty_like(xyxy)
    wh = np.subtract(xyxy[:, 2:], xyxy[:, :2], out=out[:, 2:])
    np.add(xyxy[:, :2], wh / 2, out=out[:, :2])
    return out


def cxcywh_to_xyxy(cxcywh: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """Inverse of :func:`xyxy_to_cxcywh`; also accepts full states ``[N, 8]`` (the first four columns are used)."""
    cxcywh = np.asarray(cxcywh)
    if cxcywh.ndim == 1:
        cxcywh = cxcywh.reshape(-1, 4)
    centre, half = cxcywh[:, :2], cxcywh[:, 2:4] * 0.5
    out = np.empty((len(cxcywh), 4), dtype=dtype)
    # computed in the inputs' precision, then rounded once to ``dtype`` (as ``.astype(dtype)`` would)
    np.subtract(centre, half, out=out[:, :2])
    np.add(centre, half, out=out[:, 2:])
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


class KalmanFilter:
    """Kalman filter for image-space boxes, batched over tracks.

    ``std_weight_position`` / ``std_weight_velocity`` scale the noise with the box width / height (1/20 and 1/160,
    the values of DeepSORT, ByteTrack and BoT-SORT).
    """

    def __init__(self, std_weight_position: float = 1.0 / 20, std_weight_velocity: float = 1.0 / 160):
        self.std_weight_position = std_weight_position
        self.std_weight_velocity = std_weight_velocity
        self.motion = np.eye(2 * NDIM)  # F, for reference: x' = F x
        self.motion[:NDIM, NDIM:] = np.eye(NDIM)

    @staticmethod
    def _sizes(mean: np.ndarray) -> np.ndarray:
        """``(w, h, w, h)`` per track: the scale of the noise of each coordinate."""
        wh = mean[:, 2:4]
        return np.concatenate([wh, wh], axis=1)

    def initiate(self, measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """New tracks from unassociated measurements ``[N, 4]`` (cx, cy, w, h): zero velocity, wide uncertainty."""
        measurement = np.asarray(measurement, dtype=np.float64).reshape(-1, NDIM)
        mean = np.concatenate([measurement, np.zeros_like(measurement)], axis=1)
        size = self._sizes(mean)
        covariance = np.zeros((len(mean), 3, NDIM))
        covariance[:, POS] = np.square(2 * self.std_weight_position * size)
        covariance[:, VEL] = np.square(10 * self.std_weight_velocity * size)
        return mean, covariance

    def predict(self, mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One frame ahead for every track: ``x' = F x``, ``P' = F P F^T + Q`` (Q from the current box size)."""
        size = self._sizes(mean)
        mean = mean.copy()
        mean[:, :NDIM] += mean[:, NDIM:]
        p, v, c = covariance[:, POS], covariance[:, VEL], covariance[:, CROSS]
        out = np.empty_like(covariance)
        out[:, POS] = p + 2 * c + v + np.square(self.std_weight_position * size)
        out[:, CROSS] = c + v
        out[:, VEL] = v + np.square(self.std_weight_velocity * size)
        return mean, out

    def project(self, mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted measurement and its variance per coordinate: ``(H x [N, 4], diag(H P H^T + R) [N, 4])``."""
        return mean[:, :NDIM], covariance[:, POS] + np.square(self.std_weight_position * self._sizes(mean))

    def update(self, mean: np.ndarray, covariance: np.ndarray, measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Correct each track with its associated measurement ``[N, 4]`` (cx, cy, w, h)."""
        if len(mean) == 0:
            return mean, covariance
        predicted, s = self.project(mean, covariance)
        p, c, v = covariance[:, POS], covariance[:, CROSS], covariance[:, VEL]
        gain_pos, gain_vel = p / s, c / s
        innovation = np.asarray(measurement, dtype=np.float64).reshape(-1, NDIM) - predicted
        mean = mean.copy()
        mean[:, :NDIM] += gain_pos * innovation
        mean[:, NDIM:] += gain_vel * innovation
        out = np.empty_like(covariance)
        out[:, POS] = p - gain_pos * p
        out[:, CROSS] = c - gain_pos * c
        out[:, VEL] = v - gain_vel * c
        return mean, out
