"""A clip's record: what ingest or conversion found, typed. One per clip and run.

It is the clip's row of the items table (`tasks.store.items`) and, as JSON, its state record
(``OUT/_state/clips/<id>.json``). Fields are declared once, here, with their Arrow type and
meaning: the table's schema and the README's schema section are made from them. Every field
may be None (a blocked clip has no WebM; an ingested one no parity). Frozen: a stage that
changes a record makes a new one (`replace`), so a record handed to a task stays as it was.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

import pyarrow as pa


def _column(kind: pa.DataType | None, meaning: str) -> Any:
    return field(default=None, metadata={"arrow": kind, "meaning": meaning})


@dataclass(frozen=True, slots=True, kw_only=True)
class ClipRecord:
    """One clip's record; ``status`` is what this run did with it (``skipped`` included),
    the items table's ``status`` is the clip's state (`tasks.store.items.clip_state`)."""

    source_uri: str | None = _column(
        pa.string(),
        'URL of the source clip (credentials never included)')
    recording: str | None = _column(
        pa.string(),
        "recording name: the clip's folder relative to the dataset URI")
    clip_name: str | None = _column(pa.string(), 'file name of the clip')
    clip_index: int | None = _column(
        pa.int32(),
        '0-based position of the clip in its recording (natural order)')
    status: str | None = _column(
        pa.string(),
        "the clip's state: ingested, converted, blocked or failed (a storage fault or a bug, "
        'not a verdict: redone on the next run); the same after any rerun')
    last_run: str | None = _column(
        pa.string(),
        'what the last run did with the clip: ingested, converted, blocked, failed or skipped '
        '(unchanged since an earlier run, outputs kept)')
    reason: str | None = _column(
        pa.string(),
        'reason code when blocked (e.g. truncated, decode_error)')
    detail: str | None = _column(pa.string(), 'one sentence explaining the status for people')
    fingerprint: str | None = _column(
        pa.string(),
        "BLAKE2b-128 of the clip's bytes, computed while it is read")
    source_size: int | None = _column(pa.int64(), 'bytes')
    source_version: str | None = _column(
        pa.string(),
        "the store's version token (ETag, generation or mtime)")
    frame_count: int | None = _column(pa.int64(), 'presented video frames, counted by demuxing')
    header_frame_count: int | None = _column(
        pa.int64(),
        'frame count the header claims (recorded, not trusted)')
    discarded_frames: int | None = _column(
        pa.int64(),
        'packets an edit list hides (decoded for reference, never shown)')
    global_first_frame: int | None = _column(
        pa.int64(),
        "index of the clip's first frame within its recording")
    recording_start_s: float | None = _column(
        pa.float64(),
        'start time of the clip within its recording (s)')
    fps: str | None = _column(
        pa.string(),
        'average frame rate from the header, as a fraction (e.g. 30000/1001)')
    real_fps: str | None = _column(
        pa.string(),
        'real base frame rate (r_frame_rate), as a fraction')
    measured_fps: str | None = _column(
        pa.string(),
        'rate measured from decoded timestamps, as a fraction')
    vfr: bool | None = _column(pa.bool_(), 'true when frame intervals differ (variable frame rate)')
    time_base: str | None = _column(pa.string(), 'video stream time base, as a fraction')
    start_time_s: float | None = _column(
        pa.float64(),
        'first presentation time of the video stream (s)')
    duration_s: float | None = _column(
        pa.float64(),
        'video duration from the first to past the last frame (s)')
    width: int | None = _column(
        pa.int32(),
        'display width a person sees (rotation and pixel aspect applied)')
    height: int | None = _column(pa.int32(), 'display height a person sees')
    stored_width: int | None = _column(pa.int32(), 'coded width')
    stored_height: int | None = _column(pa.int32(), 'coded height')
    sar: str | None = _column(pa.string(), 'sample (pixel) aspect ratio, as a fraction')
    rotation: int | None = _column(
        pa.int16(),
        'clockwise rotation a player applies (0, 90, 180, 270)')
    container: str | None = _column(pa.string(), 'container format')
    video_codec: str | None = _column(pa.string(), 'video codec')
    pix_fmt: str | None = _column(pa.string(), 'source pixel format')
    bit_depth: int | None = _column(pa.int16(), 'bits per sample')
    chroma: str | None = _column(pa.string(), 'chroma subsampling: 420, 422, 444 or rgb')
    video_streams: int | None = _column(pa.int16(), 'video streams (attached pictures excluded)')
    video_stream_index: int | None = _column(pa.int16(), 'index of the video stream used')
    audio_streams: int | None = _column(pa.int16(), 'audio streams')
    audio_codec: str | None = _column(pa.string(), 'codec of the first audio stream')
    audio_sample_rate: int | None = _column(pa.int32(), 'Hz')
    audio_channels: int | None = _column(pa.int16(), 'channels')
    output_uri: str | None = _column(pa.string(), 'URL of the WebM (converted or skipped clips)')
    output_codec: str | None = _column(pa.string(), 'vp9 or vp8')
    output_width: int | None = _column(pa.int32(), 'WebM width')
    output_height: int | None = _column(pa.int32(), 'WebM height')
    output_bytes: int | None = _column(pa.int64(), 'WebM size')
    output_digest: str | None = _column(pa.string(), "BLAKE2b-128 of the WebM's bytes as written")
    convert_key: str | None = _column(
        pa.string(),
        'hash of the recipe settings the WebM was made with')
    parity_ok: bool | None = _column(pa.bool_(), 'true when every parity check passed')
    output_frames: int | None = _column(pa.int64(), 'frames decoded from the WebM')
    timestamp_max_error_ms: float | None = _column(
        pa.float64(),
        'largest |WebM - source| frame timestamp (ms)')
    output_fps_measured: str | None = _column(
        pa.string(),
        "rate measured from the WebM's timestamps")
    output_duration_s: float | None = _column(pa.float64(), 'WebM video duration (s)')
    content_mean_diff: float | None = _column(
        pa.float64(),
        'mean luma difference of frame signatures (0-255)')
    content_worst_diff: float | None = _column(
        pa.float64(),
        'largest per-frame signature difference')
    content_worst_frame: int | None = _column(pa.int64(), 'frame where the largest difference is')
    encode_seconds: float | None = _column(
        pa.float64(),
        'wall time of the transcode (varies run to run)')
    parity_seconds: float | None = _column(
        pa.float64(),
        'wall time the proof took after the encode ended (it decodes alongside the encoder; '
        'varies run to run)')
    output_version: str | None = _column(
        None, "the store's version token of the WebM as written (state record only)")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClipRecord:
        """The record of a state file or table row; keys it does not know are dropped (a
        record an older version wrote still reads), missing ones are None."""
        return cls(**{name: data[name] for name in FIELD_NAMES if name in data})

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELD_NAMES}

    def replace(self, **changes: Any) -> ClipRecord:
        return dataclasses.replace(self, **changes)

    @property
    def converted(self) -> bool:
        """Whether the clip has a WebM proven frame-exact (converted by this run or before)."""
        return bool(self.output_uri and self.parity_ok and self.status in ("converted", "skipped"))

    @property
    def label(self) -> str:
        """``recording/clip name`` for people (the clip name alone at the top level)."""
        return f"{self.recording}/{self.clip_name}" if self.recording else f"{self.clip_name}"


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ClipRecord))

# Name, Arrow type, meaning of each items-table column (the fields a table row has).
COLUMNS: list[tuple[str, pa.DataType, str]] = [
    (f.name, f.metadata["arrow"], f.metadata["meaning"]) for f in dataclasses.fields(ClipRecord)
    if f.metadata["arrow"] is not None]
