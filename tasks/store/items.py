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
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.store.record import COLUMNS, ClipRecord
from tasks.store.storage import Location, read_bytes, write_bytes_atomic
from tasks.store.tables import read_state_table, write_table_if_changed

STATE_DIR = "_state/clips"
ITEMS_FILE = "items.parquet"
IGNORED_FILE = "ignored.parquet"
IGNORED_SCHEMA = pa.schema([("source_uri", pa.string()), ("source_size", pa.int64()),
                           ("reason", pa.string())])

SCHEMA = pa.schema([pa.field(name, kind) for name, kind, _ in COLUMNS])
TIMING_COLUMNS = ("encode_seconds", "parity_seconds")


def state_path(out: Location, clip_id: str) -> str:
    return out.path(STATE_DIR, f"{clip_id}.json")


def load_record(out: Location, clip_id: str) -> ClipRecord | None:
    data = read_bytes(out, state_path(out, clip_id))
    if data is None:
        return None
    try:
        record = json.loads(data)
        return ClipRecord.from_dict(record) if isinstance(record, dict) else None
    except (ValueError, TypeError):
        return None  # an unreadable record is as good as none: the clip is redone


def save_record(out: Location, clip_id: str, record: ClipRecord) -> None:
    blob = json.dumps(record.as_dict(), sort_keys=True, separators=(",", ":")).encode()
    write_bytes_atomic(out, state_path(out, clip_id), blob)


def assign_timeline(records: list[ClipRecord]) -> list[ClipRecord]:
    """The records with each clip's first global frame and start time within its recording.

    Clips are in recording order already; a clip's frames are what demuxing counted (0 for
    a file with no readable video), so addresses stay stable when a clip is fixed later
    only if its frame count does not change.
    """
    by_recording: dict[str | None, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        by_recording[record.recording].append(i)
    placed = list(records)
    for clips in by_recording.values():
        frame, start = 0, 0.0
        for i in sorted(clips, key=lambda i: records[i].clip_index):
            record = records[i]
            placed[i] = record.replace(global_first_frame=frame, recording_start_s=round(start, 6))
            frame += record.frame_count or 0
            start += record.duration_s or 0.0
    return placed


def clip_state(record: ClipRecord) -> str | None:
    """The clip's state for the ``status`` column, from what a run did with it (its
    in-memory ``status``): a clip this run skipped is as converted (or ingested) as it was."""
    if record.status != "skipped":
        return record.status
    return "converted" if record.parity_ok and record.output_uri else "ingested"


def write_items(out: Location, records: Iterable[ClipRecord]) -> str:
    """``OUT/items.parquet`` from this run's records, whose ``status`` says what the run did:
    that goes to ``last_run``, and ``status`` holds the clip's state (`clip_state`)."""
    rows = [{**r.as_dict(), "status": clip_state(r), "last_run": r.status} for r in records]
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


def read_records(out: Location) -> list[ClipRecord]:
    """The items table's rows as records (none when there is no table yet)."""
    table = read_items(out)
    return [] if table is None else [ClipRecord.from_dict(row) for row in table.to_pylist()]


def schema_markdown() -> str:
    lines = ["| column | type | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{name}` | {kind} | {text} |" for name, kind, text in COLUMNS]
    return "\n".join(lines)


def is_converted(record: ClipRecord | None) -> bool:
    return record is not None and record.converted


def clip_id_for(source_uri: str) -> str:
    """A clip's state-record name, from its source URL (items rows carry the URL)."""
    return hashlib.sha1(source_uri.encode("utf-8", "surrogatepass")).hexdigest()[:20]
