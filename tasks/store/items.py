"""The items table (`OUT/items.parquet`): one row per clip, and the per-clip state records.

Each finished clip writes a small JSON record atomically to ``OUT/_state/clips/<id>.json``;
the table is rebuilt from the records of the clips listed in this run. So a run killed at
any moment loses at most the clip in flight, a rerun skips what was recorded, and the
table never holds duplicate rows.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.store.storage import Location, read_bytes, write_bytes_atomic
from tasks.store.tables import read_state_table, write_table_if_changed

STATE_DIR = "_state/clips"
ITEMS_FILE = "items.parquet"
IGNORED_FILE = "ignored.parquet"
IGNORED_SCHEMA = pa.schema([("source_uri", pa.string()), ("source_size", pa.int64()),
                           ("reason", pa.string())])

# Column, type, description. The README's schema section is generated from this list.
COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("source_uri", pa.string(), "URL of the source clip (credentials never included)"),
    ("recording", pa.string(), "recording name: the clip's folder relative to the dataset URI"),
    ("clip_name", pa.string(), "file name of the clip"),
    ("clip_index", pa.int32(), "0-based position of the clip in its recording (natural order)"),
    ("status", pa.string(), "the clip's state: ingested, converted, blocked or failed (a storage "
     "fault or a bug, not a verdict: redone on the next run); the same after any rerun"),
    ("last_run", pa.string(), "what the last run did with the clip: ingested, converted, "
     "blocked, failed or skipped (unchanged since an earlier run, outputs kept)"),
    ("reason", pa.string(), "reason code when blocked (e.g. truncated, decode_error)"),
    ("detail", pa.string(), "one sentence explaining the status for people"),
    ("fingerprint", pa.string(), "BLAKE2b-128 of the clip's bytes, computed while it is read"),
    ("source_size", pa.int64(), "bytes"),
    ("source_version", pa.string(), "the store's version token (ETag, generation or mtime)"),
    ("frame_count", pa.int64(), "presented video frames, counted by demuxing"),
    ("header_frame_count", pa.int64(), "frame count the header claims (recorded, not trusted)"),
    ("discarded_frames", pa.int64(), "packets an edit list hides (decoded for reference, never shown)"),
    ("global_first_frame", pa.int64(), "index of the clip's first frame within its recording"),
    ("recording_start_s", pa.float64(), "start time of the clip within its recording (s)"),
    ("fps", pa.string(), "average frame rate from the header, as a fraction (e.g. 30000/1001)"),
    ("real_fps", pa.string(), "real base frame rate (r_frame_rate), as a fraction"),
    ("measured_fps", pa.string(), "rate measured from decoded timestamps, as a fraction"),
    ("vfr", pa.bool_(), "true when frame intervals differ (variable frame rate)"),
    ("time_base", pa.string(), "video stream time base, as a fraction"),
    ("start_time_s", pa.float64(), "first presentation time of the video stream (s)"),
    ("duration_s", pa.float64(), "video duration from the first to past the last frame (s)"),
    ("width", pa.int32(), "display width a person sees (rotation and pixel aspect applied)"),
    ("height", pa.int32(), "display height a person sees"),
    ("stored_width", pa.int32(), "coded width"),
    ("stored_height", pa.int32(), "coded height"),
    ("sar", pa.string(), "sample (pixel) aspect ratio, as a fraction"),
    ("rotation", pa.int16(), "clockwise rotation a player applies (0, 90, 180, 270)"),
    ("container", pa.string(), "container format"),
    ("video_codec", pa.string(), "video codec"),
    ("pix_fmt", pa.string(), "source pixel format"),
    ("bit_depth", pa.int16(), "bits per sample"),
    ("chroma", pa.string(), "chroma subsampling: 420, 422, 444 or rgb"),
    ("video_streams", pa.int16(), "video streams (attached pictures excluded)"),
    ("video_stream_index", pa.int16(), "index of the video stream used"),
    ("audio_streams", pa.int16(), "audio streams"),
    ("audio_codec", pa.string(), "codec of the first audio stream"),
    ("audio_sample_rate", pa.int32(), "Hz"),
    ("audio_channels", pa.int16(), "channels"),
    ("output_uri", pa.string(), "URL of the WebM (converted or skipped clips)"),
    ("output_codec", pa.string(), "vp9 or vp8"),
    ("output_width", pa.int32(), "WebM width"),
    ("output_height", pa.int32(), "WebM height"),
    ("output_bytes", pa.int64(), "WebM size"),
    ("output_digest", pa.string(), "BLAKE2b-128 of the WebM's bytes as written"),
    ("convert_key", pa.string(), "hash of the recipe settings the WebM was made with"),
    ("parity_ok", pa.bool_(), "true when every parity check passed"),
    ("output_frames", pa.int64(), "frames decoded from the WebM"),
    ("timestamp_max_error_ms", pa.float64(), "largest |WebM - source| frame timestamp (ms)"),
    ("output_fps_measured", pa.string(), "rate measured from the WebM's timestamps"),
    ("output_duration_s", pa.float64(), "WebM video duration (s)"),
    ("content_mean_diff", pa.float64(), "mean luma difference of frame signatures (0-255)"),
    ("content_worst_diff", pa.float64(), "largest per-frame signature difference"),
    ("content_worst_frame", pa.int64(), "frame where the largest difference is"),
    ("encode_seconds", pa.float64(), "wall time of the transcode (varies run to run)"),
    ("parity_seconds", pa.float64(), "wall time the proof took after the encode ended (it "
     "decodes alongside the encoder; varies run to run)"),
]
SCHEMA = pa.schema([pa.field(name, kind) for name, kind, _ in COLUMNS])
TIMING_COLUMNS = ("encode_seconds", "parity_seconds")


def empty_record() -> dict[str, Any]:
    return {name: None for name, _, _ in COLUMNS}


def state_path(out: Location, clip_id: str) -> str:
    return out.path(STATE_DIR, f"{clip_id}.json")


def load_record(out: Location, clip_id: str) -> dict[str, Any] | None:
    data = read_bytes(out, state_path(out, clip_id))
    if data is None:
        return None
    try:
        record = json.loads(data)
    except ValueError:
        return None  # an unreadable record is as good as none: the clip is redone
    return record if isinstance(record, dict) else None


def save_record(out: Location, clip_id: str, record: dict[str, Any]) -> None:
    blob = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    write_bytes_atomic(out, state_path(out, clip_id), blob)


def assign_timeline(records: list[dict[str, Any]]) -> None:
    """Fill each clip's first global frame and start time within its recording.

    Clips are in recording order already; a clip's frames are what demuxing counted (0 for
    a file with no readable video), so addresses stay stable when a clip is fixed later
    only if its frame count does not change.
    """
    by_recording: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_recording[record["recording"]].append(record)
    for clips in by_recording.values():
        frame, start = 0, 0.0
        for record in sorted(clips, key=lambda r: r["clip_index"]):
            record["global_first_frame"] = frame
            record["recording_start_s"] = round(start, 6)
            frame += record.get("frame_count") or 0
            start += record.get("duration_s") or 0.0


def clip_state(record: dict[str, Any]) -> str:
    """The clip's state for the ``status`` column, from what a run did with it (its
    in-memory ``status``): a clip this run skipped is as converted (or ingested) as it was."""
    status = record.get("status")
    if status != "skipped":
        return status
    return "converted" if record.get("parity_ok") and record.get("output_uri") else "ingested"


def write_items(out: Location, records: Iterable[dict[str, Any]]) -> str:
    """``OUT/items.parquet`` from this run's records, whose ``status`` says what the run did:
    that goes to ``last_run``, and ``status`` holds the clip's state (`clip_state`)."""
    rows = [{**r, "status": clip_state(r), "last_run": r.get("status")} for r in records]
    columns = {name: [r.get(name) for r in rows] for name, _, _ in COLUMNS}
    table = pa.table(columns, schema=SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    path = out.path(ITEMS_FILE)
    write_bytes_atomic(out, path, sink.getvalue().to_pybytes())
    return path


def write_ignored(out: Location, ignored: list[tuple[str, int, str]]) -> None:
    """``OUT/ignored.parquet``: every file under the dataset that is not a clip, with why
    (made on each listing, so it says what the last run saw)."""
    table = pa.table({name: [row[i] for row in ignored] for i, name in
                      enumerate(IGNORED_SCHEMA.names)}, schema=IGNORED_SCHEMA)
    write_table_if_changed(out, out.path(IGNORED_FILE), table)


def read_ignored(out: Location) -> list[str]:
    """The reasons in ``OUT/ignored.parquet``, one per file (none when it cannot be read)."""
    table = read_state_table(out, out.path(IGNORED_FILE))
    return [] if table is None else table.column("reason").to_pylist()


def read_items(out: Location) -> pa.Table | None:
    data = read_bytes(out, out.path(ITEMS_FILE))
    return None if data is None else pq.read_table(pa.BufferReader(data))


def schema_markdown() -> str:
    lines = ["| column | type | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{name}` | {kind} | {text} |" for name, kind, text in COLUMNS]
    return "\n".join(lines)


def is_converted(record: dict[str, Any]) -> bool:
    return bool(record and record.get("output_uri") and record.get("parity_ok")
                and record.get("status") in ("converted", "skipped"))


def clip_id_for(source_uri: str) -> str:
    """A clip's state-record name, from its source URL (items rows carry the URL)."""
    return hashlib.sha1(source_uri.encode("utf-8", "surrogatepass")).hexdigest()[:20]
