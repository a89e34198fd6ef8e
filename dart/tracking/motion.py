"""Camera motion between consecutive frames, and how it moves the trackers' Kalman states (global motion
compensation, GMC, as in BoT-SORT: Aharon et al., 2022).

:class:`CameraMotion` estimates, frame after frame, the 2x3 partial-affine transform (rotation, isotropic scale,
translation) that maps pixel ``(x, y)`` of the previous frame onto the current one: corners of the previous frame
(``cv2.goodFeaturesToTrack`` on a downscaled grey image) are followed into the current frame by pyramidal
Lucas-Kanade optical flow (``cv2.calcOpticalFlowPyrLK``), and ``cv2.estimateAffinePartial2D`` fits the transform
with RANSAC, so points on moving objects are rejected as outliers. The transform is returned in original-pixel
coordinates; it is the identity on the first frame, whenever the estimate fails (too few points tracked, a
blank or changed-size image), and for motions below a quarter of a pixel (a still camera).

:func:`warp_tracks` applies such a transform to Kalman states kept one track per column (``mean [8, N]`` =
``(cx, cy, w, h, vcx, vcy, vw, vh)``, compact covariances ``[3, 4, N]``, see :mod:`dart.tracking.kalman`).
"""

from __future__ import annotations

import cv2
import numpy as np

from dart.tracking.kalman import CROSS, POS, VEL

IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def is_identity(affine: np.ndarray) -> bool:
    return bool(np.array_equal(affine, IDENTITY))


def to_gray(image: np.ndarray) -> np.ndarray:
    """BGR ``[H, W, 3]`` (or BGRA, or already grey ``[H, W]``) -> uint8 grey ``[H, W]``."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    return cv2.cvtColor(image, code)


class CameraMotion:
    """Frame-to-frame camera motion by sparse optical flow; call :meth:`estimate` with every frame, in order.

    ``downscale``: the images are shrunk by this integer factor before anything else (speed; 2 for 720p-1080p).
    ``max_corners``, ``quality`` and ``min_distance`` (in downscaled pixels) tune ``cv2.goodFeaturesToTrack``;
    ``ransac_threshold`` is the RANSAC inlier distance in downscaled pixels; fewer than ``min_inliers`` inliers
    means the estimate failed (identity). A motion that moves no image corner by more than ``min_motion`` original
    pixels is reported as the identity: on a still camera the fit is not exactly the identity (points on moving
    objects pull it by a few hundredths of a pixel), and a still camera should leave the tracks untouched.

    >>> motion = CameraMotion()
    >>> for frame in video:
    ...     affine = motion.estimate(frame)   # [2, 3]: previous frame's pixels -> this frame's
    """

    def __init__(self, downscale: int = 2, *, max_corners: int = 500, quality: float = 0.01,
                 min_distance: float = 6.0, ransac_threshold: float = 1.0, min_inliers: int = 10,
                 min_motion: float = 0.25):
        from dart.errors import InputError

        if int(downscale) != downscale or downscale < 1:
            raise InputError(f"gmc_downscale must be a whole number of 1 or more, got {downscale}.")
        self.downscale = int(downscale)
        self.max_corners = int(max_corners)
        self.quality = float(quality)
        self.min_distance = float(min_distance)
        self.ransac_threshold = float(ransac_threshold)
        self.min_inliers = int(min_inliers)
        self.min_motion = float(min_motion)
        self.reset()

    def reset(self) -> None:
        """Forget the previous frame (a new video): the next estimate is the identity."""
        self._prev: np.ndarray | None = None  # downscaled grey previous frame
        self._prev_points: np.ndarray | None = None  # its corners [K, 1, 2] float32
        self._size: tuple[int, ...] | None = None
        self.inliers = 0  # RANSAC inliers of the last estimate (0: identity by default)

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        gray = to_gray(image)
        if self.downscale > 1:
            h, w = gray.shape
            gray = cv2.resize(gray, (max(1, w // self.downscale), max(1, h // self.downscale)),
                              interpolation=cv2.INTER_AREA)
        return gray

    def _corners(self, gray: np.ndarray) -> np.ndarray | None:
        return cv2.goodFeaturesToTrack(gray, maxCorners=self.max_corners, qualityLevel=self.quality,
                                       minDistance=self.min_distance, blockSize=3)

    def estimate(self, image: np.ndarray) -> np.ndarray:
        """The ``[2, 3]`` float64 transform from the previous frame's pixels to ``image``'s (identity on the first
        frame, after a change of image size, or when the motion cannot be estimated)."""
        size = np.shape(image)[:2]
        gray = self._prepare(image)
        prev, prev_points = self._prev, self._prev_points
        same_size = self._size == size
        self._prev, self._prev_points, self._size = gray, self._corners(gray), size
        self.inliers = 0
        if prev is None or not same_size or prev_points is None or len(prev_points) < self.min_inliers:
            return IDENTITY.copy()
        points, status, _ = cv2.calcOpticalFlowPyrLK(prev, gray, prev_points, None, winSize=(15, 15), maxLevel=3)
        if points is None:
            return IDENTITY.copy()
        ok = status.ravel() == 1
        src, dst = prev_points[ok], points[ok]
        if len(src) < self.min_inliers:
            return IDENTITY.copy()
        affine, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC,
                                                      ransacReprojThreshold=self.ransac_threshold)
        if affine is None or inliers is None or int(inliers.sum()) < self.min_inliers:
            return IDENTITY.copy()
        self.inliers = int(inliers.sum())
        affine = self._to_original(affine)
        h, w = size
        corners = np.array([[0.0, w, 0.0, w], [0.0, 0.0, h, h]])
        moved = affine[:, :2] @ corners + affine[:, 2:] - corners
        return IDENTITY.copy() if np.abs(moved).max() <= self.min_motion else affine

    def _to_original(self, affine: np.ndarray) -> np.ndarray:
        """A transform between downscaled images -> the same motion in original pixels. With INTER_AREA by ``d``,
        downscaled pixel ``p`` is centred on original ``d p + o``, ``o = (d - 1) / 2``: so the linear part stays and
        the translation becomes ``d t + (I - R) o``."""
        affine = np.asarray(affine, dtype=np.float64)
        d = self.downscale
        if d == 1:
            return affine
        linear = affine[:, :2]
        offset = np.full(2, (d - 1) / 2.0)
        out = affine.copy()
        out[:, 2] = d * affine[:, 2] + offset - linear @ offset
        return out


def warp_tracks(mean: np.ndarray, cov: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move Kalman states (one track per column: ``mean [8, N]``, compact covariances ``[3, 4, N]``) by the camera
    motion ``affine [2, 3]`` (``x' = A x + t``); returns new arrays.

    - the box centre: ``A (cx, cy) + t``;
    - the centre's velocity: ``A (vcx, vcy)`` (a velocity is a difference of positions: no translation);
    - width and height and their velocities: times the transform's isotropic scale ``sqrt|det A|`` (a zoom);
    - covariances: each state pair (position, velocity) of x and y is transformed as ``A P A^T``. The compact
      covariance has no x-y terms (see :mod:`dart.tracking.kalman`), so only the diagonal of the result is kept: the
      exact variances of each coordinate (a non-negative mix of the x and y blocks, so it stays positive
      semi-definite); the x-y correlations a rotation creates are dropped. Width and height blocks scale by
      ``scale**2``.

    With the identity transform the states come back unchanged.
    """
    affine = np.asarray(affine, dtype=np.float64)
    linear, shift = affine[:, :2], affine[:, 2]
    mean = mean.copy()
    mean[0:2] = linear @ mean[0:2] + shift[:, None]
    mean[4:6] = linear @ mean[4:6]
    scale = float(np.sqrt(abs(np.linalg.det(linear))))
    if scale != 1.0:
        mean[2:4] *= scale
        mean[6:8] *= scale
    cov = cov.copy()
    squared = np.square(linear)  # diag(A diag(p) A^T)_i = sum_j A_ij^2 p_j
    for block in (POS, CROSS, VEL):
        cov[block, 0:2] = squared @ cov[block, 0:2]
    if scale != 1.0:
        cov[:, 2:4] *= scale * scale
    return mean, cov
