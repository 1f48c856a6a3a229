"""Step 2 of tracking a clip: one object, chunk after chunk (`run_object`).

Each chunk advances up to ``frames_per_execution`` frames and persists its rows and end
state (frame reached, last box, score, active/lost) as one small atomic file; at a keyframe
the tracker restarts on it. Within a run the tracker's model lives on across chunk
boundaries, so chunking costs nothing in accuracy. OpenCV trackers cannot be saved, so a
resumed run rebuilds the model by replaying the object from its last keyframe to the chunk
(`_rebuild`); trackers are deterministic, so the replay lands on the persisted box and the
resumed run's boxes are identical to an uninterrupted one's. A score below ``lost_score``
(or the tracker losing the box) hides the object until its next keyframe; after its last
keyframe a lost object ends, and the tracker carries it at most ``carry_frames``. When the
object is finished its chunk files are merged into one table and removed.

Within a run one decoder reads the object's frames in order (chunk boundaries do not
seek); a resumed run seeks once, to the object's last keyframe (`tasks.media.frames`).
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models import registry
from tasks.store.record import ClipRecord
from tasks import progress
from tasks.media.webm import open_webm
from tasks.errors import PipelineError
from tasks.media.frames import FrameReader
from tasks.recipe import Recipe
from tasks.detect.shots import next_cut
from tasks.store.storage import Location, write_bytes_atomic
from tasks.convert.geometry import fit_within
from tasks.store.tables import read_state_json, read_state_table, readable_parquet, write_table
from tasks.track.state import _OBJECT_SCHEMA, _load_timeline, clip_dir

from tasks.track import driver

log = logging.getLogger(__name__)


@dataclass
class _End:
    """What a chunk leaves for the next: the only state carried across a chunk boundary."""

    status: str                 # active | lost | ended
    box: list[float] | None     # last box the object had (WebM pixels)
    frame: int | None           # frame of that box's row

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "box": self.box, "frame": self.frame}


def run_object(record: ClipRecord, out: Location, recipe: Recipe, key: str,
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
        raise PipelineError(f"object {track_id} is not in the plan of {record.output_uri}")
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
            progress.meter("track", record.source_uri, None) as meter:
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
        raise PipelineError(f"object {track_id} of {record.output_uri}: its chunk files "
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
    return driver.start(tracker, image, box, reference)


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
        state, found, score = driver.advance(tracker, state, image)
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

    def __init__(self, record: ClipRecord, max_side: int | None):
        self.size = (int(record.output_width), int(record.output_height))
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
