"""A recording's review video, read back: where its files are, its frame map
(`FRAME_MAP_COLUMNS`), and what a tool's frame range or time on one of its parts is in the
recording (`ReviewVideos`, `PartFrames`). `tasks.annotations.review_video` makes it."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import cached_property
from fractions import Fraction
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 (pa.compute)

from tasks.errors import SpanError
from tasks.media.frames import Timeline
from tasks.store.record import ClipRecord
from tasks.store.storage import Location, read_bytes, safe_component
from tasks.store.tables import Columns, read_table, schema

VIDEO_DIR = "review_video"
FORMAT_VERSION = 1

FRAME_MAP_COLUMNS: Columns = [
    ("part", pa.int32(), "1-based part of the recording's review video"),
    ("part_frame", pa.int64(), "0-based frame within the part"),
    ("part_time_s", pa.float64(), "the frame's timestamp in the part (s; ms grid, as WebM)"),
    ("recording_time_s", pa.float64(), "the frame's time in the recording (s, 1 us grid; as "
     "frame_labels.parquet)"),
    ("clip_index", pa.int32(), "0-based position of the clip in its recording"),
    ("frame", pa.int64(), "0-based frame index within the clip's WebM"),
    ("global_frame", pa.int64(), "frame index within the recording"),
]
FRAME_MAP_SCHEMA = schema(FRAME_MAP_COLUMNS)
_US = 1_000_000


def recording_micros(record: ClipRecord, timeline: Timeline) -> np.ndarray:
    """Each frame's time in the recording, in whole microseconds."""
    start = record.recording_start_s
    if start is None:
        raise ValueError(f"{record.recording} clip {record.clip_index}: no "
                         f"recording_start_s (items rows get it from assign_timeline)")
    tb = timeline.time_base
    ticks = (timeline.pts - timeline.pts[0]).astype(np.float64)
    return int(round(start * _US)) + np.rint(ticks * (tb.numerator * _US / tb.denominator)
                                             ).astype(np.int64)


def part_name(recording: str, part: int) -> str:
    return f"{safe_component(recording)}.part-{part:03d}"


def paths(out: Location, recording: str) -> tuple[str, str]:
    base = safe_component(recording)
    return out.path(VIDEO_DIR, f"{base}.frames.parquet"), out.path(VIDEO_DIR, f"{base}.json")



def read_info(out: Location, recording: str) -> dict[str, Any] | None:
    """A recording's review video description; None if missing, unreadable or older."""
    return read_info_file(out, paths(out, recording)[1])


def read_info_file(out: Location, path: str) -> dict[str, Any] | None:
    data = read_bytes(out, path)
    try:
        info = json.loads(data) if data else None
    except ValueError:
        return None
    return info if isinstance(info, dict) and info.get("version") == FORMAT_VERSION else None


def read_frame_map(out: Location, recording: str, part: int | None = None) -> pa.Table | None:
    """The recording's frame map (`FRAME_MAP_COLUMNS`), or one part's rows; None if none."""
    table = read_table(out, paths(out, recording)[0])
    if table is None or part is None:
        return table
    return table.filter(pa.compute.equal(table["part"], part))


def frame_slots(part_us: np.ndarray, fps: Fraction) -> np.ndarray:
    """Each frame's 1-based slot at ``fps`` in a tool's frame numbering: the nearest,
    ``round(t x fps) + 1`` (halves up), in exact integer arithmetic."""
    num, den = fps.numerator, fps.denominator * _US
    return (np.asarray(part_us, dtype=np.int64) * (2 * num) + den) // (2 * den) + 1


@dataclass(frozen=True)
class PartFrames:
    """The frames of one part: their times in the part and in the recording (whole
    microseconds, the grid `tasks.annotations.spans` compares on) and the tool's frame rate."""

    recording: str
    part: int
    fps: Fraction
    part_us: np.ndarray
    recording_us: np.ndarray
    next_us: int  # the recording time just after the part's last frame

    def frames_in_range(self, first: int, last: int) -> tuple[int, int]:
        """Frames ``[i, j)`` a tool's 1-based inclusive frame range ``[first, last]`` at
        ``fps`` covers: those whose nearest frame slot ``round(t x fps) + 1`` is in it, so a
        timestamp rounded to WebM's milliseconds still lands in its own slot."""
        return (int(np.searchsorted(self.slots, first, "left")),
                int(np.searchsorted(self.slots, last, "right")))

    @cached_property
    def slots(self) -> np.ndarray:
        """Each frame's slot at ``fps`` (`frame_slots`), made once for all ranges."""
        return frame_slots(self.part_us, self.fps)

    def recording_span(self, i: int, j: int) -> tuple[float, float] | None:
        """Recording times ``[start, end)`` holding exactly frames ``[i, j)``; None if empty."""
        if j <= i:
            return None
        end = self.recording_us[j] if j < len(self.recording_us) else self.next_us
        return self.recording_us[i] / 1e6, end / 1e6

    def gap_span(self, i: int, start_s: float, end_s: float) -> tuple[float, float]:
        """A range that holds no frame, before frame ``i`` (0 < i < frames): its times in
        the part as recording times, kept inside the gap, so that it labels no frame."""
        lo, hi = int(self.recording_us[i - 1]) + 1, int(self.recording_us[i])
        start = min(max(round(self.recording_time(start_s) * _US), lo), hi - 1)
        end = min(max(round(self.recording_time(end_s) * _US), start + 1), hi)
        return start / _US, end / _US

    def recording_time(self, seconds: float) -> float:
        """A time in the part -> the recording's time: from the frame shown then, never
        past the part's end (after it is the next part's time)."""
        t = int(round(seconds * _US))
        k = max(int(np.searchsorted(self.part_us, t, "right")) - 1, 0)
        at = int(self.recording_us[k]) + t - int(self.part_us[k])
        return min(max(at, int(self.recording_us[0])), self.next_us) / _US


class ReviewVideos:
    """The review videos of an OUT, found by part name (``<recording>.part-NNN``, as a tool
    shows the file); a recording's map is read when one of its parts is first asked for."""

    def __init__(self, out: Location):
        self.out = out
        self._parts: dict[str, PartFrames] = {}
        self._read: set[str] = set()

    def part(self, name: str, where: str) -> PartFrames:
        stem = name.rpartition(".part-")[0]
        if stem and stem not in self._read:
            self._read.add(stem)
            self._parts.update(self._load(stem))
        found = self._parts.get(name)
        if found is None:
            raise SpanError(f"{where}: review video {name!r} is not in "
                            f"{self.out.url(self.out.path(VIDEO_DIR))}: make it again "
                            "(`preannotate review video`) or give the spans file with the "
                            "OUT it was made in")
        return found

    def _load(self, stem: str) -> dict[str, PartFrames]:
        info = read_info_file(self.out, self.out.path(VIDEO_DIR, f"{stem}.json"))
        if info is None:
            return {}
        table = read_table(self.out, paths(self.out, info["recording"])[0])
        if table is None:
            return {}
        part = table["part"].to_numpy()
        part_us = np.rint(table["part_time_s"].to_numpy() * _US).astype(np.int64)
        rec_us = np.rint(table["recording_time_s"].to_numpy() * _US).astype(np.int64)
        fps = Fraction(info["fps"])
        step = int(round(_US / fps))
        found = {}
        for p in info["parts"]:
            mine = np.flatnonzero(part == p["part"])
            after = mine[-1] + 1
            next_us = int(rec_us[after]) if after < len(rec_us) else int(rec_us[-1]) + step
            found[p["name"]] = PartFrames(info["recording"], p["part"], fps, part_us[mine],
                                          rec_us[mine], next_us)
        return found


def part_of_media(media: str) -> str | None:
    """A review video part's name from a media path or URL (``cam.part-002.webm``)."""
    from urllib.parse import parse_qs, unquote, urlparse

    parsed = urlparse(media)
    path = unquote(parse_qs(parsed.query).get("d", [parsed.path])[0])
    name = os.path.basename(path)
    if "/upload/" in path and re.fullmatch(r"[0-9a-f]{8}-.+", name):
        name = name[9:]  # Label Studio keeps an upload under an 8-character prefix
    stem = name[:-len(".webm")] if name.endswith(".webm") else None
    if not stem:
        return None
    head, dash, digits = stem.rpartition(".part-")
    if dash and head and len(digits) == 3 and digits.isdigit():
        return stem
    return None

__all__ = ["VIDEO_DIR", "FORMAT_VERSION", "FRAME_MAP_COLUMNS", "FRAME_MAP_SCHEMA",
           "recording_micros", "part_name", "paths", "read_info", "read_info_file",
           "read_frame_map", "frame_slots", "PartFrames", "ReviewVideos", "part_of_media"]
