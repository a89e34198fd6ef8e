"""BoT-SORT (Aharon et al., 2022) without re-identification: ByteTrack plus camera motion compensation.

ByteTrack's constant-velocity Kalman filter assumes a still camera: on dashcam, drone or handheld video the whole
scene shifts between frames, the predicted boxes land beside the objects and IDs switch. BoT-SORT estimates the
frame-to-frame camera motion from the images (:class:`~dart.tracking.motion.CameraMotion`: sparse optical flow and
a RANSAC partial-affine fit) and warps every track's predicted Kalman state and covariance by it
(:func:`~dart.tracking.motion.warp_tracks`) before associating detections. Everything else is ByteTrack's
(:class:`~dart.tracking.bytetrack.ByteTrack`, same options). BoT-SORT's appearance (ReID) branch is not included.

Without images (``update(detections)`` alone, e.g. tracking saved detections) it runs as ByteTrack and warns once.
"""

from __future__ import annotations

import warnings

import numpy as np

from dart.detections import Detections
from dart.tracking.bytetrack import ByteTrack
from dart.tracking.motion import CameraMotion, is_identity, warp_tracks


class BoTSORT(ByteTrack):
    """ByteTrack with global motion compensation; give it every frame: ``update(detections, image=frame)``.

    ``gmc``: estimate and compensate the camera motion (False: exactly ByteTrack). ``gmc_downscale``: shrink the
    frames by this factor for the motion estimate (2 suits 720p-1080p; larger is faster and coarser). Every other
    option is :class:`~dart.tracking.bytetrack.ByteTrack`'s.

    >>> tracker = BoTSORT()
    >>> for frame in video:
    ...     tracks = tracker.update(detector.detect(frame), image=frame)
    """

    name = "botsort"

    def __init__(self, *args, gmc: bool = True, gmc_downscale: int = 2, **options):
        self.gmc = bool(gmc)
        self.motion = CameraMotion(gmc_downscale)
        self.affine: np.ndarray | None = None  # the last camera motion applied (None: none estimated)
        self._warned = False
        super().__init__(*args, **options)

    def reset(self) -> None:
        super().reset()
        self.motion.reset()
        self.affine = None

    def update(self, detections: Detections, image: np.ndarray | None = None) -> Detections:
        """:meth:`ByteTrack.update`, with the tracks moved by the camera motion between the previous ``image``
        and this one before association."""
        return super().update(detections, image)

    def _before_association(self, image: np.ndarray | None) -> None:
        if not self.gmc:
            return
        if image is None:
            if not self._warned:
                self._warned = True
                warnings.warn("botsort got no frame images: tracking without camera motion compensation "
                              "(as bytetrack).", stacklevel=4)
            return
        affine = self.motion.estimate(image)
        self.affine = affine
        if len(self._ids) and not is_identity(affine):
            self._mean, self._cov = warp_tracks(self._mean, self._cov, affine)
