"""Step 1 of tracking a clip: its objects and their keyframes (anchors). Detector tracks come
from associating the clip's detections (`tasks.track.associate`); keyframes a person made
come from a table (`load_keyframes`) and win over the detector's. Written to the clip's
state with the WebM's timeline (the pts of every frame), so later units never re-derive it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.store.record import ClipRecord
from tasks.track.associate import associate
from tasks.detect.state import STATE_DIR as DETECT_DIR
from tasks.detect.state import read_motion
from tasks.errors import ConfigError, PipelineError
from tasks.store.items import clip_id_for
from tasks.recipe import Recipe
from tasks.detect.shots import cuts_of
from tasks.store.storage import Location, read_bytes, write_bytes_atomic
from tasks.store.tables import concat, read_state_json, read_table, readable_parquet, write_table
from tasks.media.webm import webm_timeline
from tasks.track.state import _PLAN_SCHEMA, clip_dir, track_key

log = logging.getLogger(__name__)


KEYFRAME_COLUMNS = ("recording", "clip_index", "track_id", "frame", "label", "x1", "y1", "x2", "y2")


def load_keyframes(uri: str, out: Location) -> tuple[pa.Table, str]:
    """A person's keyframes (Parquet or CSV) with columns ``KEYFRAME_COLUMNS``; returns the
    table and a digest of its content. A bad file is a `ConfigError` naming what is wrong."""
    import hashlib

    import fsspec
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        with fsspec.open(uri, "rb") as f:
            data = f.read()
    except (OSError, ValueError) as e:
        raise ConfigError(f"keyframes {uri}: cannot read ({e})") from e
    try:
        reader = pacsv.read_csv if uri.lower().endswith(".csv") else pq.read_table
        table = reader(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as e:
        raise ConfigError(f"keyframes {uri}: not a readable {'CSV' if uri.endswith('.csv') else 'Parquet'} "
                          f"table ({e})") from e
    missing = [c for c in KEYFRAME_COLUMNS if c not in table.column_names]
    if missing:
        raise ConfigError(f"keyframes {uri}: missing column(s) {', '.join(missing)}; "
                          f"needed: {', '.join(KEYFRAME_COLUMNS)}")
    try:
        table = table.select(list(KEYFRAME_COLUMNS)).cast(pa.schema([
            ("recording", pa.string()), ("clip_index", pa.int32()), ("track_id", pa.int32()),
            ("frame", pa.int64()), ("label", pa.string()), ("x1", pa.float64()), ("y1", pa.float64()),
            ("x2", pa.float64()), ("y2", pa.float64())]))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise ConfigError(f"keyframes {uri}: wrong column type ({e})") from e
    for name in KEYFRAME_COLUMNS:
        if table.column(name).null_count:
            raise ConfigError(f"keyframes {uri}: column {name} has empty values")
    box = np.column_stack([table.column(c).to_numpy() for c in ("x1", "y1", "x2", "y2")])
    bad = ~np.isfinite(box).all(axis=1) | (box[:, 2] <= box[:, 0]) | (box[:, 3] <= box[:, 1])
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ConfigError(f"keyframes {uri}: row {row}: box {box[row].tolist()} is empty or inverted")
    if (table.column("frame").to_numpy() < 0).any() or (table.column("track_id").to_numpy() < 1).any():
        raise ConfigError(f"keyframes {uri}: frames must be >= 0 and track ids >= 1")
    return table, hashlib.sha256(data).hexdigest()[:16]


def plan_clip(record: ClipRecord, out: Location, recipe: Recipe,
              keyframes: pa.Table | None = None, key: str | None = None) -> dict[str, Any]:
    """The clip's objects and keyframes, and its timeline; returns the object ids."""
    key = key or track_key(recipe, None)
    base = clip_dir(out, record, key)
    summary = {"recording": record.recording, "clip_index": record.clip_index, "key": key}
    done = read_state_json(out, f"{base}/plan.json")
    if (isinstance(done, dict) and readable_parquet(out, f"{base}/plan.parquet")
            and readable_parquet(out, f"{base}/timeline.parquet")):
        return {**summary, **done}
    timeline = webm_timeline(out, record)
    frame_count = len(timeline)
    plans = []
    human_ids: set[int] = set()
    if keyframes is not None:
        mine = keyframes.filter(pc.and_(pc.equal(keyframes["recording"], record.recording),
                                        pc.equal(keyframes["clip_index"], record.clip_index)))
        if mine.num_rows:
            too_far = pc.max(mine["frame"]).as_py() >= frame_count
            if too_far:
                raise ConfigError(f"keyframes for {record.recording} clip {record.clip_index}: "
                                  f"frame {pc.max(mine['frame']).as_py()} beyond the clip's "
                                  f"{frame_count} frames")
            _check_inside(mine, record)
            human_ids = set(mine["track_id"].to_pylist())
            plans.append(pa.table({
                "track_id": mine["track_id"], "frame": mine["frame"], "label": mine["label"],
                "model_label": pa.nulls(mine.num_rows, pa.string()),
                "score": pa.array(np.ones(mine.num_rows, np.float32)),
                "x1": mine["x1"], "y1": mine["y1"], "x2": mine["x2"], "y2": mine["y2"],
                "source": pa.array(["human"] * mine.num_rows, pa.string())}, schema=_PLAN_SCHEMA))
    cuts: list[int] = []
    if recipe.track.from_detections:
        detected, cuts = _detector_plan(out, record, recipe, offset=max(human_ids, default=0))
        plans.append(detected)
    plan = concat(plans, _PLAN_SCHEMA).sort_by([("track_id", "ascending"), ("frame", "ascending")])
    # Where a person and the detector both gave a box for one object and frame, the person's
    # is kept: detector tracks are separate objects, so this only dedupes within a track.
    write_table(out, f"{base}/plan.parquet", plan)
    write_table(out, f"{base}/timeline.parquet", pa.table(
        {"pts": pa.array(timeline.pts, pa.int64())},
        metadata={"time_base": str(timeline.time_base)}))
    objects = sorted(set(plan["track_id"].to_pylist()))
    meta = {"objects": objects, "frames": frame_count, "cuts": cuts}
    write_bytes_atomic(out, f"{base}/plan.json", json.dumps(meta).encode())
    return {**summary, **meta}


def _check_inside(table: pa.Table, record: ClipRecord) -> None:
    w, h = record.output_width, record.output_height
    if not w or not h:
        return
    x2, y2 = table["x2"].to_numpy(), table["y2"].to_numpy()
    x1, y1 = table["x1"].to_numpy(), table["y1"].to_numpy()
    bad = (x1 < -0.5) | (y1 < -0.5) | (x2 > w + 0.5) | (y2 > h + 0.5)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ConfigError(f"keyframes: track {table['track_id'][i].as_py()} frame "
                          f"{table['frame'][i].as_py()}: box outside the {w}x{h} WebM frame")


def _detector_plan(out: Location, record: ClipRecord, recipe: Recipe,
                   offset: int) -> tuple[pa.Table, list[int]]:
    """The associated detector tracks (ids above ``offset``) and the clip's shot cuts."""
    clip_id = clip_id_for(record.source_uri)
    meta_raw = read_bytes(out, out.path(DETECT_DIR, f"{clip_id}.json"))
    table = read_table(out, out.path(DETECT_DIR, f"{clip_id}.parquet"))
    if meta_raw is None or table is None:
        raise PipelineError(f"{record.output_uri}: no detections; run detect first")
    meta = json.loads(meta_raw)
    table = table.sort_by([("frame", "ascending"), ("x1", "ascending"), ("y1", "ascending")])
    frames = table["frame"].to_numpy()
    boxes = np.column_stack([table[c].to_numpy() for c in ("x1", "y1", "x2", "y2")]).astype(np.float64)
    scores = table["score"].to_numpy()
    _, codes = np.unique(np.asarray(table["label"].to_pylist(), dtype=object).astype(str),
                         return_inverse=True)
    processed = np.arange(0, meta["frames"], meta["every_nth"])
    cuts = cuts_of(meta.get("shots") or [])
    motion = read_motion(out, record) if recipe.associate.camera_motion else None
    ids = associate(frames, boxes, scores, codes, processed, recipe.associate, cuts=cuts,
                    motion=motion)
    keep = ids > 0
    if recipe.associate.smooth:
        boxes = _smoothed(frames, boxes, ids, record)
    return pa.table({
        "track_id": pa.array(ids[keep] + offset, pa.int32()), "frame": frames[keep],
        "label": table["label"].filter(pa.array(keep)),
        "model_label": table["model_label"].filter(pa.array(keep)),
        "score": scores[keep].astype(np.float32),
        "x1": boxes[keep, 0], "y1": boxes[keep, 1], "x2": boxes[keep, 2], "y2": boxes[keep, 3],
        "source": pa.array(["detector"] * int(keep.sum()), pa.string())}, schema=_PLAN_SCHEMA), cuts


def _smoothed(frames: np.ndarray, boxes: np.ndarray, ids: np.ndarray,
              record: ClipRecord) -> np.ndarray:
    """Each track's boxes smoothed over its frames (`tasks.track.kalman.smooth`), inside the frame."""
    from tasks.track.kalman import smooth

    out = boxes.copy()
    w, h = record.output_width, record.output_height
    for tid in np.unique(ids[ids > 0]):
        rows = np.flatnonzero(ids == tid)
        out[rows] = smooth(frames[rows], boxes[rows])
    if w and h:
        out = np.clip(out, 0, [w, h, w, h])
    return out
