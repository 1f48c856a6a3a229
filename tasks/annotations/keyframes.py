"""Keyframe tracks: the table every exporter reads and every importer writes, and the one
definition of what a frame between keyframes shows (`expand`).

Semantics (the contract; the README's "Keyframes" section says the same for users):

- A track is the rows sharing (recording, clip_index, track_id), ordered by frame. Its first
  row is its start and is never hidden. ``end_frame`` (the same on every row) is its last
  frame; null means the track lasts to the end of its clip.
- The state at frame f (start <= f <= end) comes from keyframe k, the last one at or before
  f: its label, attributes and hidden flag. A hidden keyframe hides the object from k until
  the next keyframe (its box is the last known one). Between a visible keyframe and the next
  keyframe the box is interpolated linearly (mode ``linear``) or held (mode ``none``, a
  "reflected" frame). After the last keyframe the box is held up to the end.
- ``kind`` says why a frame is a keyframe: see `KINDS`.

Dense tracks (one row per frame, as `tasks.track.assemble` writes them) are normalised before they
are compared or compacted (`normalise_dense`): missing frames inside a track become hidden
frames holding the last box, and hidden frames before the first or after the last visible
frame are dropped (hidden at the start is not allowed; hidden to the end is the same as
ended, in our model and in every tool we export to).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.store.tables import Columns, schema

# Why a frame is a keyframe, in the order of precedence when several reasons apply.
KINDS = {
    "start": "the track's first frame",
    "end": "the track's last frame",
    "hidden": "the object is hidden from this frame on (lost, occluded, out of view)",
    "shown": "the object is visible again from this frame on",
    "label": "the label or the attributes change here",
    "human": "a box a person chose",
    "compacted": "a box compaction kept so that interpolation stays within tolerance",
}
MODES = ("linear", "none")

KEYFRAME_COLUMNS: Columns = [
    ("recording", pa.string(), "recording name (as in items.parquet)"),
    ("clip_index", pa.int32(), "0-based position of the clip in its recording"),
    ("track_id", pa.int32(), "object id, unique within (recording, clip_index)"),
    ("frame", pa.int64(), "0-based frame index within the clip's WebM (rank of the decoded pts)"),
    ("global_frame", pa.int64(), "frame index within the recording"),
    ("time_s", pa.float64(), "the frame's decoded timestamp in the WebM (pts x time base, s)"),
    ("label", pa.string(), "dataset label from this keyframe on"),
    ("x1", pa.float32(), "left edge, pixels of the WebM frame"),
    ("y1", pa.float32(), "top edge"),
    ("x2", pa.float32(), "right edge"),
    ("y2", pa.float32(), "bottom edge"),
    ("hidden", pa.bool_(), "true: hidden from this frame until the next keyframe (box = last known)"),
    ("kind", pa.string(), "why this frame is a keyframe: " + ", ".join(KINDS)),
    ("mode", pa.string(), "the track's interpolation between keyframes: linear | none (held)"),
    ("end_frame", pa.int64(), "the track's last frame (same on every row); null: to the clip's end"),
    ("attributes", pa.string(), "JSON object of attributes from this keyframe on (\"{}\" when none)"),
    ("source", pa.string(), "where the box comes from: detector | tracker | interpolated | human"),
    ("score", pa.float32(), "model or tracker confidence at this frame (1 for a person's box)"),
]
KEYFRAME_SCHEMA = schema(KEYFRAME_COLUMNS)
TRACK_KEY = ["recording", "clip_index", "track_id"]
BOX = ["x1", "y1", "x2", "y2"]

# Dense states, as `expand` returns them and `normalise_dense` makes them comparable.
STATE_SCHEMA = pa.schema([
    ("recording", pa.string()), ("clip_index", pa.int32()), ("track_id", pa.int32()),
    ("frame", pa.int64()), ("label", pa.string()), ("x1", pa.float64()), ("y1", pa.float64()),
    ("x2", pa.float64()), ("y2", pa.float64()), ("hidden", pa.bool_()), ("attributes", pa.string()),
])

ClipFrames = dict[tuple[str, int], int]


def attributes_json(attributes: dict[str, Any] | None) -> str:
    """The canonical JSON of an attribute dict (sorted keys, no spaces), so equal attributes
    compare equal as strings."""
    return json.dumps(attributes or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def changes(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Bool per row: the value differs from the previous row's (row 0: False). Computed by
    Arrow, so string columns never become Python objects."""
    n = len(column)
    if n < 2:
        return np.zeros(n, bool)
    differs = pc.fill_null(pc.not_equal(column.slice(1), column.slice(0, n - 1)), True)
    return np.r_[False, differs.to_numpy(zero_copy_only=False)]


def sort_tracks(table: pa.Table) -> pa.Table:
    """Rows by (recording, clip_index, track_id, frame); a table already in that order (as
    the stages write them) is returned as it is, without a sort."""
    n = table.num_rows
    if n < 2:
        return table
    keys = TRACK_KEY + ["frame"]
    same = np.ones(n - 1, bool)
    for key in keys:
        column = table[key]
        down = np.r_[pc.fill_null(pc.less(column.slice(1), column.slice(0, n - 1)), True)
                     .to_numpy(zero_copy_only=False)]
        if (same & down).any():
            return table.sort_by([(c, "ascending") for c in keys])
        same &= ~changes(column)[1:]
    return table


def track_starts(table: pa.Table) -> np.ndarray:
    """Row indices where a new track begins, for a table sorted by `sort_tracks`."""
    n = table.num_rows
    if n == 0:
        return np.zeros(0, np.int64)
    change = np.zeros(n, bool)
    change[0] = True
    for column in TRACK_KEY:
        change |= changes(table[column])
    return np.flatnonzero(change)


def _codes(table: pa.Table) -> np.ndarray:
    """One int64 per row identifying its track (rows sorted by track)."""
    starts = track_starts(table)
    codes = np.zeros(table.num_rows, np.int64)
    codes[starts[1:]] = 1
    return np.cumsum(codes)


def check_keyframes(table: pa.Table) -> None:
    """Raise ValueError naming the first broken rule of the keyframe contract."""
    table = sort_tracks(table)
    if table.num_rows == 0:
        return
    code = _codes(table)
    frame = table["frame"].to_numpy()
    same = code[1:] == code[:-1]
    if (same & (frame[1:] == frame[:-1])).any():
        raise ValueError("two keyframes of one track on the same frame")
    starts = track_starts(table)
    hidden = table["hidden"].to_numpy(zero_copy_only=False)
    if hidden[starts].any():
        raise ValueError("a track's first frame cannot be hidden")
    if (frame < 0).any():
        raise ValueError("negative frame index")
    ends = pc.fill_null(table["end_frame"], np.iinfo(np.int64).max).to_numpy()
    if (frame > ends).any():
        raise ValueError("a keyframe after its track's end_frame")
    modes = set(table["mode"].to_pylist())
    if not modes <= set(MODES):
        raise ValueError(f"mode must be one of {MODES}, got {sorted(modes - set(MODES))}")
    box = np.column_stack([table[c].to_numpy() for c in BOX]).astype(np.float64)
    if not np.isfinite(box).all():
        raise ValueError("a keyframe box is not finite")
    if ((box[:, 2] < box[:, 0]) | (box[:, 3] < box[:, 1])).any():
        raise ValueError("a keyframe box has x2 < x1 or y2 < y1")


def expand(keyframes: pa.Table, clip_frames: ClipFrames | None = None) -> pa.Table:
    """Every frame of every track, from its start to its end, as `STATE_SCHEMA` rows: the one
    definition of interpolation that compaction, importers and exporters are checked with.

    ``clip_frames`` maps (recording, clip_index) to the clip's frame count; it is needed only
    for tracks whose ``end_frame`` is null.
    """
    table = sort_tracks(keyframes)
    if table.num_rows == 0:
        return STATE_SCHEMA.empty_table()
    starts = track_starts(table)
    n_kf = table.num_rows
    frame = table["frame"].to_numpy().astype(np.int64)
    first = frame[starts]
    end = pc.fill_null(table["end_frame"], -1).to_numpy()[starts].astype(np.int64)
    missing = table["end_frame"].is_null().to_numpy(zero_copy_only=False)[starts]
    if missing.any():
        recordings = table["recording"].to_pylist()
        clips = table["clip_index"].to_pylist()
        for t in np.flatnonzero(missing):
            key = (recordings[starts[t]], int(clips[starts[t]]))
            if clip_frames is None or key not in clip_frames:
                raise ValueError(f"track {table['track_id'][int(starts[t])].as_py()} of {key} has "
                                 "no end_frame and the clip's frame count is not known")
            end[t] = clip_frames[key] - 1
    lengths = end - first + 1
    if (lengths <= 0).any():
        raise ValueError("a track ends before it starts")
    track_of_row = np.repeat(np.arange(len(starts)), lengths)
    offset = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    dense_frame = first[track_of_row] + offset
    # Keyframe at or before each dense frame: search the (track, frame) keys.
    code = _codes(table)
    span = np.int64(1) << 40
    keys = code * span + frame
    at = np.searchsorted(keys, track_of_row * span + dense_frame, side="right") - 1
    box = np.column_stack([table[c].to_numpy() for c in BOX]).astype(np.float64)
    hidden = table["hidden"].to_numpy(zero_copy_only=False)
    linear = np.asarray(table["mode"].to_pylist(), dtype=object) == "linear"
    nxt = at + 1
    has_next = (nxt < n_kf)
    has_next[has_next] = code[nxt[has_next]] == code[at[has_next]]
    interp = has_next & ~hidden[at] & linear[at]
    out = box[at].copy()
    i = np.flatnonzero(interp)
    f0, f1 = frame[at[i]], frame[nxt[i]]
    t = (dense_frame[i] - f0) / (f1 - f0)
    out[i] = box[at[i]] + (box[nxt[i]] - box[at[i]]) * t[:, None]
    take = pa.array(at)
    return pa.table({
        "recording": table["recording"].take(take), "clip_index": table["clip_index"].take(take),
        "track_id": table["track_id"].take(take), "frame": dense_frame,
        "label": table["label"].take(take), "x1": out[:, 0], "y1": out[:, 1], "x2": out[:, 2],
        "y2": out[:, 3], "hidden": table["hidden"].take(take),
        "attributes": table["attributes"].take(take)}, schema=STATE_SCHEMA)


def normalise_dense(tracks: pa.Table, columns: list[str] | None = None) -> pa.Table:
    """A dense tracks table (one row per object per frame) as comparable `STATE_SCHEMA` rows:
    gaps filled as hidden frames holding the last box, hidden frames before the first and
    after the last visible frame dropped, tracks with no visible frame dropped.

    ``columns`` keeps those columns of the input instead (``attributes`` is added as "{}"
    when missing); in filled gaps ``time_s`` is null (the frame is not in the input) and
    ``global_frame`` counts on."""
    table = sort_tracks(tracks)
    if "attributes" not in table.column_names:
        table = table.append_column("attributes", pa.repeat("{}", table.num_rows))
    if columns is None:
        table = table.select(STATE_SCHEMA.names).cast(STATE_SCHEMA)
    else:
        table = table.select(list(dict.fromkeys(TRACK_KEY + ["frame", "hidden"] + columns)))
    if table.num_rows == 0:
        return table
    code = _codes(table)
    hidden = table["hidden"].to_numpy(zero_copy_only=False)
    visible = ~hidden
    n_tracks = int(code[-1]) + 1
    rows = np.arange(table.num_rows)
    first_visible = np.full(n_tracks, np.iinfo(np.int64).max)
    np.minimum.at(first_visible, code[visible], rows[visible])
    last_visible = np.full(n_tracks, -1)
    np.maximum.at(last_visible, code[visible], rows[visible])
    keep = (rows >= first_visible[code]) & (rows <= last_visible[code])
    if not keep.all():
        table = table.filter(pa.array(keep))
    if table.num_rows == 0:
        return table
    code = code[keep]
    frame = table["frame"].to_numpy()
    step = np.diff(frame)
    same = code[1:] == code[:-1]
    if (same & (step <= 0)).any():
        raise ValueError("a track has two rows for one frame")
    gaps = np.flatnonzero(same & (step > 1))
    if gaps.size == 0:
        return table
    # Fill each gap after row g with (step - 1) hidden copies of row g.
    repeat = np.ones(table.num_rows, np.int64)
    repeat[gaps] = step[gaps]
    take = np.repeat(np.arange(table.num_rows), repeat)
    filled = table.take(pa.array(take))
    offset = np.arange(len(take)) - np.repeat(np.cumsum(repeat) - repeat, repeat)
    copied = offset > 0

    def put(name: str, values) -> None:
        nonlocal filled
        filled = filled.set_column(filled.schema.get_field_index(name), name, values)

    put("frame", pa.array(frame[take] + offset))
    put("hidden", pa.array(filled["hidden"].to_numpy(zero_copy_only=False) | copied))
    if "global_frame" in filled.column_names:
        put("global_frame", pa.array(filled["global_frame"].to_numpy() + offset))
    if "time_s" in filled.column_names:
        put("time_s", pa.array(filled["time_s"].to_numpy(zero_copy_only=False), mask=copied))
    return filled


def compare_states(expected: pa.Table, actual: pa.Table, *, max_error_px: float | None = None,
                   min_iou: float | None = None) -> list[str]:
    """Differences between two state tables, as sentences (empty when they agree): the same
    tracks on the same frames, hidden ranges, labels and attributes exact, and every visible
    box within the tolerance (every frame checked). Track ids are compared as given."""
    from tasks.annotations.boxmath import iou_pairs

    problems: list[str] = []
    a, b = sort_tracks(expected), sort_tracks(actual)
    if a.num_rows != b.num_rows:
        problems.append(f"{a.num_rows} frames expected, {b.num_rows} found")
        return problems
    for column in TRACK_KEY + ["frame", "hidden", "label", "attributes"]:
        if not a[column].equals(b[column]):
            x, y = a[column].to_pylist(), b[column].to_pylist()
            i = next(i for i in range(len(x)) if x[i] != y[i])
            problems.append(f"{column} differs at row {i} (track {a['track_id'][i]}, frame "
                            f"{a['frame'][i]}): expected {x[i]!r}, found {y[i]!r}")
    if problems:
        return problems
    visible = ~a["hidden"].to_numpy(zero_copy_only=False)
    ea = np.column_stack([a[c].to_numpy() for c in BOX])[visible].astype(np.float64)
    eb = np.column_stack([b[c].to_numpy() for c in BOX])[visible].astype(np.float64)
    if max_error_px is not None and ea.size:
        err = np.abs(ea - eb).max(axis=1)
        worst = int(err.argmax())
        if err[worst] > max_error_px + 1e-6:
            problems.append(f"box error {err[worst]:.4f} px > {max_error_px} at visible row {worst}")
    if min_iou is not None and ea.size:
        iou = iou_pairs(ea, eb)
        worst = int(iou.argmin())
        if iou[worst] < min_iou - 1e-7:
            problems.append(f"IoU {iou[worst]:.4f} < {min_iou} at visible row {worst}")
    return problems
