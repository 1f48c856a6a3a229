"""Link per-frame detections into tracks by IoU and motion (ByteTrack with OC-SORT's
observation-based velocity).

Written here on ``scipy.optimize.linear_sum_assignment`` rather than taken from a library:
roboflow's `trackers` and TrackEval pull in non-headless ``opencv-python`` (it clashes with
our ``opencv-contrib-python-headless``: both install ``cv2``), and the whole method fits in
one small, tested module. Each track predicts its box at the next detector frame from a
constant velocity measured between its last two observations (so a gap of N frames, from
``every_nth`` or a miss, moves the prediction N steps). Matching runs twice per frame:
confident detections first, then weak ones against tracks still unmatched (ByteTrack's
idea: a weak box that overlaps a known track is evidence, a weak box alone is noise).
A new track needs ``min_hits`` matches before it gets an id, and ends after ``max_age``
frames unseen. Ids are 1, 2, ... in order of confirmation: deterministic for one input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from tasks.boxmath import iou_matrix
from tasks.recipe import AssociateConfig

_FORBIDDEN = 1e6


@dataclass
class _Track:
    box: np.ndarray
    label: int
    last_frame: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    hits: int = 1
    track_id: int = 0           # 0 until confirmed
    rows: list[int] = field(default_factory=list)

    def predict(self, frame: int) -> np.ndarray:
        return self.box + self.velocity * (frame - self.last_frame)

    def observe(self, box: np.ndarray, frame: int, row: int) -> None:
        gap = frame - self.last_frame
        if gap > 0:
            measured = (box - self.box) / gap
            # Smoothed, and taken from observations only (OC-SORT): a track that was
            # missing is not pulled along by its own stale predictions.
            self.velocity = measured if self.hits == 1 else 0.5 * self.velocity + 0.5 * measured
        self.box, self.last_frame = box, frame
        self.hits += 1
        self.rows.append(row)


def associate(frames: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
              processed_frames: np.ndarray, config: AssociateConfig) -> np.ndarray:
    """Track id per detection row (0: not part of any kept track).

    ``frames`` (n,), ``boxes`` (n, 4), ``scores`` (n,), ``labels`` (n,) integer codes;
    rows sorted by frame. ``processed_frames``: every frame the detector ran on, with or
    without detections (a frame without one ages the tracks).
    """
    frames = np.asarray(frames, np.int64)
    if len(frames) and np.any(np.diff(frames) < 0):
        raise ValueError("detections must be sorted by frame")
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, np.int64)
    out = np.zeros(len(frames), np.int32)
    tracks: list[_Track] = []
    next_id = 1
    starts = np.searchsorted(frames, processed_frames, side="left")
    ends = np.searchsorted(frames, processed_frames, side="right")
    for frame, lo, hi in zip(np.asarray(processed_frames, np.int64).tolist(), starts, ends):
        tracks = [t for t in tracks if frame - t.last_frame <= config.max_age]
        rows = np.arange(lo, hi)
        high = rows[scores[rows] >= config.high_score]
        low = rows[(scores[rows] >= config.low_score) & (scores[rows] < config.high_score)]
        unmatched = list(range(len(tracks)))
        matched_high = _match(tracks, unmatched, high, boxes, labels, frame, config)
        _match(tracks, unmatched, low, boxes, labels, frame, config)
        # A tentative track that misses a detector frame was noise (ByteTrack drops it).
        missed = set(unmatched)
        tracks = [t for i, t in enumerate(tracks) if t.track_id or i not in missed]
        for row in high:
            if row not in matched_high:
                tracks.append(_Track(box=boxes[row].copy(), label=int(labels[row]),
                                     last_frame=frame, rows=[int(row)]))
        for track in tracks:
            if not track.track_id and track.hits >= config.min_hits:
                track.track_id = next_id
                next_id += 1
            if track.track_id and track.rows:
                out[track.rows] = track.track_id
                track.rows.clear()
    return out


def _match(tracks: list[_Track], unmatched: list[int], rows: np.ndarray, boxes: np.ndarray,
           labels: np.ndarray, frame: int, config: AssociateConfig) -> set[int]:
    """Assign ``rows`` to the still unmatched tracks; updates both; returns matched rows."""
    if not len(rows) or not unmatched:
        return set()
    predicted = np.stack([tracks[i].predict(frame) for i in unmatched])
    iou = iou_matrix(predicted, boxes[rows])
    cost = 1.0 - iou
    cost[iou < config.match_iou] = _FORBIDDEN
    if config.class_aware:
        track_labels = np.array([tracks[i].label for i in unmatched])
        cost[track_labels[:, None] != labels[rows][None, :]] = _FORBIDDEN
    picked_tracks, picked_rows = linear_sum_assignment(cost)
    matched: set[int] = set()
    done: list[int] = []
    for ti, ri in zip(picked_tracks, picked_rows):
        if cost[ti, ri] >= _FORBIDDEN:
            continue
        track_index, row = unmatched[ti], int(rows[ri])
        tracks[track_index].observe(boxes[row].copy(), frame, row)
        matched.add(row)
        done.append(track_index)
    for index in done:
        unmatched.remove(index)
    return matched
