"""A reviewer's corrections applied to a clip's machine tracks (`review_clip`): the tracker
runs again from each human keyframe up to the object's next anchor
(`tasks.track.corrections` decides what changed; `_Retracker` re-tracks).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from models import registry
from tasks.store.record import ClipRecord
from tasks.media.webm import open_webm
from tasks.errors import PipelineError
from tasks.media.frames import Timeline
from tasks.recipe import Recipe
from tasks.store.storage import Location
from tasks.store.tables import read_state_table, readable_parquet, write_table
from tasks.track.state import _load_timeline, clip_dir
from tasks.track.chunks import _End, _Rows, _Scaler, _interpolated_rows, _step
from tasks.track.assemble import _reviewed_path

log = logging.getLogger(__name__)


def review_clip(record: ClipRecord, out: Location, recipe: Recipe, key: str) -> dict[str, Any] | None:
    """Apply the clip's review, if it has one, to its machine tracks: the tracker runs again
    from each human keyframe up to the object's next anchor (`tasks.track.corrections`).
    The result is kept per review digest, so a rerun redoes nothing and a new review of the
    clip redoes only this clip."""
    from tasks.track.corrections import correct_tracks
    from tasks.track.review_store import load_review

    review = load_review(out, record)
    if review is None:
        return None
    summary = {"recording": record.recording, "clip_index": record.clip_index,
               "review": review.digest}
    path = _reviewed_path(out, record, key, review.digest)
    if readable_parquet(out, path):
        return {**summary, "status": "skipped"}
    if review.track_key and not key.startswith(review.track_key):
        raise PipelineError(f"{record.output_uri}: its review refers to the track ids of "
                            f"other tracking settings ({review.track_key}, now {key}); track "
                            "with those settings, or review the clip again")
    base = clip_dir(out, record, key)
    machine = read_state_table(out, f"{base}/tracks.parquet")
    plan = read_state_table(out, f"{base}/plan.parquet")
    if machine is None or plan is None:
        raise PipelineError(f"{record.output_uri}: no machine tracks to apply the review to")
    timeline = _load_timeline(out, base)
    times = timeline.seconds()
    anchors = {}
    plan_ids, plan_frames = plan["track_id"].to_numpy(), plan["frame"].to_numpy()
    plan_boxes = np.column_stack([plan[c].to_numpy() for c in ("x1", "y1", "x2", "y2")])
    for tid in np.unique(plan_ids).tolist():
        mask = plan_ids == tid
        anchors[int(tid)] = (plan_frames[mask], plan_boxes[mask])
    started = time.perf_counter()
    with _Retracker(out, record, recipe, timeline) as retrack:
        table, counts = correct_tracks(machine, anchors, review.keyframes, review.scope,
                                       len(timeline), times,
                                       int(record.global_first_frame or 0), retrack)
        counts["chunks_retracked"] = retrack.chunks
    write_table(out, path, table)
    return {**summary, "status": "applied", **counts,
            "seconds": round(time.perf_counter() - started, 3)}


class _Retracker:
    """The recipe's tracker, run again over one object's frames from a person's box: the
    tracker restarts on the box and advances in chunks of ``frames_per_execution`` up to the
    next anchor; a lost object is hidden until then. Without a tracker the frames are
    interpolated towards the next anchor (held, hidden, past ``max_gap``)."""

    def __init__(self, out: Location, record: ClipRecord, recipe: Recipe, timeline: Timeline):
        self.cfg = recipe.track
        self.record = record
        self.opener = open_webm(out, record, timeline)
        self.chunks = 0

    def __enter__(self) -> "_Retracker":
        self.reader = self.opener.__enter__() if self.cfg.tracker is not None else None
        return self

    def __exit__(self, *exc) -> None:
        if self.reader is not None:
            self.opener.__exit__(*exc)

    def __call__(self, track_id: int, frame: int, box: list[float], stop: int,
                 next_box: list[float] | None) -> dict[str, list]:
        cfg = self.cfg
        anchor_at = {frame: (np.asarray(box, np.float64), 1.0, "human")}
        if cfg.tracker is None:
            if next_box is None:  # after the last anchor: held to the track's end
                n = stop - frame
                return {"frame": list(range(frame, stop)), "box": [box] * n,
                        "score": [1.0] + [0.0] * (n - 1), "hidden": [False] * n}
            anchor_at[stop] = (np.asarray(next_box, np.float64), 1.0, "human")
            rows = _interpolated_rows(np.asarray([frame, stop]), np.asarray([box, next_box]),
                                      anchor_at, cfg.max_gap)
            keep = [i for i, f in enumerate(rows["frame"]) if f < stop]
            return {k: [v[i] for i in keep] for k, v in rows.items()}
        tracker = registry.create("tracker", cfg.tracker, **cfg.options)
        scaler = _Scaler(self.record, cfg.max_side)
        rows = _Rows()
        state, end = None, _End("active", None, None)
        for c0 in range(frame, stop, cfg.frames_per_execution):
            count = min(cfg.frames_per_execution, stop - c0)
            for index, _, image in self.reader.read(c0, count):
                # Never "ended": up to the next anchor a lost object is hidden, not gone.
                state, end = _step(tracker, state, scaler.image(image), index, anchor_at, stop, end,
                                   rows, scaler, cfg.lost_score)
            self.chunks += 1
        return rows.to_json()
