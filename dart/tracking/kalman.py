"""A constant-velocity Kalman filter on boxes, vectorised over tracks (the motion model of SORT-style trackers).

The state of a track is ``(cx, cy, w, h, vcx, vcy, vw, vh)``: box centre, width, height and their velocities in
pixels per frame. Width and height are filtered separately (as in BoT-SORT) rather than as aspect ratio and
height (ByteTrack's original filter, whose near-constant aspect ratio cannot follow a box that changes shape,
e.g. an object entering through the image border). Process and measurement noise scale with the box size.

Every method takes and returns stacked arrays — ``mean [N, 8]``, ``covariance [N, 8, 8]``, ``measurement
[N, 4]`` — so one call predicts or updates all tracks of a frame.
"""

from __future__ import annotations

import numpy as np

NDIM = 4


def xyxy_to_cxcywh(xyxy: np.ndarray) -> np.ndarray:
    """``[N, 4]`` corner boxes -> ``[N, 4]`` (centre x, centre y, width, height)."""
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    wh = xyxy[:, 2:] - xyxy[:, :2]
    return np.concatenate([xyxy[:, :2] + wh / 2, wh], axis=1)


def cxcywh_to_xyxy(cxcywh: np.ndarray) -> np.ndarray:
    """Inverse of :func:`xyxy_to_cxcywh`; also accepts full states ``[N, 8]`` (the first four columns are used)."""
    cxcywh = np.asarray(cxcywh, dtype=np.float64)
    cxcywh = cxcywh.reshape(-1, cxcywh.shape[-1] if cxcywh.ndim > 1 else 4)[:, :4]
    half = cxcywh[:, 2:] / 2
    return np.concatenate([cxcywh[:, :2] - half, cxcywh[:, :2] + half], axis=1)


class KalmanFilter:
    """Kalman filter for image-space boxes, batched over tracks.

    ``std_weight_position`` / ``std_weight_velocity`` scale the noise with the box width / height (1/20 and 1/160,
    the values of DeepSORT, ByteTrack and BoT-SORT).
    """

    def __init__(self, std_weight_position: float = 1.0 / 20, std_weight_velocity: float = 1.0 / 160):
        self.std_weight_position = std_weight_position
        self.std_weight_velocity = std_weight_velocity
        self.motion = np.eye(2 * NDIM)
        self.motion[:NDIM, NDIM:] = np.eye(NDIM)
        self._diag_index = np.arange(2 * NDIM)

    def _diag(self, std: np.ndarray) -> np.ndarray:
        """``[N, k]`` standard deviations -> ``[N, k, k]`` diagonal covariances."""
        n, k = std.shape
        out = np.zeros((n, k, k))
        out[:, self._diag_index[:k], self._diag_index[:k]] = std * std
        return out

    def _noise(self, wh: np.ndarray, pos_scale: float, vel_scale: float) -> np.ndarray:
        """Standard deviations ``[N, 8]`` for (cx, cy, w, h, vcx, vcy, vw, vh) from widths and heights ``[N, 2]``."""
        pos = wh * (pos_scale * self.std_weight_position)
        vel = wh * (vel_scale * self.std_weight_velocity)
        return np.concatenate([pos, pos, vel, vel], axis=1)

    def initiate(self, measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """New tracks from unassociated measurements ``[N, 4]`` (cx, cy, w, h): zero velocity, wide uncertainty."""
        measurement = np.asarray(measurement, dtype=np.float64).reshape(-1, NDIM)
        mean = np.concatenate([measurement, np.zeros_like(measurement)], axis=1)
        return mean, self._diag(self._noise(measurement[:, 2:], 2.0, 10.0))

    def predict(self, mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One frame ahead: ``x' = F x``, ``P' = F P F^T + Q`` for every track at once.

        With ``F = [[I, I], [0, I]]`` the product is a few block additions, much cheaper than batched matmuls."""
        std = self._noise(mean[:, 2:4], 1.0, 1.0)
        mean = mean.copy()
        mean[:, :NDIM] += mean[:, NDIM:]
        p = covariance
        out = np.empty_like(p)
        p12_22 = p[:, :NDIM, NDIM:] + p[:, NDIM:, NDIM:]
        out[:, :NDIM, :NDIM] = p[:, :NDIM, :NDIM] + p[:, NDIM:, :NDIM] + p12_22
        out[:, :NDIM, NDIM:] = p12_22
        out[:, NDIM:, :NDIM] = p[:, NDIM:, :NDIM] + p[:, NDIM:, NDIM:]
        out[:, NDIM:, NDIM:] = p[:, NDIM:, NDIM:]
        idx = self._diag_index
        out[:, idx, idx] += std * std
        return mean, out

    def project(self, mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """State distribution -> measurement space: ``(H x [N, 4], H P H^T + R [N, 4, 4])``."""
        pos = mean[:, 2:4] * self.std_weight_position
        std = np.concatenate([pos, pos], axis=1)
        projected = covariance[:, :NDIM, :NDIM].copy()
        idx = self._diag_index[:NDIM]
        projected[:, idx, idx] += std * std
        return mean[:, :NDIM], projected

    def update(self, mean: np.ndarray, covariance: np.ndarray, measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Correct each track with its associated measurement ``[N, 4]`` (cx, cy, w, h)."""
        if len(mean) == 0:
            return mean, covariance
        projected_mean, projected_cov = self.project(mean, covariance)
        cross = covariance[:, :, :NDIM]  # P H^T  [N, 8, 4]
        gain = np.linalg.solve(projected_cov, cross.transpose(0, 2, 1)).transpose(0, 2, 1)  # [N, 8, 4]
        innovation = np.asarray(measurement, dtype=np.float64).reshape(-1, NDIM) - projected_mean
        mean = mean + (gain @ innovation[:, :, None])[:, :, 0]
        covariance = covariance - gain @ projected_cov @ gain.transpose(0, 2, 1)
        return mean, covariance
