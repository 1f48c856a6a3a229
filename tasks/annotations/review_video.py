"""One review video per recording: its converted clips joined in order, frame-exact, in parts
of at most ``review.recording_video.max_part_bytes``, with a map from every frame of every
part back to its clip and frame.

People who label activities over hours (time spans) want the recording, not 30 separate
10-minute clips. The WebMs are joined by remuxing their packets, never re-encoding: every
frame is the clip's own frame, bit for bit, and nothing is dropped or repeated. A part's
timestamps are the recording's clock from the part's first frame (the same times
`tasks.annotations.spans` gives the clips' frames), so a gap inside a VFR clip or between
clips stays a gap. A part starts at a clip's first frame or at a keyframe inside a clip
(each clip's WebM begins with one), whichever keeps it under the cap; one group of pictures
larger than the cap makes a part alone.

Written to ``OUT/review_video/``: ``<recording>.part-NNN.webm``, ``<recording>.frames.parquet``
(one row per frame of the recording; `tasks.annotations.review_frames` reads it back) and
``<recording>.json`` (the parts, the nominal frame rate a tool shows, and the signature of the
clips it was made from: an unchanged recording is not joined again). Each part is checked by
demuxing it again: its frames and timestamps must be those the map lists, or the description
is not written and the video is not used. Audio is left out: the parts are for looking at,
and an audio track would have gaps at clip joins.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

import av
import numpy as np
import pyarrow as pa

from tasks.annotations.review_frames import (FORMAT_VERSION, FRAME_MAP_SCHEMA, VIDEO_DIR,
                                             part_name, paths, read_info, recording_micros)
from tasks.errors import MediaReadError, SpanError
from tasks.media.frames import Timeline
from tasks.media.webm import open_webm_container, webm_path
from tasks.store.record import ClipRecord
from tasks.store.storage import (Location, commit_file, size_of, write_bytes_atomic)
from tasks.store.tables import write_table

_MS = Fraction(1, 1000)  # WebM's clock
_FRAME_OVERHEAD, _HEAD_OVERHEAD = 32, 4096  # bytes a part adds to its packets
_US = 1_000_000


def build(out: Location, records: Sequence[ClipRecord], max_part_bytes: int) -> dict[str, Any]:
    """The review video of one recording's converted ``records`` (in any order), unless the
    one in OUT was made from the same WebMs with the same cap. Returns its description."""
    clips = sorted(records, key=lambda r: r.clip_index)
    if not clips:
        raise ValueError("no converted clip to join")
    recording = clips[0].recording
    signature = _signature(clips, max_part_bytes)
    map_path, info_path = paths(out, recording)
    kept = read_info(out, recording)
    if kept and kept.get("signature") == signature and size_of(out, map_path) and all(
            size_of(out, out.path(VIDEO_DIR, p["file"])) == p["bytes"] for p in kept["parts"]):
        _remove_stale_parts(out, recording, len(kept["parts"]))
        return {**kept, "made": False}
    if out.fs.exists(info_path):  # parts are replaced one by one: the old map no longer holds
        out.fs.rm(info_path)
    joiner = _Joiner(out, recording, max_part_bytes)
    try:
        for record in clips:
            joiner.add_clip(record)
        parts, table = joiner.finish()
    finally:
        joiner.discard()
    write_table(out, map_path, table)  # the map first: parts without it are never read
    info = {"version": FORMAT_VERSION, "recording": recording, "signature": signature,
            "fps": str(_nominal_rate(clips)), "max_part_bytes": max_part_bytes,
            "frames": table.num_rows, "clips": len(clips), "parts": parts}
    write_bytes_atomic(out, info_path, json.dumps(info, indent=1).encode())
    _remove_stale_parts(out, recording, len(parts))
    return {**info, "made": True}


def build_all(out_uri: str, recipe, recordings: Sequence[str] | None = None
              ) -> dict[str, Any]:
    """The review video of every recording of OUT with a converted clip (or of those named).
    Returns ``{"videos": [description, ...], "skipped": [{recording, reason}]}``."""
    from tasks.store.items import ITEMS_FILE, is_converted, read_records
    from tasks.store.storage import open_location

    out = open_location(out_uri, recipe.storage)
    records = read_records(out)
    if not records:
        raise SpanError(f"{out.url(out.path(ITEMS_FILE))} not found: convert the dataset first")
    by_recording: dict[str, list[ClipRecord]] = {}
    for record in records:
        by_recording.setdefault(record.recording, []).append(record)
    unknown = sorted(set(recordings or ()) - set(by_recording))
    if unknown:
        raise SpanError(f"no recording {', '.join(map(repr, unknown))} in {out_uri} (known: "
                        f"{', '.join(sorted(by_recording)[:20])})")
    videos, skipped = [], []
    for recording in recordings or sorted(by_recording):
        clips = [r for r in by_recording[recording] if is_converted(r)]
        if not clips:
            skipped.append({"recording": recording, "reason": "no converted clip"})
            continue
        left_out = len(by_recording[recording]) - len(clips)
        info = build(out, clips, recipe.review.recording_video.max_part_bytes)
        videos.append({**info, "clips_left_out": left_out})
    return {"videos": videos, "skipped": skipped}


def _signature(clips: Sequence[ClipRecord], max_part_bytes: int) -> str:
    key = [FORMAT_VERSION, max_part_bytes] + [
        [r.clip_index, r.output_uri, r.output_digest, r.output_frames, r.recording_start_s]
        for r in clips]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]


def _nominal_rate(clips: Sequence[ClipRecord]) -> Fraction:
    """The rate a tool steps frames at: the first clip's declared rate (VFR: its average)."""
    for value in (clips[0].fps, clips[0].real_fps, clips[0].output_fps_measured):
        try:
            rate = Fraction(value) if value else None
        except (ValueError, ZeroDivisionError):
            rate = None
        if rate and rate > 0:
            # An average rate can be 2000000000/66733333: the nearest rate a person would
            # name (29.97 is 30000/1001) keeps frame slots exact and small
            return rate.limit_denominator(1001)
    return Fraction(25)


def _remove_stale_parts(out: Location, recording: str, parts: int) -> None:
    """Parts of an earlier join with more parts than this one."""
    n = parts + 1
    while out.fs.exists(path := out.path(VIDEO_DIR, f"{part_name(recording, n)}.webm")):
        out.fs.rm(path)
        n += 1


@dataclass
class _Open:
    """The part being written: a local temp WebM."""

    number: int
    path: str
    container: Any
    stream: Any
    geometry: tuple
    first_us: int
    bytes: int = 0
    frames: int = 0
    last_ms: int = -1


class _Joiner:
    """Packets of the clips in order -> parts, a group of pictures at a time."""

    def __init__(self, out: Location, recording: str, max_part_bytes: int):
        self.out, self.recording, self.cap = out, recording, max_part_bytes
        self.part: _Open | None = None
        self.parts: list[dict[str, Any]] = []
        self.rows: list[tuple[np.ndarray, ...]] = []  # the map's columns, a group at a time
        self.last_us = -1  # the recording time of the last frame joined
        self.tmp = tempfile.mkdtemp(prefix="review-video-")

    def add_clip(self, record: ClipRecord) -> None:
        path = webm_path(self.out, record)
        with open_webm_container(self.out, path) as container:
            stream = container.streams.video[0]
            timeline = Timeline.from_stream(container, stream)
            if record.output_frames is not None and len(timeline) != record.output_frames:
                raise MediaReadError(f"{self.out.url(path)}: {len(timeline)} frames, the parity "
                                     f"proof counted {record.output_frames}; convert it again")
            at_us = recording_micros(record, timeline)
            container.seek(0, stream=stream)
            cc = stream.codec_context
            geometry = (cc.name, cc.width, cc.height, cc.pix_fmt, bytes(cc.extradata or b""))
            if at_us[0] <= self.last_us:
                raise MediaReadError(
                    f"{record.recording} clip {record.clip_index} starts at {at_us[0] / _US} s "
                    f"of the recording, not after the previous clip's last frame "
                    f"({self.last_us / _US} s): its recording_start_s is wrong (a clip "
                    "before it without a duration?); convert the recording again")
            group: list = []
            joined = 0
            for packet in container.demux(stream):
                if packet.pts is None or packet.is_discard:  # as `frame_timeline` counts
                    continue
                if packet.is_keyframe and group:
                    joined += self._add_group(group, stream, geometry, timeline, at_us, record)
                    group = []
                group.append(packet)
            if group:
                joined += self._add_group(group, stream, geometry, timeline, at_us, record)
            if joined != len(timeline):
                raise MediaReadError(f"{self.out.url(path)}: {joined} frames joined of "
                                     f"{len(timeline)}; the review video was not made")
            self.last_us = int(at_us[-1])

    def _add_group(self, packets: list, stream, geometry: tuple, timeline: Timeline,
                   at_us: np.ndarray, record: ClipRecord) -> int:
        frames = np.searchsorted(timeline.pts, [p.pts for p in packets])
        # The packets, and the container's share: ~32 bytes a frame (block headers, cues)
        # and the headers; a part's file stays under the cap but for a GOP alone over it.
        size = sum(p.size for p in packets) + _FRAME_OVERHEAD * len(packets)
        part = self.part
        if part is not None and (part.geometry != geometry or (
                part.frames and _HEAD_OVERHEAD + part.bytes + size > self.cap)):
            self._close()  # a new part at this keyframe (or a clip of another size)
            part = None
        if part is None:
            if not packets[0].is_keyframe:
                raise MediaReadError(f"{record.output_uri}: does not start with a keyframe")
            part = self._open(stream, geometry, int(at_us[frames[0]]))
        ms = np.rint((at_us[frames] - part.first_us) / 1000).astype(np.int64)
        for i, packet in enumerate(packets):
            ms[i] = max(int(ms[i]), part.last_ms + 1)  # a sub-ms VFR step never repeats one
            packet.stream = part.stream
            packet.time_base = _MS
            packet.pts = packet.dts = int(ms[i])
            part.container.mux(packet)
            part.last_ms = int(ms[i])
        n = len(packets)
        # Columns per group of pictures (int64 arrays): a 5-hour recording's map is ~30 MB.
        self.rows.append((np.full(n, part.number), np.arange(part.frames, part.frames + n), ms,
                          at_us[frames], np.full(n, record.clip_index), frames,
                          frames + int(record.global_first_frame or 0)))
        part.frames += n
        part.bytes += size
        return n

    def _open(self, template, geometry: tuple, first_us: int) -> _Open:
        number = len(self.parts) + 1
        path = os.path.join(self.tmp, f"{part_name(self.recording, number)}.webm")
        # bitexact: no random segment UIDs, so a rerun writes the very same bytes
        container = av.open(path, "w", format="webm", options={"fflags": "+bitexact"})
        try:
            stream = container.add_stream_from_template(template)
            stream.time_base = _MS
        except BaseException:
            container.close()
            raise
        self.part = _Open(number, path, container, stream, geometry, first_us)
        return self.part

    def _close(self) -> None:
        part, self.part = self.part, None
        part.container.close()
        self._check(part)
        name = part_name(self.recording, part.number)
        target = self.out.path(VIDEO_DIR, f"{name}.webm")
        size = os.path.getsize(part.path)
        commit_file(self.out, part.path, target)
        self.parts.append({"part": part.number, "name": name, "file": f"{name}.webm",
                           "uri": self.out.url(target), "frames": part.frames, "bytes": size,
                           "recording_start_s": part.first_us / 1e6,
                           "width": part.geometry[1], "height": part.geometry[2]})

    def _check(self, part: _Open) -> None:
        """The written part, demuxed again, holds the frames and timestamps the map lists."""
        wrote = np.concatenate([r[2] for r in self.rows if r[0][0] == part.number])
        with av.open(part.path) as container:
            stream = container.streams.video[0]
            read = Timeline.from_stream(container, stream)
        got = np.rint(read.pts.astype(np.float64) * float(read.time_base / _MS)).astype(np.int64)
        if not np.array_equal(got, wrote):
            raise MediaReadError(f"review video of {self.recording!r} part {part.number}: "
                                 f"demuxing it gives {len(got)} frames, {len(wrote)} were "
                                 "written; the review video was not made")

    def finish(self) -> tuple[list[dict[str, Any]], pa.Table]:
        if self.part is not None:
            self._close()
        part, part_frame, ms, us, clip, frame, global_frame = (
            np.concatenate(c).astype(np.int64) for c in zip(*self.rows))
        table = pa.table({"part": part.astype(np.int32), "part_frame": part_frame,
                          "part_time_s": ms / 1000, "recording_time_s": us / 1e6,
                          "clip_index": clip.astype(np.int32), "frame": frame,
                          "global_frame": global_frame}, schema=FRAME_MAP_SCHEMA)
        return self.parts, table

    def discard(self) -> None:
        try:
            if self.part is not None:
                self.part, part = None, self.part
                part.container.close()
        except av.error.FFmpegError:
            pass  # a part abandoned after an error: the error that stopped the join matters
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

__all__ = ["build", "build_all"]
