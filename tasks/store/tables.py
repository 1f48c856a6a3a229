"""The annotation tables (detections, tracks): typed columns with descriptions, atomic
Parquet writes. The README's schema sections are generated from these lists."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.errors import UnreadableTableError
from tasks.store.storage import Location, read_bytes, write_bytes_atomic

log = logging.getLogger(__name__)

Columns = list[tuple[str, pa.DataType, str]]

DETECTION_COLUMNS: Columns = [
    ("recording", pa.string(), "recording name (as in items.parquet)"),
    ("clip_index", pa.int32(), "0-based position of the clip in its recording"),
    ("frame", pa.int64(), "0-based frame index within the clip's WebM: the rank of the frame's "
     "decoded timestamp"),
    ("global_frame", pa.int64(), "frame index within the recording (clip's first frame + frame)"),
    ("time_s", pa.float64(), "the frame's decoded timestamp in the WebM (pts x time base, s)"),
    ("label", pa.string(), "dataset label (after the recipe's label mapping)"),
    ("model_label", pa.string(), "label the model emitted"),
    ("score", pa.float32(), "model confidence in [0, 1]"),
    ("x1", pa.float32(), "left edge, pixels of the WebM frame"),
    ("y1", pa.float32(), "top edge"),
    ("x2", pa.float32(), "right edge"),
    ("y2", pa.float32(), "bottom edge"),
]

TRACK_COLUMNS: Columns = DETECTION_COLUMNS + [
    ("track_id", pa.int32(), "object id, unique within (recording, clip_index); 1, 2, ... in "
     "order of appearance, deterministic"),
    ("hidden", pa.bool_(), "true where the object is not visible (lost or occluded); the box is "
     "then its last known one"),
    ("source", pa.string(), "detector | tracker | interpolated | human: where the box comes from"),
]


SHOT_COLUMNS: Columns = [
    ("recording", pa.string(), "recording name (as in items.parquet)"),
    ("clip_index", pa.int32(), "0-based position of the clip in its recording"),
    ("shot", pa.int32(), "0-based position of the shot in its clip"),
    ("first_frame", pa.int64(), "the shot's first frame in the clip's WebM"),
    ("last_frame", pa.int64(), "the shot's last frame (inclusive)"),
    ("global_first_frame", pa.int64(), "first frame within the recording"),
    ("global_last_frame", pa.int64(), "last frame within the recording (inclusive)"),
    ("start_s", pa.float64(), "decoded timestamp of the first frame in the WebM (s)"),
    ("last_s", pa.float64(), "decoded timestamp of the last frame in the WebM (s)"),
    ("recording_start_s", pa.float64(), "the first frame's time in the recording (s): where a "
     "time span for this shot starts"),
    ("cut", pa.bool_(), "true: the shot begins at a detected cut; false: at the clip's start"),
]


def schema(columns: Columns) -> pa.Schema:
    return pa.schema([pa.field(name, kind) for name, kind, _ in columns])


DETECTION_SCHEMA = schema(DETECTION_COLUMNS)
TRACK_SCHEMA = schema(TRACK_COLUMNS)
SHOT_SCHEMA = schema(SHOT_COLUMNS)
# The tracks table as `OUT/tracks.parquet` holds it: a reviewer's attributes per frame too.
ATTRIBUTES_COLUMN = ("attributes", pa.string(), "JSON object of the attributes a reviewer gave "
                     "(\"{}\" when none)")
TRACKS_FILE_SCHEMA = schema(TRACK_COLUMNS + [ATTRIBUTES_COLUMN])


def with_attributes(table: pa.Table) -> pa.Table:
    """``table`` with an ``attributes`` column ("{}" where it had none)."""
    if "attributes" in table.column_names:
        return table
    return table.append_column("attributes", pa.repeat(pa.scalar("{}"), table.num_rows))


def to_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def write_table(out: Location, path: str, table: pa.Table) -> str:
    write_bytes_atomic(out, path, to_bytes(table))
    return path


def write_table_if_changed(out: Location, path: str, table: pa.Table) -> str:
    """`write_table`, unless the file holds these very bytes already (a rerun then leaves it,
    and its version token, as it was)."""
    data = to_bytes(table)
    if read_bytes(out, path) != data:
        write_bytes_atomic(out, path, data)
    return path


def read_table(out: Location, path: str, columns: list[str] | None = None) -> pa.Table | None:
    """A table the pipeline wrote (only ``columns`` when given), or None when it does not
    exist; one that is not readable Parquet is an `UnreadableTableError` naming it."""
    data = read_bytes(out, path)
    if data is None:
        return None
    try:
        # ParquetFile, not pq.read_table: the dataset layer costs ~1 ms per small table,
        # which is most of a rerun's time per clip.
        return pq.ParquetFile(pa.BufferReader(data)).read(columns=columns)
    except (pa.ArrowInvalid, OSError) as e:
        raise UnreadableTableError(f"{out.url(path)} is not readable Parquet ({e}); remove it "
                                   "and run again to rebuild it") from e


def read_state_table(out: Location, path: str,
                     columns: list[str] | None = None) -> pa.Table | None:
    """A state record's table (under ``OUT/_state``). One that cannot be read (truncated,
    garbled) is a cache miss: the unit it records is redone and the file replaced. Which
    file was bad is logged."""
    try:
        return read_table(out, path, columns)
    except UnreadableTableError as e:
        log.warning("%s cannot be read (%s): redoing the unit it records", out.url(path),
                    e.__cause__)
        return None


def read_state_json(out: Location, path: str):
    """A state record's JSON; unreadable is a cache miss, as `read_state_table`."""
    import json

    data = read_bytes(out, path)
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError as e:
        log.warning("%s cannot be read (%s): redoing the unit it records", out.url(path), e)
        return None


def readable_parquet(out: Location, path: str) -> bool:
    """The file exists and its Parquet footer reads (a truncated file fails): a cheap check
    of a state table a later stage will read, without reading its rows."""
    try:
        with out.fs.open(path, "rb") as f:
            pq.read_metadata(f)
        return True
    except FileNotFoundError:
        return False
    except (pa.ArrowInvalid, OSError) as e:
        log.warning("%s cannot be read (%s): redoing the unit it records", out.url(path), e)
        return False


def table_digest(table: pa.Table, *extra) -> str:
    """BLAKE2b-128 of a table's content (Arrow IPC of its rows, one chunk per column, so the
    same rows give the same digest however they were read) and of ``extra`` values: how a
    stage recognises a unit it has already done."""
    import hashlib
    import json

    h = hashlib.blake2b(digest_size=16)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema.remove_metadata()) as writer:
        writer.write_table(table.replace_schema_metadata(None).combine_chunks())
    h.update(sink.getvalue())
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()


def concat(tables: list[pa.Table], target: pa.Schema) -> pa.Table:
    tables = [t.select(target.names).cast(target) for t in tables if t is not None]
    return pa.concat_tables(tables) if tables else target.empty_table()


def with_global_frame(table: pa.Table, first_frame: int) -> pa.Table:
    """``global_frame`` = the clip's first frame in its recording + ``frame``; recomputed when
    tables are combined, as a rerun may change earlier clips' lengths."""
    index = table.schema.get_field_index("global_frame")
    return table.set_column(index, "global_frame",
                            pc.add(table["frame"], pa.scalar(int(first_frame), pa.int64())))


def schema_markdown(columns: Columns) -> str:
    lines = ["| column | type | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{name}` | {kind} | {text} |" for name, kind, text in columns]
    return "\n".join(lines)


def clip_slices(table: pa.Table, views: bool = False) -> dict[tuple[str, int], pa.Table]:
    """Each clip's rows of a table with ``recording`` and ``clip_index`` columns, in table
    order: {(recording, clip_index): rows}. One sort for all clips, not one scan per clip
    (which is quadratic in the clips of a recording). With ``views``, the rows are zero-copy
    slices of one sorted copy (much faster; but `table_digest` sees a slice's buffer layout,
    so rows that are digested are gathered per clip)."""
    recording = table["recording"].to_pylist()
    clip = table["clip_index"].to_numpy(zero_copy_only=False)
    names = {name: i for i, name in enumerate(sorted(set(recording)))}
    codes = np.array([names[r] for r in recording], np.int64)
    order = np.lexsort((clip, codes))  # stable: table order within a clip
    if not order.size:
        return {}
    keys = np.column_stack([codes[order], clip[order]])
    starts = np.flatnonzero(np.r_[True, np.any(keys[1:] != keys[:-1], axis=1)])
    ends = np.r_[starts[1:], order.size]
    back = {i: name for name, i in names.items()}
    if views:
        ordered = table.take(order)
        return {(back[int(keys[a, 0])], int(keys[a, 1])): ordered.slice(a, b - a)
                for a, b in zip(starts, ends)}
    return {(back[int(keys[a, 0])], int(keys[a, 1])): table.take(order[a:b])
            for a, b in zip(starts, ends)}
