"""Step 3 of tracking a clip: the objects' rows joined with the clip's timeline into its
tracks table (`assemble_clip`); the clip's tracks as later stages read them, with its
review applied (`clip_tracks`); and the merged ``OUT/tracks.parquet`` (`write_tracks`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.store.record import ClipRecord
from tasks.store import merged
from tasks.errors import PipelineError
from tasks.media.frames import Timeline
from tasks.recipe import TRACKER_VERSION
from tasks.store.storage import Location
from tasks.store.tables import (TRACK_SCHEMA, TRACKS_FILE_SCHEMA, concat, read_state_table,
                                with_attributes, with_global_frame, write_table)
from tasks.track.state import STATE_DIR, TRACKS_FILE, _OBJECT_SCHEMA, _load_timeline, clip_dir

log = logging.getLogger(__name__)


def assemble_clip(record: ClipRecord, out: Location, key: str, objects: list[int]) -> dict[str, Any]:
    base = clip_dir(out, record, key)
    path = f"{base}/tracks.parquet"
    existing = read_state_table(out, path)
    reused = existing is not None
    if existing is None:
        plan = read_state_table(out, f"{base}/plan.parquet")
        timeline = _load_timeline(out, base)
        parts = []
        for track_id in objects:
            table = read_state_table(out, f"{base}/objects/{track_id}.parquet")
            if table is None:
                raise PipelineError(f"object {track_id} of {record.output_uri} is not tracked "
                                    "yet (or its table is unreadable): track again")
            parts.append(table)
        rows = concat(parts, _OBJECT_SCHEMA)
        existing = _with_clip_columns(rows, plan, timeline, record)
        write_table(out, path, existing)
    return {"recording": record.recording, "clip_index": record.clip_index,
            "objects": len(objects), "rows": existing.num_rows,
            "hidden": int(pc.sum(existing["hidden"]).as_py() or 0), "reused": reused}


def _with_clip_columns(rows: pa.Table, plan: pa.Table, timeline: Timeline,
                       record: ClipRecord) -> pa.Table:
    n = rows.num_rows
    frame = rows["frame"].to_numpy()
    seconds = timeline.seconds()
    # Label (and the model's label) per row: the object's latest keyframe at or before it.
    track = rows["track_id"].to_numpy()
    plan_track, plan_frame = plan["track_id"].to_numpy(), plan["frame"].to_numpy()
    order = np.lexsort((plan_frame, plan_track))
    keys = plan_track[order].astype(np.int64) * (1 << 40) + plan_frame[order]
    at = np.searchsorted(keys, track.astype(np.int64) * (1 << 40) + frame, side="right") - 1
    labels = np.asarray(plan["label"].to_pylist(), dtype=object)[order][at]
    model = np.asarray(plan["model_label"].to_pylist(), dtype=object)[order][at]
    table = pa.table({
        "recording": pa.array([record.recording] * n, pa.string()),
        "clip_index": pa.array(np.full(n, record.clip_index, np.int32)),
        "frame": frame, "global_frame": frame + int(record.global_first_frame or 0),
        "time_s": seconds[frame], "label": pa.array(labels.tolist(), pa.string()),
        "model_label": pa.array(model.tolist(), pa.string()), "score": rows["score"],
        "x1": rows["x1"], "y1": rows["y1"], "x2": rows["x2"], "y2": rows["y2"],
        "track_id": rows["track_id"], "hidden": rows["hidden"], "source": rows["source"]},
        schema=TRACK_SCHEMA)
    return table.sort_by([("track_id", "ascending"), ("frame", "ascending")])


def write_tracks(out: Location, summaries: list[dict[str, Any]], records: list[ClipRecord],
                 key: str) -> str:
    """``OUT/tracks.parquet``: every listed clip's tracks (reviewed where a review was applied),
    in recording order."""
    from tasks.track.review_store import REVIEW_DIR

    by_clip = {(r.recording, r.clip_index): r for r in records}
    clips = [by_clip[(s["recording"], s["clip_index"])]
             for s in sorted(summaries, key=lambda s: (s["recording"], s["clip_index"]))]
    path = out.path(TRACKS_FILE)
    # Made from each clip's tracking state and its review, if any.
    sig = merged.signature(out, [out.path(STATE_DIR), out.path(REVIEW_DIR)], [
        TRACKER_VERSION, key, [(r.source_uri, r.global_first_frame or 0) for r in clips]])
    if merged.current(out, path, sig):
        return path
    tables = []
    for record in clips:
        table = clip_tracks(out, record, key)
        if table is not None:
            tables.append(with_global_frame(with_attributes(table),
                                            record.global_first_frame or 0))
    write_table(out, path, concat(tables, TRACKS_FILE_SCHEMA))
    merged.note(out, path, sig)
    return path


def _reviewed_path(out: Location, record: ClipRecord, key: str, digest: str) -> str:
    return f"{clip_dir(out, record, key)}/reviewed-{digest}.parquet"


def clip_tracks(out: Location, record: ClipRecord, key: str) -> pa.Table | None:
    """The clip's tracks: with its review applied when it has one (`review_clip`)."""
    from tasks.track.review_store import load_review

    review = load_review(out, record)
    if review is not None:
        reviewed = read_state_table(out, _reviewed_path(out, record, key, review.digest))
        if reviewed is not None:
            return reviewed
        # Not applied (it failed, and the run reports it): the machine's tracks, not nothing.
        log.warning("%s: its review is not applied; writing the machine's tracks",
                    record.output_uri)
    return read_state_table(out, f"{clip_dir(out, record, key)}/tracks.parquet")
