"""Multi-object tracking over :class:`~dart.detections.Detections`: the :class:`Tracker` protocol, ByteTrack,
BoT-SORT (ByteTrack with camera-motion compensation), and loading trackers registered in the ``dart.trackers``
entry-point group."""

from dart.tracking.base import DEFAULT_TRACKER, Tracker, load_tracker
from dart.tracking.botsort import BoTSORT
from dart.tracking.bytetrack import ByteTrack

__all__ = ["DEFAULT_TRACKER", "BoTSORT", "ByteTrack", "Tracker", "load_tracker"]
