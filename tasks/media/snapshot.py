"""Frame snapshots: a lossless PNG of exactly one frame of a converted clip, linked back.

Frame ``N`` is the ``N``-th decoded frame of the clip's WebM (0-based, as in every table);
it is read with the exact-frame reader (`tasks.media.frames.FrameReader`), which checks the
decoded pts against the timeline, so a snapshot is never a neighbour of the frame asked for.
The PNG is decoded again before it is written and must equal the frame's pixels.

Images go to ``OUT/Snapshots/<recording>/<clip>_frame<N:06d>.png``, mirroring where the
clip's WebM lies under OUT (the same safe folder and clip names, so two clips never share
an image name). ``OUT/Snapshots/snapshots.parquet`` links each image back to its clip and
frame, one row per image: a rerun replaces that row (read, replace, write atomically; one
writer per OUT at a time, as for the items table).
"""

from __future__ import annotations

import difflib
import hashlib
import posixpath
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.store.record import ClipRecord
from tasks.store.items import is_converted
from tasks.media.webm import open_webm, webm_path
from tasks.errors import Blocked, MediaReadError, SnapshotError
from tasks.store.items import clip_id_for
from tasks.store.items import ITEMS_FILE, read_records
from tasks.recipe import Recipe
from tasks.store.storage import Location, open_location, write_bytes_atomic
from tasks.store.tables import Columns, concat, read_table, schema, write_table

SNAPSHOT_DIR = "Snapshots"
SNAPSHOTS_FILE = "snapshots.parquet"

SNAPSHOT_COLUMNS: Columns = [
    ("recording", pa.string(), "recording name (as in items.parquet)"),
    ("clip_index", pa.int32(), "0-based position of the clip in its recording"),
    ("clip_name", pa.string(), "file name of the source clip"),
    ("frame", pa.int64(), "0-based frame index within the clip's WebM (decoded order)"),
    ("global_frame", pa.int64(), "frame index within the recording"),
    ("pts", pa.int64(), "the frame's presentation timestamp in the WebM (time base ticks)"),
    ("time_s", pa.float64(), "the frame's decoded timestamp in the WebM (pts x time base, s)"),
    ("webm_uri", pa.string(), "URL of the WebM the frame was read from"),
    ("source_uri", pa.string(), "URL of the source clip"),
    ("image_uri", pa.string(), "URL of the PNG (unique: the row's key)"),
    ("width", pa.int32(), "image width (the WebM's)"),
    ("height", pa.int32(), "image height"),
    ("png_blake2b", pa.string(), "BLAKE2b-128 of the PNG file's bytes"),
]
SNAPSHOT_SCHEMA = schema(SNAPSHOT_COLUMNS)


def clip_label(record: ClipRecord) -> str:
    return f"{record.recording}/{record.clip_name}"


def resolve_clip(records: list[ClipRecord], clip: str) -> dict[str, Any]:
    """The items row ``clip`` names: a clip id (`tasks.convert.listing.clip_id_for`), a
    ``recording/clip_name``, a clip name, or a clip name without its extension, tried in
    that order; the first way that matches must match exactly one clip."""
    ways = [
        lambda r: r.source_uri is not None and clip_id_for(r.source_uri) == clip,
        lambda r: clip_label(r) == clip,
        lambda r: r.clip_name == clip,
        lambda r: posixpath.splitext(r.clip_name)[0] == clip
        or f"{r.recording}/{posixpath.splitext(r.clip_name)[0]}" == clip,
    ]
    for matches in ways:
        found = [r for r in records if matches(r)]
        if len(found) == 1:
            return found[0]
        if found:
            names = ", ".join(f"{clip_label(r)} (id {clip_id_for(r.source_uri)})" for r in found)
            raise SnapshotError(f"clip {clip!r} is ambiguous: it could be {names}; "
                                f"give recording/clip_name or the id")
    labels = [clip_label(r) for r in records]
    close = difflib.get_close_matches(clip, labels + [r.clip_name for r in records], n=5)
    hint = (f"did you mean {', '.join(close)}?" if close else
            f"known clips: {', '.join(labels[:20])}{', ...' if len(labels) > 20 else ''}"
            if labels else "the items table lists no clips")
    raise SnapshotError(f"no clip {clip!r} in the items table; {hint}")


def image_path(out: Location, record: ClipRecord, frame: int) -> str:
    """``OUT/Snapshots/<the WebM's folder>/<the WebM's stem>_frame<N:06d>.png``."""
    rel = webm_path(out, record)[len(out.root.rstrip("/")) + 1:]
    stem = posixpath.splitext(rel)[0]
    return out.path(SNAPSHOT_DIR, f"{stem}_frame{frame:06d}.png")


def snapshot(out: Location, record: ClipRecord, frame: int) -> dict[str, Any]:
    """Write frame ``frame`` of a converted clip as a PNG and record it; returns its row."""
    name = clip_label(record)
    if not is_converted(record):
        why = "; ".join(str(v) for v in (record.reason, record.detail) if v)
        raise SnapshotError(f"clip {name} has no converted WebM (status "
                            f"{record.status}{': ' + why if why else ''})")
    count = int(record.output_frames or 0)
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)):
        raise SnapshotError(f"frame must be a whole number (0-based), got {frame!r}")
    if not 0 <= frame < count:
        raise SnapshotError(f"frame {frame!r} out of range: clip {name} has {count} frames "
                            f"(0 to {count - 1})")
    frame = int(frame)
    with open_webm(out, record) as reader:
        try:
            ((_, pts, decoded),) = list(reader.read(frame, 1))
        except Blocked as e:
            raise MediaReadError(f"{record.output_uri}: {e}") from e
        image = decoded.to_ndarray(format="bgr24")
        time_s = float(reader.timeline.time_s(frame))
    ok, encoded = cv2.imencode(".png", image)
    if not ok or not np.array_equal(cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED), image):
        raise MediaReadError(f"{name} frame {frame}: the PNG does not hold the frame's pixels")
    blob = encoded.tobytes()
    path = image_path(out, record, frame)
    write_bytes_atomic(out, path, blob)
    row = {
        "recording": record.recording, "clip_index": record.clip_index,
        "clip_name": record.clip_name, "frame": frame,
        "global_frame": int(record.global_first_frame or 0) + frame, "pts": pts,
        "time_s": time_s, "webm_uri": record.output_uri, "source_uri": record.source_uri,
        "image_uri": out.url(path), "width": image.shape[1], "height": image.shape[0],
        "png_blake2b": hashlib.blake2b(blob, digest_size=16).hexdigest(),
    }
    _record(out, row)
    return row


def _record(out: Location, row: dict[str, Any]) -> None:
    """Replace the image's row in the snapshots table (or add it), sorted by clip and frame."""
    path = out.path(SNAPSHOT_DIR, SNAPSHOTS_FILE)
    table = read_table(out, path)
    if table is not None:
        table = table.filter(pc.invert(pc.equal(table["image_uri"], row["image_uri"])))
    new = pa.Table.from_pylist([row], schema=SNAPSHOT_SCHEMA)
    table = concat([table, new], SNAPSHOT_SCHEMA).sort_by(
        [("recording", "ascending"), ("clip_index", "ascending"), ("frame", "ascending")])
    write_table(out, path, table)


def snapshots_uri(out_uri: str, recipe: Recipe) -> str:
    out = open_location(out_uri, recipe.storage)
    return out.url(out.path(SNAPSHOT_DIR, SNAPSHOTS_FILE))


def snapshot_uri(out_uri: str, recipe: Recipe, clip: str, frame: int) -> dict[str, Any]:
    """`snapshot` for the clip ``clip`` names (see `resolve_clip`) in OUT's items table."""
    out = open_location(out_uri, recipe.storage)
    records = read_records(out)
    if not records:
        raise SnapshotError(f"{out.url(out.path(ITEMS_FILE))} not found: convert the dataset "
                            f"into {out_uri} first")
    row = snapshot(out, resolve_clip(records, clip), frame)
    return {**row, "snapshots_uri": out.url(out.path(SNAPSHOT_DIR, SNAPSHOTS_FILE))}


__all__ = ["SNAPSHOT_COLUMNS", "SNAPSHOT_SCHEMA", "SnapshotError", "resolve_clip",
           "image_path", "snapshot", "snapshot_uri", "snapshots_uri"]
