"""Link per-frame detections into tracks: Kalman-filter association of the ByteTrack /
OC-SORT / BoT-SORT family, offline over one clip.

Written here on ``scipy.optimize.linear_sum_assignment`` rather than imported: roboflow's
`trackers` (whose OC-SORT and ByteTrack we measure against in
``benchmarks/tracking_quality.py``) pulls non-headless ``opencv-python``, which clashes with
our ``opencv-contrib-python-headless``. Per detector frame:

1. Every track's filter (`tasks.track.kalman`, BoT-SORT's box state) moves by the camera's motion
   when the detect stage measured it (``camera_motion``), then predicts to this frame; a
   gap from ``every_nth`` or a miss is that many steps.
2. A confident detection that covers two or more tracks (each mostly inside it, none
   filling it) is a *merged* detection: people overlapping, or background-subtraction blobs
   joined. It updates no track and starts none; the tracks coast on their filters and are
   matched again when the objects part, so identities survive the overlap.
3. Confident detections match tracks by IoU with the predicted box plus OC-SORT's
   direction consistency (observation-centric momentum): a detection in the direction the
   track was moving is preferred, which keeps crossing objects apart.
4. ByteTrack's second chance: weak detections extend the tracks still unmatched (a weak box
   overlapping a known track is evidence, a weak box alone is noise).
5. OC-SORT's recovery: tracks still unmatched are compared by their last *observed* box,
   which finds an object that stopped while its filter ran on.
6. A track seen again after a miss re-runs its filter along a straight path from its last
   observation (observation-centric re-update), so the error built while coasting is gone.

A new track needs ``min_hits`` matches in a row to get an id and ends after ``max_age``
frames unseen; at a shot cut every track ends (identities never cross a cut). Ids are 1,
2, ... in order of confirmation: deterministic for one input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tasks.annotations.boxmath import area, iou_matrix
from tasks.track.kalman import BoxKalman, warp_boxes
from tasks.recipe import AssociateConfig

_FORBIDDEN = 1e6
_MERGED_FILL = 0.8  # a track box filling more of a detection than this is that detection's own


@dataclass
class _Track:
    kf: BoxKalman
    label: int
    frame: int                  # frame the filter has been predicted to
    last_frame: int             # frame of the last observation
    last_box: np.ndarray        # the last observed box
    observed: BoxKalman         # the filter right after the last observation (for re-update)
    history: list = field(default_factory=list)  # recent (frame, box) observations
    hits: int = 1
    grouped_at: int = -1        # last frame it was inside a merged detection
    track_id: int = 0           # 0 until confirmed
    rows: list[int] = field(default_factory=list)

    @classmethod
    def start(cls, box: np.ndarray, label: int, frame: int, row: int) -> "_Track":
        kf = BoxKalman(box)
        return cls(kf=kf, label=label, frame=frame, last_frame=frame, last_box=box.copy(),
                   observed=kf.copy(), history=[(frame, box.copy())], rows=[row])

    def predict_to(self, frame: int) -> None:
        if self.last_frame < self.frame:
            # Coasting: the box keeps its last size. A size trend measured while the object
            # was being covered would otherwise shrink it to nothing within a second.
            self.kf.mean[6:] = 0.0
        self.kf.predict(frame - self.frame)
        self.frame = frame

    def warp(self, affine: np.ndarray) -> None:
        self.kf.warp(affine)
        self.observed.warp(affine)
        self.last_box = warp_boxes(self.last_box, affine)[0]
        self.history = [(f, warp_boxes(b, affine)[0]) for f, b in self.history]

    def direction(self, delta_t: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(unit direction of motion, the earlier observed centre it is measured from), or None."""
        if len(self.history) < 2:
            return None
        newest_frame, newest = self.history[-1]
        # The observation delta_t frames back, or the oldest kept (OC-SORT's k-th previous).
        start = next((b for f, b in self.history if newest_frame - f <= delta_t), self.history[0][1])
        a, b = _centre(start), _centre(newest)
        norm = np.hypot(*(b - a))
        if norm < 1e-6:
            return None
        return (b - a) / norm, a

    def observe(self, box: np.ndarray, frame: int, row: int, missed: bool, keep: int) -> None:
        gap = frame - self.last_frame
        if missed and gap > 1:
            # Observation-centric re-update: from the state at the last observation, walk a
            # straight virtual path of boxes to this one, so velocity and size come from
            # observations rather than from what the filter guessed while coasting.
            kf = self.observed.copy()
            for step in range(1, gap):
                kf.predict(1)
                kf.update(self.last_box + (box - self.last_box) * (step / gap))
            kf.predict(1)
            self.kf = kf
        else:
            self.kf.predict(frame - self.frame)
        self.kf.update(box)
        self.frame = self.last_frame = frame
        self.last_box = box.copy()
        self.observed = self.kf.copy()
        self.history.append((frame, box.copy()))
        self.history = [(f, b) for f, b in self.history if frame - f <= keep]
        self.hits += 1
        self.rows.append(row)


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def associate(frames: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
              processed_frames: np.ndarray, config: AssociateConfig, *,
              cuts=(), motion: np.ndarray | None = None) -> np.ndarray:
    """Track id per detection row (0: not part of any kept track).

    ``frames`` (n,), ``boxes`` (n, 4), ``scores`` (n,), ``labels`` (n,) integer codes;
    rows sorted by frame. ``processed_frames``: every frame the detector ran on, with or
    without detections (a frame without one ages the tracks). ``cuts``: first frames of
    new shots. ``motion`` (frames, 2, 3): per frame, the affine taking the previous frame's
    pixels to this one's (identity where unknown), or None for a fixed camera.
    """
    frames = np.asarray(frames, np.int64)
    if len(frames) and np.any(np.diff(frames) < 0):
        raise ValueError("detections must be sorted by frame")
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, np.int64)
    processed = np.asarray(processed_frames, np.int64)
    cut_frames = np.unique(np.asarray(list(cuts), np.int64))
    step = int(np.min(np.diff(processed))) if len(processed) > 1 else 1
    keep_history = config.delta_t * step
    out = np.zeros(len(frames), np.int32)
    tracks: list[_Track] = []
    next_id = 1
    previous: int | None = None
    starts = np.searchsorted(frames, processed, side="left")
    ends = np.searchsorted(frames, processed, side="right")
    for frame, lo, hi in zip(processed.tolist(), starts, ends):
        if previous is not None and _cut_between(cut_frames, previous, frame):
            tracks = []
        if motion is not None and previous is not None and tracks:
            affine = _compose(motion, previous, frame)
            if affine is not None:
                for track in tracks:
                    track.warp(affine)
        tracks = [t for t in tracks if frame - t.last_frame <= config.max_age]
        for track in tracks:
            track.predict_to(frame)
        missed = {id(t) for t in tracks if previous is not None and t.last_frame < previous}
        rows = np.arange(lo, hi)
        merged = _merged_detections(tracks, rows, boxes, scores, config, previous, frame)
        high = np.array([r for r in rows if scores[r] >= config.high_score and r not in merged],
                        np.int64)
        low = np.array([r for r in rows if config.low_score <= scores[r] < config.high_score
                        and r not in merged], np.int64)
        pool = list(range(len(tracks)))

        def take(pairs) -> set[int]:
            taken = set()
            for ti, row in pairs:
                track = tracks[ti]
                track.observe(boxes[row].copy(), frame, int(row), id(track) in missed,
                              keep_history)
                taken.add(int(row))
                pool.remove(ti)
            return taken

        predicted = {i: tracks[i].kf.box for i in pool}
        matched = take(_match(tracks, pool, high, boxes, scores, labels, predicted,
                              config.match_iou, config, direction=True))
        confirmed = [i for i in pool if tracks[i].track_id]
        take(_match(tracks, confirmed, low, boxes, scores, labels, predicted,
                    config.low_match_iou, config))
        rest = np.array([r for r in high if r not in matched], np.int64)
        last_seen = {i: tracks[i].last_box for i in pool}
        matched |= take(_match(tracks, list(pool), rest, boxes, scores, labels, last_seen,
                               config.match_iou, config))
        # A tentative track that misses a detector frame was noise (ByteTrack drops it).
        unmatched = {id(tracks[i]) for i in pool}
        tracks = [t for t in tracks if t.track_id or id(t) not in unmatched]
        for row in high.tolist():
            if row not in matched:
                tracks.append(_Track.start(boxes[row].copy(), int(labels[row]), frame, row))
        for track in tracks:
            if not track.track_id and track.hits >= config.min_hits:
                track.track_id = next_id
                next_id += 1
            if track.track_id and track.rows:
                out[track.rows] = track.track_id
                track.rows.clear()
        previous = frame
    return out


def _cut_between(cuts: np.ndarray, previous: int, frame: int) -> bool:
    """A shot starts after ``previous`` and at or before ``frame``."""
    i = np.searchsorted(cuts, previous, side="right")
    return i < len(cuts) and cuts[i] <= frame


def _compose(motion: np.ndarray, previous: int, frame: int) -> np.ndarray | None:
    """The affine taking frame ``previous``'s pixels to frame ``frame``'s."""
    total = np.eye(3)
    for f in range(previous + 1, min(frame, len(motion) - 1) + 1):
        total = np.vstack([motion[f], [0, 0, 1]]) @ total
    if np.allclose(total, np.eye(3)):
        return None
    return total[:2]


def _merged_detections(tracks: list[_Track], rows: np.ndarray, boxes: np.ndarray,
                       scores: np.ndarray, config: AssociateConfig, previous: int | None,
                       frame: int) -> set[int]:
    """Rows whose box covers two or more confirmed tracks' predicted boxes, each mostly
    inside it and none filling it: one detection for several objects. Tracks that were in
    a merged detection at the last detector frame stay merged while they are mostly inside
    one, even where one of them fills it (two people nearly in line look like one)."""
    if config.merged_ioa is None:
        return set()
    live = [t for t in tracks if t.track_id]
    if len(live) < 2 or not len(rows):
        return set()
    predicted = np.stack([t.kf.box for t in live])
    dets = boxes[rows]
    x1 = np.maximum(predicted[:, None, 0], dets[None, :, 0])
    y1 = np.maximum(predicted[:, None, 1], dets[None, :, 1])
    x2 = np.minimum(predicted[:, None, 2], dets[None, :, 2])
    y2 = np.minimum(predicted[:, None, 3], dets[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    inside = inter / np.maximum(area(predicted), 1e-9)[:, None]
    fill = area(predicted)[:, None] / np.maximum(area(dets), 1e-9)[None, :]
    grouped = np.array([previous is not None and t.grouped_at == previous for t in live])[:, None]
    inside_enough = inside >= config.merged_ioa
    covered = inside_enough & ((fill <= _MERGED_FILL) | grouped)
    own = inside_enough & (fill > _MERGED_FILL) & ~grouped
    merged = (covered.sum(0) >= 2) & ~own.any(0) & (scores[rows] >= config.low_score)
    for i in np.flatnonzero(covered[:, merged].any(1)):
        live[i].grouped_at = frame
    return {int(r) for r in rows[merged]}


def _match(tracks: list[_Track], candidates: list[int], rows: np.ndarray, boxes: np.ndarray,
           scores: np.ndarray, labels: np.ndarray, reference: dict[int, np.ndarray],
           min_iou: float, config: AssociateConfig, direction: bool = False):
    """(track index, row) pairs: the best assignment of ``rows`` to ``candidates`` by IoU
    with each track's ``reference`` box (plus direction consistency), gated by ``min_iou``
    and, when class aware, by label."""
    if not len(rows) or not candidates:
        return []
    iou = iou_matrix(np.stack([reference[i] for i in candidates]), boxes[rows])
    gain = iou.copy()
    if direction and config.direction_weight:
        gain += config.direction_weight * _direction_consistency(
            [tracks[i] for i in candidates], boxes[rows], scores[rows], config.delta_t)
    cost = -gain
    cost[iou < min_iou] = _FORBIDDEN
    if config.class_aware:
        track_labels = np.array([tracks[i].label for i in candidates])
        cost[track_labels[:, None] != labels[rows][None, :]] = _FORBIDDEN
    from scipy.optimize import linear_sum_assignment  # 0.4 s to import: only when used
    picked_tracks, picked_rows = linear_sum_assignment(cost)
    return [(candidates[t], int(rows[r])) for t, r in zip(picked_tracks, picked_rows)
            if cost[t, r] < _FORBIDDEN]


def _direction_consistency(tracks: list[_Track], dets: np.ndarray, det_scores: np.ndarray,
                           delta_t: int) -> np.ndarray:
    """OC-SORT's momentum term, in [-0.5, 0.5] x score: how well the direction from a
    track's earlier observation to each detection agrees with the track's own motion."""
    out = np.zeros((len(tracks), len(dets)))
    centres = np.column_stack([(dets[:, 0] + dets[:, 2]) / 2, (dets[:, 1] + dets[:, 3]) / 2])
    for i, track in enumerate(tracks):
        motion = track.direction(delta_t)
        if motion is None:
            continue
        unit, origin = motion
        to_det = centres - origin
        norm = np.hypot(to_det[:, 0], to_det[:, 1])
        cos = np.where(norm > 1e-6, (to_det @ unit) / np.maximum(norm, 1e-6), 1.0)
        angle = np.arccos(np.clip(cos, -1, 1))
        out[i] = (np.pi / 2 - angle) / np.pi * det_scores
    return out
