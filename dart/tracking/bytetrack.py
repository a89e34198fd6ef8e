"""ByteTrack (Zhang et al., 2022): multi-object tracking by associating every detection box, low scores included.

Per frame:

1. Kalman-predict every confirmed track (tracked and lost ones); match them to the **high-score** detections
   (``score >= track_thresh``) by IoU with a minimum-cost assignment (``IoU >= match_thresh``).
2. Match the confirmed tracks still unmatched (and not already lost) to the **low-score** detections
   (``low_thresh < score < track_thresh``, the boxes other trackers throw away: occluded or blurred objects),
   ``IoU >= low_match_thresh``. Tracks still unmatched become *lost*.
3. Match **unconfirmed** tracks (born last frame) to the high-score detections left over
   (``IoU >= unconfirmed_match_thresh``); an unconfirmed track that finds no detection is dropped.
4. Left-over high-score detections with ``score >= new_track_thresh`` start new (unconfirmed) tracks — except
   those that duplicate an object already tracked this frame (``IoU >= birth_iou``, e.g. the same vehicle seen
   as "car" and "van"). Tracks born on the first frame are confirmed at once; later ones on their second hit.
5. Lost tracks unseen for more than ``max_time_lost`` frames are removed; a tracked and a lost track that cover
   the same object (``IoU > duplicate_iou``) are resolved in favour of the longer-lived one.

On top of the reference algorithm: each track's class is smoothed over its history (score-weighted votes that
decay by ``class_momentum`` per hit), its score is an exponential moving average (``score_momentum``), and an
optional class-agnostic NMS (``nms_iou``) can merge overlapping boxes of different classes before tracking.
Track state lives in stacked numpy arrays, so prediction, update and IoU run once per frame for all tracks.
"""

from __future__ import annotations

import numpy as np

from dart.detections import Detections
from dart.errors import InputError
from dart.tracking.kalman import KalmanFilter, centres_columns, corners_columns
from dart.tracking.matching import box_iou, overlapping_pairs, pair_iou, sparse_assignment

TRACKED, LOST = 0, 1


class ByteTrack:
    """ByteTrack over :class:`~dart.detections.Detections`, one frame at a time.

    >>> tracker = ByteTrack()
    >>> for frame in video:
    ...     tracks = tracker.update(detector.detect(frame))   # tracks.track_ids: stable IDs from 1
    """

    name = "bytetrack"

    def __init__(
        self,
        track_thresh: float = 0.5,
        match_thresh: float = 0.5,
        max_time_lost: int = 30,
        *,
        low_thresh: float = 0.1,
        new_track_thresh: float | None = None,
        low_match_thresh: float = 0.5,
        unconfirmed_match_thresh: float = 0.3,
        duplicate_iou: float = 0.85,
        birth_iou: float | None = 0.8,
        class_aware: bool = False,
        class_momentum: float = 0.9,
        score_momentum: float = 0.6,
        nms_iou: float | None = None,
    ):
        new_track_thresh = min(1.0, track_thresh + 0.1) if new_track_thresh is None else new_track_thresh
        for name, value in (("track_thresh", track_thresh), ("match_thresh", match_thresh),
                            ("low_thresh", low_thresh), ("new_track_thresh", new_track_thresh),
                            ("low_match_thresh", low_match_thresh),
                            ("unconfirmed_match_thresh", unconfirmed_match_thresh), ("duplicate_iou", duplicate_iou),
                            ("birth_iou", birth_iou), ("class_momentum", class_momentum),
                            ("score_momentum", score_momentum), ("nms_iou", nms_iou)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise InputError(f"{name} must be between 0 and 1, got {value}.")
        if low_thresh > track_thresh:
            raise InputError(f"low_thresh ({low_thresh}) must not exceed track_thresh ({track_thresh}).")
        if max_time_lost < 0:
            raise InputError(f"max_time_lost must be 0 or more frames, got {max_time_lost}.")
        self.track_thresh = track_thresh
        self.match_thresh = match_thresh
        self.max_time_lost = int(max_time_lost)
        self.low_thresh = low_thresh
        self.new_track_thresh = new_track_thresh
        self.low_match_thresh = low_match_thresh
        self.unconfirmed_match_thresh = unconfirmed_match_thresh
        self.duplicate_iou = duplicate_iou
        self.birth_iou = birth_iou
        self.class_aware = class_aware
        self.class_momentum = class_momentum
        self.score_momentum = score_momentum
        self.nms_iou = nms_iou
        self.kalman = KalmanFilter()
        # A limit this close to IoU 0 lets pairs that do not overlap at all compete (their cost, 1, is within the
        # solver's margin): then every (track, detection) pair is a candidate, not only the overlapping ones.
        self._zero_iou_counts = min(match_thresh, low_match_thresh, unconfirmed_match_thresh) < 1e-3
        self.reset()

    # --------------------------------------------------------------------------------------------- state
    # One track per column: the Kalman states ``_mean [8, N]`` and covariances ``_cov [3, 4, N]``, the class votes
    # ``_votes [classes, N]``, and one entry per track in the 1-D arrays. Every per-track operation of a frame then
    # runs over contiguous memory, and updates are masked (``np.copyto(..., where=)``) rather than gathered and
    # scattered. Tracks are stored in the order they were born, so the confirmed ones are in track-ID order.
    def reset(self) -> None:
        self.frame_id = 0
        self._next_id = 1
        self._names = np.zeros(0, dtype=object)  # class id -> class name, learnt from the detections
        self._known = np.zeros(0, dtype=bool)
        self._mean = np.zeros((8, 0))
        self._cov = np.zeros((3, 4, 0))  # compact per-coordinate covariances (see dart.tracking.kalman)
        self._state = np.zeros(0, dtype=np.int8)
        self._activated = np.zeros(0, dtype=bool)
        self._last = np.zeros(0, dtype=np.int64)  # frame of the last associated detection
        self._start = np.zeros(0, dtype=np.int64)
        self._ids = np.zeros(0, dtype=np.int64)  # 0 until the track is confirmed
        self._score = np.zeros(0)
        self._votes = np.zeros((0, 0))

    def __len__(self) -> int:
        """Tracks alive (tracked, unconfirmed or lost)."""
        return len(self._ids)

    @property
    def num_tracked(self) -> int:
        return int(np.count_nonzero((self._state == TRACKED) & self._activated))

    @property
    def num_lost(self) -> int:
        return int(np.count_nonzero(self._state == LOST))

    def _keep(self, keep: np.ndarray, matched_det: np.ndarray) -> np.ndarray:
        """Keep only the tracks where ``keep`` is true; returns ``matched_det`` cut the same way."""
        for attr in ("_mean", "_cov", "_state", "_activated", "_last", "_start", "_ids", "_score", "_votes"):
            setattr(self, attr, getattr(self, attr).compress(keep, axis=-1))
        return matched_det.compress(keep)

    def _classes(self, index: np.ndarray | None = None) -> np.ndarray:
        """The smoothed class of the tracks ``index`` (all tracks if None)."""
        votes = self._votes if index is None else self._votes.take(index, axis=1)
        return votes.argmax(axis=0) if votes.size else np.zeros(votes.shape[1], dtype=np.int64)

    def _pairs(self, boxes: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (track, detection) pair that any stage could associate, as ``(tracks, dets, cost)`` with cost
        ``1 - IoU`` (float32): the pairs whose boxes overlap (other pairs cost 1, beyond every stage's limit), of
        the same class when ``class_aware``."""
        track_boxes = corners_columns(self._mean, np.float32)  # [4, N]
        if self._zero_iou_counts:
            tracks, dets = np.divmod(np.arange(track_boxes.shape[1] * len(boxes)), len(boxes))
        else:
            tracks, dets = overlapping_pairs(track_boxes.T, boxes)
        if self.class_aware and len(tracks):
            same = self._classes().take(tracks) == classes.take(dets)
            tracks, dets = tracks[same], dets[same]
        iou = pair_iou(track_boxes.take(tracks, axis=1), boxes.T.take(dets, axis=1))
        return tracks, dets, 1.0 - iou

    @staticmethod
    def _associate(pairs: tuple[np.ndarray, np.ndarray, np.ndarray], tracks: np.ndarray, dets: np.ndarray,
                   min_iou: float, matched_det: np.ndarray, det_free: np.ndarray) -> None:
        """One association stage: minimum-cost matching of the ``tracks`` (mask) to the ``dets`` (mask) among the
        frame's ``pairs``, ``IoU >= min_iou``; records the matches in ``matched_det`` and ``det_free``."""
        t, d, cost = pairs
        cost = np.where(tracks.take(t) & dets.take(d), cost, 2.0)  # a pair outside the stage costs too much
        t, d = sparse_assignment(t, d, cost, 1.0 - min_iou)
        matched_det[t] = d
        det_free[d] = False

    # -------------------------------------------------------------------------------------------- update
    def update(self, detections: Detections, image: np.ndarray | None = None) -> Detections:
        """Associate this frame's detections with the tracks; return the confirmed tracks seen in this frame
        (detection boxes and masks, smoothed class and score, ``track_ids``), ordered by track ID. ``image`` (the
        frame) is ignored here; subclasses that use it (camera motion compensation) get it in
        :meth:`_before_association`."""
        self.frame_id += 1
        frame = self.frame_id
        dets = detections
        if self.nms_iou is not None and len(dets) > 1:
            dets = dets[_nms(dets.xyxy, dets.scores, self.nms_iou)]
        boxes, scores, classes = dets.xyxy, dets.scores, dets.class_ids  # float32 boxes: IoU in float32
        if len(dets):
            self._learn_names(classes, dets.class_names)

        is_high = scores >= self.track_thresh
        is_low = (scores > self.low_thresh) & ~is_high

        n_tracks = len(self._ids)
        confirmed = self._activated  # only tracked tracks can be unconfirmed (read before the hits change it)
        unconfirmed = (~confirmed).nonzero()[0]
        if n_tracks:  # predict the confirmed tracks; a lost track stops growing or shrinking
            np.copyto(self._mean[6:], 0.0, where=self._state != TRACKED)
            mean, cov = self.kalman.predict_columns(self._mean, self._cov)
            if len(unconfirmed):
                np.copyto(self._mean, mean, where=confirmed)
                np.copyto(self._cov, cov, where=confirmed)
            else:  # the usual case: every track is confirmed
                self._mean, self._cov = mean, cov
        self._before_association(image)
        pairs = self._pairs(boxes, classes)  # all tracks x all dets, once per frame
        matched_det = np.empty(n_tracks, dtype=np.int64)
        matched_det.fill(-1)  # per track: the detection it is matched to, -1 for none
        det_free = np.empty(len(dets), dtype=bool)
        det_free.fill(True)

        # 1. confirmed tracks <-> high-score detections
        self._associate(pairs, confirmed, is_high, self.match_thresh, matched_det, det_free)
        # 2. still-tracked leftovers <-> low-score detections
        rest = confirmed & (matched_det < 0) & (self._state == TRACKED)
        self._associate(pairs, rest, is_low, self.low_match_thresh, matched_det, det_free)
        newly_lost = rest & (matched_det < 0)
        # 3. unconfirmed tracks <-> high-score leftovers
        high_left = is_high & det_free
        if len(unconfirmed):
            self._associate(pairs, ~confirmed, high_left, self.unconfirmed_match_thresh, matched_det, det_free)

        hit = matched_det >= 0
        self._apply_hits(hit, matched_det, boxes, scores, classes, frame)
        self._state[newly_lost] = LOST

        # 4. births
        births = (high_left & det_free & (scores >= self.new_track_thresh)).nonzero()[0]
        births = self._suppress_duplicate_births(births, matched_det[hit], boxes, scores)
        free_unconfirmed = unconfirmed[matched_det.take(unconfirmed) < 0]
        if len(free_unconfirmed):  # unconfirmed tracks that found no detection go
            keep = np.ones(len(self._ids), dtype=bool)
            keep[free_unconfirmed] = False
            matched_det = self._keep(keep, matched_det)
        if len(births):
            self._add_tracks(births, boxes, scores, classes, frame)
            matched_det = np.concatenate([matched_det, births])
        # 5. stale lost tracks, tracked/lost duplicates
        stale = (self._state == LOST) & (frame - self._last > self.max_time_lost)
        if stale.any():
            matched_det = self._keep(~stale, matched_det)
        drop = self._duplicates()  # among the tracks that survived
        if drop is not None:
            matched_det = self._keep(~drop, matched_det)

        out = ((self._state == TRACKED) & self._activated & (self._last == frame)).nonzero()[0]  # in ID order
        return self._output(dets, out, matched_det.take(out))

    def _before_association(self, image: np.ndarray | None) -> None:
        """Hook between the Kalman prediction and the association (called on every frame, with or without tracks):
        nothing in ByteTrack; BoT-SORT warps the predicted states by the camera motion here."""

    def _learn_names(self, classes: np.ndarray, names: np.ndarray) -> None:
        try:
            if self._known.take(classes).all():
                return  # the usual case: every class already seen
        except IndexError:  # a class id beyond the ones seen so far
            pass
        if classes.min() < 0:
            raise InputError("class ids must be 0 or more to be tracked.")
        width = int(classes.max()) + 1
        if width > len(self._names):
            grow = width - len(self._names)
            extra = np.array([str(i) for i in range(len(self._names), width)], dtype=object)
            self._names = np.concatenate([self._names, extra])
            self._known = np.concatenate([self._known, np.zeros(grow, dtype=bool)])
            self._votes = np.pad(self._votes, ((0, grow), (0, 0)))
        new = ~self._known[classes]
        if new.any():
            self._names[classes[new]] = names[new]
            self._known[classes[new]] = True

    def _apply_hits(self, hit: np.ndarray, matched_det: np.ndarray, boxes, scores, classes, frame: int) -> None:
        """Kalman update, score average and class votes of the tracks ``hit`` (mask) with their detection
        ``matched_det``. Computed for every track at once (a track without a detection gets another one's numbers
        to compute with), then written only where ``hit``."""
        index = hit.nonzero()[0]
        if not len(index):
            return
        det = matched_det.take(index)
        every = np.maximum(matched_det, 0)  # per track: its detection, or any one
        measurement = centres_columns(boxes.T.astype(np.float64, order="C")).take(every, axis=1)
        mean, cov = self.kalman.update_columns(self._mean, self._cov, measurement)
        np.copyto(self._mean, mean, where=hit)
        np.copyto(self._cov, cov, where=hit)
        np.copyto(self._state, TRACKED, where=hit)
        np.copyto(self._last, frame, where=hit)
        m = self.score_momentum
        np.copyto(self._score, m * self._score + (1.0 - m) * scores.take(every), where=hit)
        np.multiply(self._votes, self.class_momentum, out=self._votes, where=hit)
        flat = classes.take(det) * len(hit) + index  # flat index of (class, track) in the [classes, N] votes
        self._votes.put(flat, self._votes.take(flat) + scores.take(det))
        confirm = index[~self._activated.take(index)]
        if len(confirm):
            self._activated[confirm] = True
            self._assign_ids(confirm)

    def _assign_ids(self, index: np.ndarray) -> None:
        self._ids[index] = np.arange(self._next_id, self._next_id + len(index))
        self._next_id += len(index)

    def _suppress_duplicate_births(self, births: np.ndarray, used: np.ndarray, boxes, scores) -> np.ndarray:
        """Drop births that cover an object already matched this frame, or a better-scored birth."""
        if self.birth_iou is None or not len(births):
            return births
        births = births[np.argsort(-scores[births], kind="stable")]
        n = len(births)
        iou = box_iou(boxes[births], boxes[np.concatenate([births, used])])  # [births, births + used]
        keep = iou[:, n:].max(axis=1) < self.birth_iou if len(used) else np.ones(n, dtype=bool)
        for i in range(n):
            if keep[i]:
                keep[i + 1:] &= iou[i, i + 1:n] < self.birth_iou
        return np.sort(births[keep])

    def _add_tracks(self, births: np.ndarray, boxes, scores, classes, frame: int) -> None:
        n = len(births)
        if not n:
            return
        mean, cov = self.kalman.initiate_columns(centres_columns(boxes[births].T.astype(np.float64, order="C")))
        votes = np.zeros((self._votes.shape[0], n))
        votes[classes[births], np.arange(n)] = scores[births]
        first = len(self._ids)
        self._mean = np.concatenate([self._mean, mean], axis=1)
        self._cov = np.concatenate([self._cov, cov], axis=2)
        self._state = np.concatenate([self._state, np.full(n, TRACKED, dtype=np.int8)])
        self._activated = np.concatenate([self._activated, np.full(n, frame == 1)])
        self._last = np.concatenate([self._last, np.full(n, frame, dtype=np.int64)])
        self._start = np.concatenate([self._start, np.full(n, frame, dtype=np.int64)])
        self._ids = np.concatenate([self._ids, np.zeros(n, dtype=np.int64)])
        self._score = np.concatenate([self._score, scores[births]])
        self._votes = np.concatenate([self._votes, votes], axis=1)
        if frame == 1:
            self._assign_ids(np.arange(first, first + n))

    def _duplicates(self) -> np.ndarray | None:
        """Tracked and lost tracks on the same object: the shorter-lived of each pair goes (ties: the tracked one,
        as in the reference implementation). None when there are none."""
        tracked = (self._state == TRACKED).nonzero()[0]
        lost = (self._state == LOST).nonzero()[0]
        if not len(tracked) or not len(lost):
            return None
        # IoU > t needs centres closer than (1 - t) * (w_a + w_b) / 2 in x, and likewise in y: a cheap test (with
        # a margin for rounding) leaves the exact IoU to the few pairs that pass it, usually none
        a, b = self._mean[:4].take(tracked, axis=1)[:, None, :], self._mean[:4].take(lost, axis=1)[:, :, None]
        gap = np.abs(a[:2] - b[:2])  # [2, lost, tracked]
        reach = a[2:] + b[2:]
        reach *= (1.0 - self.duplicate_iou) * 0.505
        reach += 1e-6
        near = gap <= reach
        near = near[0] & near[1]
        if not near.any():  # the usual case
            return None
        q, p = near.nonzero()
        boxes = corners_columns(self._mean)
        same = pair_iou(boxes.take(tracked[p], axis=1), boxes.take(lost[q], axis=1)) > self.duplicate_iou
        if self.class_aware:  # classes are kept apart: a rider and their bicycle are not duplicates
            same &= self._classes(tracked[p]) == self._classes(lost[q])
        if not same.any():
            return None
        p, q = p[same], q[same]
        drop = np.zeros(len(self._ids), dtype=bool)
        age = self._last - self._start
        tracked_older = age[tracked[p]] > age[lost[q]]
        drop[lost[q[tracked_older]]] = True
        drop[tracked[p[~tracked_older]]] = True
        return drop

    def _output(self, dets: Detections, index: np.ndarray, det_index: np.ndarray) -> Detections:
        class_ids = self._classes(index)
        out = Detections(
            xyxy=dets.xyxy.take(det_index, axis=0),
            scores=self._score.take(index),
            class_ids=class_ids,
            class_names=self._names.take(class_ids),
            masks=None if dets.masks is None else dets.masks[det_index],
            track_ids=self._ids.take(index),
            image_size=dets.image_size,
            prompts=None if dets.prompts is None else dets.prompts[det_index],
        )
        out.extra["det_scores"] = dets.scores.take(det_index)
        out.extra["det_class_ids"] = dets.class_ids.take(det_index)
        out.extra["track_xyxy"] = corners_columns(self._mean[:4].take(index, axis=1), np.float32).T.copy()
        return out


def _nms(xyxy: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Class-agnostic NMS (torchvision) -> kept indices, best first."""
    import torch
    from torchvision.ops import nms

    keep = nms(torch.from_numpy(np.ascontiguousarray(xyxy, dtype=np.float32)),
               torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32)), iou)
    return keep.numpy()
