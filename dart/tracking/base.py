"""The contract every tracker follows, and how to load one by name from the ``dart.trackers`` entry points.

A tracker consumes one frame's :class:`~dart.detections.Detections` at a time, in frame order, and returns the
detections it is tracking in that frame with ``track_ids`` set (IDs are stable across frames, start at 1 and are
never reused). Third-party trackers (OC-SORT, ...) register under ``[project.entry-points."dart.trackers"]``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from dart.detections import Detections

DEFAULT_TRACKER = "bytetrack"


@runtime_checkable
class Tracker(Protocol):
    def update(self, detections: Detections, image: Any = None) -> Detections:
        """Feed the next frame's detections; get back the tracked ones, with ``track_ids``. ``image`` is the frame
        (BGR array) for trackers that look at it (camera motion compensation); others ignore it, and a plugin may
        leave it out of its signature: the video pipeline passes it only to an ``update`` that takes it."""
        ...

    def reset(self) -> None:
        """Forget every track (a new video); the next IDs start again at 1."""
        ...


def load_tracker(name: str = DEFAULT_TRACKER, **options: Any) -> Tracker:
    """Build the tracker registered as ``name`` in ``dart.trackers`` with ``options`` (its constructor kwargs)."""
    from dart.errors import InputError
    from dart.plugins.registry import load

    factory = load("dart.trackers", name)
    try:
        tracker = factory(**options)
    except TypeError as exc:
        raise InputError(f"the tracker '{name}' does not take these options ({', '.join(options)}): {exc}.") from exc
    if not isinstance(tracker, Tracker):
        raise InputError(f"the tracker plugin '{name}' does not provide update(detections) and reset().")
    return tracker


def takes_image(tracker: Any) -> bool:
    """Whether ``tracker.update`` accepts the frame as ``image=`` (a parameter of that name, or ``**kwargs``)."""
    import inspect

    try:
        params = inspect.signature(tracker.update).parameters
    except (TypeError, ValueError):
        return False
    return "image" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
