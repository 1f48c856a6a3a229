"""Tracks of one clip: keyframe boxes linked into objects, carried frame by frame by an AI
tracker in resumable chunks of ``frames_per_execution`` frames.

Three units of work, each a plain function a Prefect task wraps:

1. `plan_clip`: the clip's objects and their keyframes (anchors). Detector tracks come
   from associating the clip's detections (`tasks.track.associate`); keyframes a person made come
   from a table (`load_keyframes`) and win over the detector's. Written to the clip's state
   with the WebM's timeline (the pts of every frame), so later units never re-derive it.
2. `run_object`: one object, chunk after chunk. Each chunk advances up to
   ``frames_per_execution`` frames and persists its rows and end state (frame reached, last
   box, score, active/lost) as one small atomic file; at a keyframe the tracker restarts on
   it. Within a run the tracker's model lives on across chunk boundaries, so chunking costs
   nothing in accuracy. OpenCV trackers cannot be saved, so a resumed run rebuilds the model
   by replaying the object from its last keyframe to the chunk (`_rebuild`); trackers are
   deterministic, so the replay lands on the persisted box and the resumed run's boxes are
   identical to an uninterrupted one's. A score below ``lost_score`` (or the tracker losing
   the box) hides the object until its next keyframe (the association found it again);
   after its last keyframe a lost object ends, and the tracker carries it at most
   ``carry_frames``. When the object is finished its chunk files are merged into one table
   and removed.
3. `assemble_clip`: the objects' rows joined with the clip's timeline into the clip's
   tracks table.

Within a run one decoder reads the object's frames in order (chunk boundaries do not seek);
a resumed run seeks once, to the object's last keyframe (`tasks.media.frames`, exact frames).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import re
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models import registry
from tasks import progress
from tasks.store import merged
from tasks.track.associate import associate
from tasks.detect.stage import STATE_DIR as DETECT_DIR
from tasks.detect.stage import looked_up, read_motion
from tasks.media.webm import open_webm
from tasks.errors import ConfigError, PipelineError, ReviewStorageError, StorageError
from tasks.media.frames import FrameReader, Timeline
from tasks.store.items import clip_id_for
from tasks.store.ledger import Ledger, Unit
from tasks.recipe import TRACKER_VERSION, Recipe
from tasks.detect.shots import cuts_of, next_cut
from tasks.store.storage import Location, read_bytes, write_bytes_atomic
from tasks.convert.geometry import fit_within
from tasks.store.tables import (TRACK_SCHEMA, TRACKS_FILE_SCHEMA, concat, read_state_json,
                          read_state_table, read_table, readable_parquet, with_attributes,
                          with_global_frame, write_table)
from tasks.media.webm import webm_timeline

log = logging.getLogger(__name__)
STATE_DIR = "_state/track"
TRACKS_FILE = "tracks.parquet"
KEYFRAME_COLUMNS = ("recording", "clip_index", "track_id", "frame", "label", "x1", "y1", "x2", "y2")
# Ids of detector tracks start above this when a person's keyframes are merged in, so the
# two never collide and both stay deterministic.
_PLAN_SCHEMA = pa.schema([("track_id", pa.int32()), ("frame", pa.int64()), ("label", pa.string()),
                          ("model_label", pa.string()), ("score", pa.float32()),
                          ("x1", pa.float64()), ("y1", pa.float64()), ("x2", pa.float64()),
                          ("y2", pa.float64()), ("source", pa.string())])
_OBJECT_SCHEMA = pa.schema([("track_id", pa.int32()), ("frame", pa.int64()), ("score", pa.float32()),
                            ("x1", pa.float32()), ("y1", pa.float32()), ("x2", pa.float32()),
                            ("y2", pa.float32()), ("hidden", pa.bool_()), ("source", pa.string())])


def track_key(recipe: Recipe, keyframes_digest: str | None) -> str:
    return recipe.track_key() + (f"-{keyframes_digest[:8]}" if keyframes_digest else "")


def clip_dir(out: Location, record: dict[str, Any], key: str) -> str:
    """The clip's tracking state for these settings and this WebM (its fingerprint and
    convert settings): a clip replaced under the same name is tracked afresh."""
    from tasks.detect.stage import webm_identity

    webm = hashlib.blake2b(json.dumps(webm_identity(record)).encode(), digest_size=4).hexdigest()
    return out.path(STATE_DIR, clip_id_for(record["source_uri"]), f"{key}-{webm}")


# --- keyframes a person made ------------------------------------------------------------


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


# --- 1. plan ----------------------------------------------------------------------------


def plan_clip(record: dict[str, Any], out: Location, recipe: Recipe,
              keyframes: pa.Table | None = None, key: str | None = None) -> dict[str, Any]:
    """The clip's objects and keyframes, and its timeline; returns the object ids."""
    key = key or track_key(recipe, None)
    base = clip_dir(out, record, key)
    summary = {"recording": record["recording"], "clip_index": record["clip_index"], "key": key}
    done = read_state_json(out, f"{base}/plan.json")
    if (isinstance(done, dict) and readable_parquet(out, f"{base}/plan.parquet")
            and readable_parquet(out, f"{base}/timeline.parquet")):
        return {**summary, **done}
    timeline = webm_timeline(out, record)
    frame_count = len(timeline)
    plans = []
    human_ids: set[int] = set()
    if keyframes is not None:
        mine = keyframes.filter(pc.and_(pc.equal(keyframes["recording"], record["recording"]),
                                        pc.equal(keyframes["clip_index"], record["clip_index"])))
        if mine.num_rows:
            too_far = pc.max(mine["frame"]).as_py() >= frame_count
            if too_far:
                raise ConfigError(f"keyframes for {record['recording']} clip {record['clip_index']}: "
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


def _check_inside(table: pa.Table, record: dict[str, Any]) -> None:
    w, h = record.get("output_width"), record.get("output_height")
    if not w or not h:
        return
    x2, y2 = table["x2"].to_numpy(), table["y2"].to_numpy()
    x1, y1 = table["x1"].to_numpy(), table["y1"].to_numpy()
    bad = (x1 < -0.5) | (y1 < -0.5) | (x2 > w + 0.5) | (y2 > h + 0.5)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ConfigError(f"keyframes: track {table['track_id'][i].as_py()} frame "
                          f"{table['frame'][i].as_py()}: box outside the {w}x{h} WebM frame")


def _detector_plan(out: Location, record: dict[str, Any], recipe: Recipe,
                   offset: int) -> tuple[pa.Table, list[int]]:
    """The associated detector tracks (ids above ``offset``) and the clip's shot cuts."""
    clip_id = clip_id_for(record["source_uri"])
    meta_raw = read_bytes(out, out.path(DETECT_DIR, f"{clip_id}.json"))
    table = read_table(out, out.path(DETECT_DIR, f"{clip_id}.parquet"))
    if meta_raw is None or table is None:
        raise PipelineError(f"{record['output_uri']}: no detections; run detect first")
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
              record: dict[str, Any]) -> np.ndarray:
    """Each track's boxes smoothed over its frames (`tasks.track.kalman.smooth`), inside the frame."""
    from tasks.track.kalman import smooth

    out = boxes.copy()
    w, h = record.get("output_width"), record.get("output_height")
    for tid in np.unique(ids[ids > 0]):
        rows = np.flatnonzero(ids == tid)
        out[rows] = smooth(frames[rows], boxes[rows])
    if w and h:
        out = np.clip(out, 0, [w, h, w, h])
    return out


def _load_timeline(out: Location, base: str) -> Timeline:
    table = read_state_table(out, f"{base}/timeline.parquet")
    if table is None:
        raise PipelineError(f"{base}: timeline missing or unreadable; plan the clip again")
    time_base = Fraction(table.schema.metadata[b"time_base"].decode())
    return Timeline(table["pts"].to_numpy(), time_base)


# --- 2. one object, chunk by chunk -------------------------------------------------------


@dataclass
class _End:
    """What a chunk leaves for the next: the only state carried across a chunk boundary."""

    status: str                 # active | lost | ended
    box: list[float] | None     # last box the object had (WebM pixels)
    frame: int | None           # frame of that box's row

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "box": self.box, "frame": self.frame}


def run_object(record: dict[str, Any], out: Location, recipe: Recipe, key: str,
               track_id: int, stop_after_chunks: int | None = None) -> dict[str, Any]:
    """Track one object through the clip; resumes after the last finished chunk.

    ``stop_after_chunks`` ends the call after that many new chunks (tests and benchmarks
    use it to interrupt a run at a chunk boundary as a crash would).
    """
    cfg = recipe.track
    base = clip_dir(out, record, key)
    final = f"{base}/objects/{track_id}.parquet"
    summary = {"track_id": track_id}
    if readable_parquet(out, final):
        return {**summary, "status": "skipped"}
    started = time.perf_counter()
    plan = read_state_table(out, f"{base}/plan.parquet")
    if plan is None:
        raise PipelineError(f"{base}: plan missing or unreadable; plan the clip again")
    anchors = plan.filter(pc.equal(plan["track_id"], track_id))
    if anchors.num_rows == 0:
        raise PipelineError(f"object {track_id} is not in the plan of {record['output_uri']}")
    frames = anchors["frame"].to_numpy()
    boxes = np.column_stack([anchors[c].to_numpy() for c in ("x1", "y1", "x2", "y2")])
    anchor_at = {int(f): (boxes[i], float(anchors["score"][i].as_py()), anchors["source"][i].as_py())
                 for i, f in enumerate(frames)}
    timeline = _load_timeline(out, base)
    if cfg.tracker is None:
        rows = _interpolated_rows(frames, boxes, anchor_at, cfg.max_gap)
        write_table(out, final, _object_table(track_id, rows))
        return {**summary, "status": "tracked", "rows": len(rows["frame"]), "chunks": 0}
    start, last_anchor = int(frames[0]), int(frames[-1])
    stop = min(len(timeline), last_anchor + cfg.carry_frames + 1)
    cut = next_cut((read_state_json(out, f"{base}/plan.json") or {}).get("cuts") or [], last_anchor)
    if cut is not None:  # a track ends at a shot cut: the next shot is another view
        stop = min(stop, cut)
    size = cfg.frames_per_execution
    chunk_starts = list(range(start, stop, size))
    chunk_dir = f"{base}/objects/{track_id}"
    chunks = _finished_chunks(out, chunk_dir)
    done = len(chunks)
    end = _End(**chunks[-1]["end"]) if chunks else _End("active", None, None)
    ran = 0
    tracker = registry.create("tracker", cfg.tracker, **cfg.options)
    takes_reference = "reference" in inspect.signature(tracker.init).parameters
    anchor_frames = np.asarray(sorted(anchor_at), np.int64)
    with open_webm(out, record, timeline) as reader, \
            progress.meter("track", record["source_uri"], None) as meter:
        scaler = _Scaler(record, cfg.max_side)
        state, live = None, False  # the tracker, kept across chunks within this run
        for c in range(done, len(chunk_starts)):
            if end.status == "ended" or (stop_after_chunks is not None and ran >= stop_after_chunks):
                break
            c0, c1 = chunk_starts[c], min(chunk_starts[c] + size, stop)
            if end.status == "active" and c0 not in anchor_at and not live:
                state = _rebuild(tracker, reader, scaler, anchor_at, anchor_frames, last_anchor,
                                 end, c0, cfg.lost_score, takes_reference)
            rows = _Rows()
            for index, pts, frame in reader.read(c0, c1 - c0):
                state, end = _step(tracker, state, scaler.image(frame), index, anchor_at,
                                   last_anchor, end, rows, scaler, cfg.lost_score)
                meter.add()
                if end.status == "ended":
                    break
            live = True
            blob = {"rows": rows.to_json(), "end": end.to_json()}
            write_bytes_atomic(out, f"{chunk_dir}/{_chunk_name(c)}", json.dumps(blob).encode())
            ran += 1
    chunks = _finished_chunks(out, chunk_dir)
    total = len(chunks)
    finished = end.status == "ended" or total == len(chunk_starts)
    if not finished:
        return {**summary, "status": "interrupted", "chunks": total}
    if readable_parquet(out, final):  # finished meanwhile by another writer: keep its rows
        return {**summary, "status": "skipped"}
    if not chunks:
        # The chunk files are gone although this object ran: something else removed them.
        # Writing an empty table here would replace good rows with none.
        raise PipelineError(f"object {track_id} of {record['output_uri']}: its chunk files "
                            "vanished while it was tracked (another run on this OUT?); run again")
    merged = _Rows()
    for chunk in chunks:
        merged.extend(chunk["rows"])
    write_table(out, final, _object_table(track_id, merged.to_json()))
    _remove_chunks(out, chunk_dir)
    return {**summary, "status": "tracked", "rows": len(merged.frame), "chunks": total,
            "resumed_at_chunk": done, "seconds": round(time.perf_counter() - started, 3)}


def _rebuild(tracker, reader: FrameReader, scaler: "_Scaler", anchor_at, anchor_frames,
             last_anchor: int, end: "_End", c0: int, lost_score: float, takes_reference: bool):
    """The tracker as an uninterrupted run had it before frame ``c0``, after a resume.

    OpenCV trackers cannot be saved, so the state is rebuilt by replaying the object from
    its last keyframe up to the chunk (the rows are already persisted and are not written
    again). Trackers are deterministic, so the replay ends on exactly the persisted box, and
    a resumed run goes on as if never stopped. Should it not (a tracker that is not
    deterministic), the tracker restarts on the persisted box, scoring against the keyframe.
    """
    ref = int(anchor_frames[np.searchsorted(anchor_frames, c0) - 1])
    state, replay = None, _End("active", None, None)
    keyframe = previous = None
    for index, _, frame in reader.read(ref, c0 - ref):
        image = scaler.image(frame)
        keyframe = image if index == ref else keyframe
        state, replay = _step(tracker, state, image, index, anchor_at, last_anchor, replay,
                              _Rows(), scaler, lost_score)
        previous = image
    if replay.to_json() == end.to_json() and state is not None:
        return state
    log.warning("tracker replay to frame %d ended on %s, not the persisted %s; restarting "
                "on the persisted box", c0, replay.box, end.box)
    reference = (keyframe, scaler.to_model(anchor_at[ref][0])) if takes_reference else None
    return _init(tracker, previous, scaler.to_model(end.box), reference)


def _init(tracker, image: np.ndarray, box: np.ndarray, reference=None):
    try:
        if reference is not None:
            return tracker.init(image, box, reference=reference)
        return tracker.init(image, box)
    except ValueError:  # a box the tracker cannot start on (too small, off the frame)
        return None


def _step(tracker, state, image, index, anchor_at, last_anchor, end: _End, rows: "_Rows",
          scaler: "_Scaler", lost_score: float):
    anchor = anchor_at.get(index)
    if anchor is not None:
        box, score, source = anchor
        rows.add(index, box, score, False, source)
        if index + 1 in anchor_at:
            # The next frame is a keyframe too (a detector on every frame): the tracker
            # would restart there, so starting it here is wasted work.
            return None, _End("active", [float(v) for v in box], index)
        state = _init(tracker, image, scaler.to_model(box))
        return state, _End("active" if state is not None else "lost", [float(v) for v in box], index)
    if end.status == "active" and state is not None:
        state, found, score = tracker.update(state, image)
        if found is not None and score >= lost_score:
            box = scaler.to_webm(found)
            rows.add(index, box, score, False, "tracker")
            return state, _End("active", box, index)
    if index > last_anchor:  # lost after the last keyframe: the track ends here
        return None, _End("ended", end.box, end.frame)
    rows.add(index, end.box, 0.0, True, "tracker")  # hidden until the next keyframe
    return None, _End("lost", end.box, end.frame)


class _Scaler:
    """Frames for the tracker, optionally shrunk; boxes between WebM and tracker pixels."""

    def __init__(self, record: dict[str, Any], max_side: int | None):
        self.size = (int(record["output_width"]), int(record["output_height"]))
        self.model = fit_within(self.size, max_side)
        self.factor = np.array([self.size[0] / self.model[0], self.size[1] / self.model[1]] * 2)

    def image(self, frame) -> np.ndarray:
        if self.model == self.size:
            return frame.to_ndarray(format="rgb24")
        return frame.to_ndarray(format="rgb24", width=self.model[0], height=self.model[1])

    def to_model(self, box) -> np.ndarray:
        return np.asarray(box, np.float64) / self.factor

    def to_webm(self, box) -> list[float]:
        w, h = self.size
        scaled = np.clip(np.asarray(box, np.float64) * self.factor, 0, [w, h, w, h])
        return [float(v) for v in scaled]


class _Rows:
    def __init__(self) -> None:
        self.frame: list[int] = []
        self.box: list[list[float]] = []
        self.score: list[float] = []
        self.hidden: list[bool] = []
        self.source: list[str] = []

    def add(self, frame: int, box, score: float, hidden: bool, source: str) -> None:
        self.frame.append(int(frame))
        self.box.append([float(v) for v in box])
        self.score.append(float(score))
        self.hidden.append(bool(hidden))
        self.source.append(source)

    def to_json(self) -> dict[str, list]:
        return {"frame": self.frame, "box": self.box, "score": self.score,
                "hidden": self.hidden, "source": self.source}

    def extend(self, data: dict[str, list]) -> None:
        for name in ("frame", "box", "score", "hidden", "source"):
            getattr(self, name).extend(data[name])


def _interpolated_rows(frames, boxes, anchor_at, max_gap: int) -> dict[str, Any]:
    """Without a tracker: keyframes, linear between them, hidden across long gaps."""
    from tasks.annotations.boxmath import interpolate

    rows = _Rows()
    for i, f in enumerate(frames.tolist()):
        box, score, source = anchor_at[f]
        rows.add(f, box, score, False, source)
        if i + 1 == len(frames):
            break
        nxt = int(frames[i + 1])
        between = np.arange(f + 1, nxt)
        if not len(between):
            continue
        if nxt - f <= max_gap:
            for g, b in zip(between.tolist(), interpolate(box, boxes[i + 1], f, nxt, between)):
                rows.add(g, b, 0.0, False, "interpolated")
        else:
            for g in between.tolist():
                rows.add(g, box, 0.0, True, "interpolated")
    return rows.to_json()


def _object_table(track_id: int, rows: dict[str, Any]) -> pa.Table:
    box = np.asarray(rows["box"], np.float32).reshape(-1, 4)
    n = len(rows["frame"])
    return pa.table({"track_id": pa.array(np.full(n, track_id, np.int32)),
                     "frame": pa.array(rows["frame"], pa.int64()),
                     "score": pa.array(rows["score"], pa.float32()),
                     "x1": box[:, 0], "y1": box[:, 1], "x2": box[:, 2], "y2": box[:, 3],
                     "hidden": pa.array(rows["hidden"], pa.bool_()),
                     "source": pa.array(rows["source"], pa.string())}, schema=_OBJECT_SCHEMA)


_CHUNK = re.compile(r"c(\d{7})\.json$")


def _chunk_name(index: int) -> str:
    return f"c{index:07d}.json"


def _finished_chunks(out: Location, chunk_dir: str) -> list[dict[str, Any]]:
    """The finished chunks, c0000000, c0000001, ... up to the first missing or unreadable one
    (a garbled chunk is redone, and the chunks after it with it)."""
    try:
        names = out.fs.ls(chunk_dir, detail=False)
    except FileNotFoundError:
        return []
    present = {int(m.group(1)) for n in names if (m := _CHUNK.search(str(n)))}
    chunks: list[dict[str, Any]] = []
    while len(chunks) in present:
        chunk = read_state_json(out, f"{chunk_dir}/{_chunk_name(len(chunks))}")
        if not (isinstance(chunk, dict) and isinstance(chunk.get("rows"), dict)
                and isinstance(chunk.get("end"), dict)):
            break
        chunks.append(chunk)
    return chunks


def _remove_chunks(out: Location, chunk_dir: str) -> None:
    try:
        out.fs.rm(chunk_dir, recursive=True)
    except FileNotFoundError:
        pass


# --- 3. the clip's table ------------------------------------------------------------------


def assemble_clip(record: dict[str, Any], out: Location, key: str, objects: list[int]) -> dict[str, Any]:
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
                raise PipelineError(f"object {track_id} of {record['output_uri']} is not tracked "
                                    "yet (or its table is unreadable): track again")
            parts.append(table)
        rows = concat(parts, _OBJECT_SCHEMA)
        existing = _with_clip_columns(rows, plan, timeline, record)
        write_table(out, path, existing)
    return {"recording": record["recording"], "clip_index": record["clip_index"],
            "objects": len(objects), "rows": existing.num_rows,
            "hidden": int(pc.sum(existing["hidden"]).as_py() or 0), "reused": reused}


def _with_clip_columns(rows: pa.Table, plan: pa.Table, timeline: Timeline,
                       record: dict[str, Any]) -> pa.Table:
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
        "recording": pa.array([record["recording"]] * n, pa.string()),
        "clip_index": pa.array(np.full(n, record["clip_index"], np.int32)),
        "frame": frame, "global_frame": frame + int(record.get("global_first_frame") or 0),
        "time_s": seconds[frame], "label": pa.array(labels.tolist(), pa.string()),
        "model_label": pa.array(model.tolist(), pa.string()), "score": rows["score"],
        "x1": rows["x1"], "y1": rows["y1"], "x2": rows["x2"], "y2": rows["y2"],
        "track_id": rows["track_id"], "hidden": rows["hidden"], "source": rows["source"]},
        schema=TRACK_SCHEMA)
    return table.sort_by([("track_id", "ascending"), ("frame", "ascending")])


def write_tracks(out: Location, summaries: list[dict[str, Any]], records: list[dict[str, Any]],
                 key: str) -> str:
    """``OUT/tracks.parquet``: every listed clip's tracks (reviewed where a review was applied),
    in recording order."""
    from tasks.track.corrections import REVIEW_DIR

    by_clip = {(r["recording"], r["clip_index"]): r for r in records}
    clips = [by_clip[(s["recording"], s["clip_index"])]
             for s in sorted(summaries, key=lambda s: (s["recording"], s["clip_index"]))]
    path = out.path(TRACKS_FILE)
    # Made from each clip's tracking state and its review, if any.
    sig = merged.signature(out, [out.path(STATE_DIR), out.path(REVIEW_DIR)], [
        TRACKER_VERSION, key, [(r["source_uri"], r.get("global_first_frame") or 0) for r in clips]])
    if merged.current(out, path, sig):
        return path
    tables = []
    for record in clips:
        table = clip_tracks(out, record, key)
        if table is not None:
            tables.append(with_global_frame(with_attributes(table),
                                            record.get("global_first_frame") or 0))
    write_table(out, path, concat(tables, TRACKS_FILE_SCHEMA))
    merged.note(out, path, sig)
    return path


# --- 4. a reviewer's corrections ----------------------------------------------------------


def _reviewed_path(out: Location, record: dict[str, Any], key: str, digest: str) -> str:
    return f"{clip_dir(out, record, key)}/reviewed-{digest}.parquet"


def clip_tracks(out: Location, record: dict[str, Any], key: str) -> pa.Table | None:
    """The clip's tracks: with its review applied when it has one (`review_clip`)."""
    from tasks.track.corrections import load_review

    review = load_review(out, record)
    if review is not None:
        reviewed = read_state_table(out, _reviewed_path(out, record, key, review.digest))
        if reviewed is not None:
            return reviewed
        # Not applied (it failed, and the run reports it): the machine's tracks, not nothing.
        log.warning("%s: its review is not applied; writing the machine's tracks",
                    record["output_uri"])
    return read_state_table(out, f"{clip_dir(out, record, key)}/tracks.parquet")


def review_clip(record: dict[str, Any], out: Location, recipe: Recipe, key: str) -> dict[str, Any] | None:
    """Apply the clip's review, if it has one, to its machine tracks: the tracker runs again
    from each human keyframe up to the object's next anchor (`tasks.track.corrections`).
    The result is kept per review digest, so a rerun redoes nothing and a new review of the
    clip redoes only this clip."""
    from tasks.track.corrections import correct_tracks, load_review

    review = load_review(out, record)
    if review is None:
        return None
    summary = {"recording": record["recording"], "clip_index": record["clip_index"],
               "review": review.digest}
    path = _reviewed_path(out, record, key, review.digest)
    if readable_parquet(out, path):
        return {**summary, "status": "skipped"}
    if review.track_key and not key.startswith(review.track_key):
        raise PipelineError(f"{record['output_uri']}: its review refers to the track ids of "
                            f"other tracking settings ({review.track_key}, now {key}); track "
                            "with those settings, or review the clip again")
    base = clip_dir(out, record, key)
    machine = read_state_table(out, f"{base}/tracks.parquet")
    plan = read_state_table(out, f"{base}/plan.parquet")
    if machine is None or plan is None:
        raise PipelineError(f"{record['output_uri']}: no machine tracks to apply the review to")
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
                                       int(record.get("global_first_frame") or 0), retrack)
        counts["chunks_retracked"] = retrack.chunks
    write_table(out, path, table)
    return {**summary, "status": "applied", **counts,
            "seconds": round(time.perf_counter() - started, 3)}


class _Retracker:
    """The recipe's tracker, run again over one object's frames from a person's box: the
    tracker restarts on the box and advances in chunks of ``frames_per_execution`` up to the
    next anchor; a lost object is hidden until then. Without a tracker the frames are
    interpolated towards the next anchor (held, hidden, past ``max_gap``)."""

    def __init__(self, out: Location, record: dict[str, Any], recipe: Recipe, timeline: Timeline):
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


# --- URI entry points (what a Prefect task calls) ----------------------------------------


def _out(out_uri: str, recipe: Recipe) -> Location:
    from tasks.store.storage import open_location

    return open_location(out_uri, recipe.storage)


def plan_clip_uri(record, out_uri: str, recipe: Recipe, keyframes_uri: str | None, key: str):
    out = _out(out_uri, recipe)
    table = load_keyframes(keyframes_uri, out)[0] if keyframes_uri else None
    return plan_clip(record, out, recipe, table, key)


def run_object_uri(record, out_uri: str, recipe: Recipe, key: str, track_id: int):
    return run_object(record, _out(out_uri, recipe), recipe, key, track_id)


def tracked_before(record: dict[str, Any], out: Location, key: str) -> dict[str, Any] | None:
    """What `finish_clip_uri` would return, when the clip has nothing left to do: planned,
    its tracks table assembled, and its review (if any) applied. None otherwise."""
    from tasks.track.corrections import load_review

    record = looked_up(record)
    base = clip_dir(out, record, key)
    plan = read_state_json(out, f"{base}/plan.json")
    if not (isinstance(plan, dict) and isinstance(plan.get("objects"), list)
            and readable_parquet(out, f"{base}/plan.parquet")
            and readable_parquet(out, f"{base}/timeline.parquet")):
        return None
    tracks = read_state_table(out, f"{base}/tracks.parquet", ["hidden"])
    if tracks is None:
        return None
    where = {"recording": record["recording"], "clip_index": record["clip_index"]}
    review = load_review(out, record)
    reviewed = None
    if review is not None:
        if not readable_parquet(out, _reviewed_path(out, record, key, review.digest)):
            return None
        reviewed = {**where, "review": review.digest, "status": "skipped"}
    summary = {**where, "objects": len(plan["objects"]), "rows": tracks.num_rows,
               "hidden": int(pc.sum(tracks["hidden"]).as_py() or 0), "reused": True}
    return {"tracks": summary, "review": reviewed, "review_error": None}


def track_ledger(records: list[dict[str, Any]], out_uri: str, recipe: Recipe,
                 key: str) -> Ledger:
    """The `tracked_before` answers of ``records`` kept from the last run (`tasks.store.ledger`):
    each reads the clip's tracking state folder and its review file."""
    from tasks.track.corrections import REVIEW_DIR, review_path

    out = _out(out_uri, recipe)
    state, reviews = out.path(STATE_DIR), out.path(REVIEW_DIR)
    return Ledger(out, "track", [
        Unit([looked_up(record), key], ((state, clip_dir(out, record, key) + "/"),
                             (reviews, review_path(out, record))))
        for record in records])


def tracked_before_uri(record: dict[str, Any], out_uri: str, recipe: Recipe,
                       key: str) -> dict[str, Any] | None:
    return tracked_before(record, _out(out_uri, recipe), key)


def finish_clip_uri(record, out_uri: str, recipe: Recipe, key: str,
                    objects: list[int]) -> dict[str, Any]:
    """A clip's tracks table from its objects (`assemble_clip`), then its review applied
    (`review_clip`), as one unit: ``{"tracks": summary, "review": summary or None,
    "review_error": None or why}``. A review that cannot be applied is a verdict, not a
    failure of the unit: the clip keeps its machine tracks. A store failure while applying
    it raises `ReviewStorageError` (retried, and it carries the tracks summary)."""
    out = _out(out_uri, recipe)
    tracks = assemble_clip(record, out, key, objects)
    review, error = None, None
    try:
        review = review_clip(record, out, recipe, key)
    except StorageError as e:
        raise ReviewStorageError(f"applying the review of {record['output_uri']}: {e}",
                                 tracks) from e
    except Exception as e:  # reported by the flow; the other clips go on
        error = f"{type(e).__name__}: {e}"
    return {"tracks": tracks, "review": review, "review_error": error}


def write_tracks_uri(out_uri: str, recipe: Recipe, summaries, records, key: str) -> str:
    out = _out(out_uri, recipe)
    return out.url(write_tracks(out, summaries, records, key))
