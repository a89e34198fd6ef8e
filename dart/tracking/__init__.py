"""Multi-object tracking over :class:`~dart.detections.Detections`: the :class:`Tracker` protocol, ByteTrack, and
loading trackers registered in the ``dart.trackers`` entry-point group."""

from dart.tracking.base import DEFAULT_TRACKER, Tracker, load_tracker
from dart.tracking.bytetrack import ByteTrack

__all__ = ["DEFAULT_TRACKER", "ByteTrack", "Tracker", "load_tracker"]
