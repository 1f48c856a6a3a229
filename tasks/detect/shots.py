"""Shot cuts, found while the detect stage decodes a clip, with PySceneDetect's detectors.

PySceneDetect (BSD-3) is fed the frames we decode (small BGR copies), never a file: its own
readers would decode the clip a second time and number frames their own way. We take
0.6.6, the last release whose OpenCV is an optional extra (0.7 requires ``opencv-python``,
which clashes with our ``opencv-contrib-python-headless``; the detectors only need ``cv2``).

A shot is a run of frames between cuts: ``first`` and ``last`` frame (0-based, inclusive)
and the decoded times of both. A track ends at a cut and association never links across one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from tasks.store.record import ClipRecord
from tasks.recipe import ShotsConfig
from tasks.store.storage import Location, read_bytes, write_bytes_atomic
from tasks.store.tables import SHOT_SCHEMA, concat, read_table, write_table_if_changed

ANALYSIS_SIDE = 320  # frames are shrunk to this longer side for cut and motion analysis
SHOTS_FILE = "shots.parquet"
SUGGESTIONS_FILE = ("exports", "spans", "shots.csv")  # span suggestions, one row per shot


class CutFinder:
    """Feed every decoded frame in order; ``shots()`` then lists the clip's shots."""

    def __init__(self, config: ShotsConfig):
        from scenedetect.detectors import AdaptiveDetector, ContentDetector

        self._times: list[float] = []
        self._cuts: list[int] = []
        if config.detector == "adaptive":
            extra = {} if config.threshold is None else {"adaptive_threshold": config.threshold}
            self._detector = AdaptiveDetector(min_scene_len=config.min_frames, **extra)
        else:
            extra = {} if config.threshold is None else {"threshold": config.threshold}
            self._detector = ContentDetector(min_scene_len=config.min_frames, **extra)

    def feed(self, index: int, seconds: float, bgr: np.ndarray) -> None:
        if index != len(self._times):
            raise ValueError(f"frames must come in order: got {index}, expected {len(self._times)}")
        self._times.append(seconds)
        self._cuts += self._detector.process_frame(index, bgr)

    def shots(self) -> list[dict[str, Any]]:
        frames = len(self._times)
        if not frames:
            return []
        cuts = self._cuts + list(self._detector.post_process(frames - 1) or [])
        starts = [0] + sorted({int(c) for c in cuts if 0 < int(c) < frames})
        ends = starts[1:] + [frames]
        return [{"first": s, "last": e - 1, "start_s": self._times[s], "last_s": self._times[e - 1]}
                for s, e in zip(starts, ends)]


def cuts_of(shots: list[dict[str, Any]]) -> list[int]:
    """First frames of every shot but the first: where tracks must end."""
    return [int(s["first"]) for s in shots[1:]]


def next_cut(cuts: list[int], frame: int) -> int | None:
    """The first cut after ``frame``, or None."""
    later = [c for c in cuts if c > frame]
    return min(later) if later else None


def shots_table(record: ClipRecord, shots: list[dict[str, Any]]) -> pa.Table:
    """The clip's rows of ``shots.parquet``."""
    n = len(shots)
    first = np.array([s["first"] for s in shots], np.int64)
    last = np.array([s["last"] for s in shots], np.int64)
    offset = int(record.global_first_frame or 0)
    clip_start = float(record.recording_start_s or 0.0)
    webm_start = shots[0]["start_s"] if shots else 0.0
    start = np.array([s["start_s"] for s in shots], np.float64)
    return pa.table({
        "recording": pa.array([record.recording] * n, pa.string()),
        "clip_index": pa.array(np.full(n, record.clip_index, np.int32)),
        "shot": pa.array(np.arange(n, dtype=np.int32)),
        "first_frame": first, "last_frame": last,
        "global_first_frame": first + offset, "global_last_frame": last + offset,
        "start_s": start, "last_s": np.array([s["last_s"] for s in shots], np.float64),
        "recording_start_s": clip_start + (start - webm_start),
        "cut": pa.array([i > 0 for i in range(n)], pa.bool_()),
    }, schema=SHOT_SCHEMA)


def write_shots(out: Location, summaries: list[dict[str, Any]], records: list[ClipRecord]) -> str:
    """``OUT/shots.parquet``: the shots of every listed clip (detect summaries carry them),
    in recording order."""
    by_clip = {(r.recording, r.clip_index): r for r in records}
    tables = [shots_table(by_clip[(s["recording"], s["clip_index"])], s["shots"])
              for s in sorted(summaries, key=lambda s: (s["recording"], s["clip_index"]))
              if s.get("shots")]
    path = out.path(SHOTS_FILE)
    table = concat(tables, SHOT_SCHEMA)
    write_table_if_changed(out, path, table)
    suggestions, where = span_suggestions(table, by_clip), out.path(*SUGGESTIONS_FILE)
    if read_bytes(out, where) != suggestions:  # exports are not rewritten when unchanged
        write_bytes_atomic(out, where, suggestions)
    return path


def span_suggestions(shots: pa.Table, records: dict[tuple[str, int], ClipRecord]) -> bytes:
    """Every shot as a row of a spans file (recording, start_s, end_s, label, note), with
    the label left for a person: one shot is often one activity. A shot ends where the next
    one starts, the clip's last where the clip ends (recording time, s)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["recording", "start_s", "end_s", "label", "note"])
    rows = shots.to_pylist()
    for i, row in enumerate(rows):
        nxt = rows[i + 1] if i + 1 < len(rows) else None
        if nxt is not None and (nxt["recording"], nxt["clip_index"]) == (row["recording"], row["clip_index"]):
            end = nxt["recording_start_s"]
        else:
            record = records[(row["recording"], row["clip_index"])]
            end = float(record.recording_start_s or 0.0) + float(
                record.output_duration_s or (row["last_s"] - row["start_s"]))
        writer.writerow([row["recording"], f"{row['recording_start_s']:.6f}", f"{end:.6f}", "",
                         f"clip {row['clip_index']} shot {row['shot']}: frames "
                         f"{row['first_frame']}-{row['last_frame']}"])
    return buffer.getvalue().encode()


def clip_cuts(out: Location, record: ClipRecord) -> list[int]:
    """The clip's cut frames, from ``OUT/shots.parquet`` (none when it is not there)."""
    import pyarrow.compute as pc

    table = read_table(out, out.path(SHOTS_FILE))
    if table is None:
        return []
    mine = table.filter(pc.and_(pc.and_(pc.equal(table["recording"], record.recording),
                                        pc.equal(table["clip_index"], record.clip_index)),
                                table["cut"]))
    return sorted(mine["first_frame"].to_pylist())
