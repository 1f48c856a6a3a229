"""Time spans (a label over a time range of a recording) and the per-frame labels they give.

People annotate activities in long videos as spans ``(recording, start_s, end_s, label)``
in the recording's own clock, which runs across its clips: a clip's frame at WebM time
``t`` is at ``recording_start_s + (t - t0)``, ``t0`` being the clip's first frame time and
``recording_start_s`` its start in the recording (items table: the durations of the clips
before it). Spans are half-open: a frame is in one when ``start_s <= time < end_s``, so
back-to-back spans never share a frame. Both sides are rounded to whole microseconds before
comparing, so a span written at a frame's printed time (``1.24``) starts exactly there.

Frame times are each WebM's real decoded timestamps (`tasks.media.frames.Timeline`, by demuxing),
never ``index / fps``: VFR clips and gaps need no special case, and a span crossing clip
boundaries labels the tail of one clip and the head of the next.

Decisions: with a labels file, a label must be one of its paths; a label written as its
last part(s) (``Sub Task 1.2``) is resolved to the one path ending so (``Task 1/Sub Task
1.2``), and refused as ambiguous if several do. Spans are kept as written, overlaps
included (the span table is the annotators' record); the per-frame table has one row per
(frame, label), so where spans of one label overlap, the frame goes to the span listed
first. ``span_id`` is the span's 1-based row in its file, as in error messages.
"""

from __future__ import annotations

import json
import math
import posixpath
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from tasks.store.record import ClipRecord
from tasks.errors import SpanError
from tasks.annotations.span_sources import (is_timeline_export, label_studio_timeline_columns,
                                             prodigy_columns)
from tasks.media.frames import Timeline
from tasks.annotations.review_frames import ReviewVideos, recording_micros
from tasks.labels import SEPARATOR, LabelTree, load_label_tree
from tasks.recipe import Recipe
from tasks.store.tables import Columns, schema, write_table

SPANS_FILE = "spans.parquet"
FRAME_LABELS_FILE = "frame_labels.parquet"
_US = 1_000_000  # the comparison grid: microseconds

SPAN_COLUMNS: Columns = [
    ("span_id", pa.int64(), "the span's 1-based row in its file (errors and frame labels "
     "refer to it)"),
    ("recording", pa.string(), "recording name (as in items.parquet)"),
    ("start_s", pa.float64(), "start in the recording's time (s from its first clip's first "
     "frame); inclusive"),
    ("end_s", pa.float64(), "end in the recording's time (s); exclusive: a frame at t is in "
     "the span when start_s <= t < end_s"),
    ("label", pa.string(), "full label path from the labels file (e.g. Task 1/Sub Task 1.2)"),
    ("note", pa.string(), "free text from the file's note column, if it has one"),
]
FRAME_LABEL_COLUMNS: Columns = [
    ("recording", pa.string(), "recording name (as in items.parquet)"),
    ("clip_index", pa.int32(), "0-based position of the clip in its recording"),
    ("frame", pa.int64(), "0-based frame index within the clip's WebM"),
    ("global_frame", pa.int64(), "frame index within the recording"),
    ("time_s", pa.float64(), "the frame's decoded timestamp in the WebM (pts x time base, s)"),
    ("recording_time_s", pa.float64(), "the frame's time in the recording (s, 1 us grid)"),
    ("label", pa.string(), "the span's label"),
    ("span_id", pa.int64(), "the span that gives the label (the first one listed if several "
     "spans of this label cover the frame)"),
]
SPAN_SCHEMA = schema(SPAN_COLUMNS)
FRAME_LABEL_SCHEMA = schema(FRAME_LABEL_COLUMNS)
REQUIRED = ("recording", "start_s", "end_s", "label")


# --- the span table --------------------------------------------------------------------------


def load_spans(source: str, labels: LabelTree | None = None, videos=None) -> pa.Table:
    """Spans from a CSV, Parquet or JSON (a list of objects) file, a Label Studio timeline
    export or Prodigy JSONL (`tasks.annotations.span_sources`), checked (`SPAN_SCHEMA`).
    ``videos`` (`tasks.annotations.review_frames.ReviewVideos`) reads times given on a
    recording's review video."""
    import fsspec

    try:
        with fsspec.open(source, "rb") as f:
            data = f.read()
    except (OSError, ValueError) as e:
        raise SpanError(f"spans {source}: cannot read ({e})") from e
    where = f"spans {source}"
    raw = _parse(data, source, where, videos)
    missing = [c for c in REQUIRED if c not in raw]
    if missing:
        raise SpanError(f"{where}: missing column(s) {', '.join(missing)}; needed: "
                        f"{', '.join(REQUIRED)} (optional: note)")
    recording = _texts(raw["recording"], "recording", where)
    label = _texts(raw["label"], "label", where)
    start, end = _seconds(raw["start_s"], "start_s", where), _seconds(raw["end_s"], "end_s", where)
    backwards = np.flatnonzero(end <= start)
    if backwards.size:
        i = int(backwards[0])
        raise SpanError(f"{where}: row {i + 1}: end_s {end[i]} is not after start_s {start[i]}")
    if labels is not None:
        label = _resolve_labels(label, labels, where)
    n = len(recording)
    note = [None if v is None else str(v) for v in raw.get("note", [None] * n)]
    return pa.table({"span_id": np.arange(1, n + 1, dtype=np.int64), "recording": recording,
                     "start_s": start, "end_s": end, "label": label, "note": note},
                    schema=SPAN_SCHEMA)


def _parse(data: bytes, source: str, where: str, videos) -> dict[str, list]:
    """The file's columns as lists of Python values (a span file is small)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    kind = posixpath.splitext(source.lower())[1].lstrip(".")
    try:
        if kind == "csv":
            text = {c: pa.string() for c in ("recording", "label", "note")}  # "01" stays "01"
            return pacsv.read_csv(pa.BufferReader(data), convert_options=pacsv.ConvertOptions(
                column_types=text, strings_can_be_null=True)).to_pydict()
        if kind in ("parquet", "pq"):
            return pq.read_table(pa.BufferReader(data)).to_pydict()
        if kind == "jsonl":
            return prodigy_columns(data, where, videos)
        if kind == "json":
            items = json.loads(data)
            if is_timeline_export(items):
                return label_studio_timeline_columns(items, where, videos)
    except (pa.ArrowInvalid, OSError, ValueError) as e:
        raise SpanError(f"{where}: not a readable {kind.upper()} file ({e})") from e
    if kind != "json":
        raise SpanError(f"{where}: unknown file type {kind or '(none)'!r}; use .csv, .parquet, "
                        ".json (ours, or a Label Studio timeline export) or .jsonl (Prodigy)")
    if not isinstance(items, list):
        raise SpanError(f"{where}: expected a JSON list of span objects, got "
                        f"{type(items).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise SpanError(f"{where}: row {i + 1}: expected an object, got {item!r}")
    names = dict.fromkeys(k for item in items for k in item) if items else REQUIRED
    return {name: [item.get(name) for item in items] for name in names}


def _texts(values: list, name: str, where: str) -> list[str]:
    """Each row's text, stripped; a label's parts too (`` a / b `` is ``a/b``)."""
    out = []
    for i, value in enumerate(values, 1):
        text = "" if value is None else str(value).strip()
        if not text:
            raise SpanError(f"{where}: row {i}: {name} is empty")
        if name == "label":
            parts = [p.strip() for p in text.split(SEPARATOR)]
            if not all(parts):
                raise SpanError(f"{where}: row {i}: label {text!r} has an empty part")
            text = SEPARATOR.join(parts)
        out.append(text)
    return out


def _seconds(values: list, name: str, where: str) -> np.ndarray:
    out = np.empty(len(values), dtype=np.float64)
    for i, value in enumerate(values):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise SpanError(f"{where}: row {i + 1}: {name} is empty")
        try:  # numbers, or numbers written as text ("1.5" in JSON)
            out[i] = math.nan if isinstance(value, bool) else float(value)
        except (TypeError, ValueError):
            out[i] = math.nan
        if not (math.isfinite(out[i]) and out[i] >= 0):
            raise SpanError(f"{where}: row {i + 1}: {name} {value!r} is not a time in "
                            f"seconds >= 0")
    return out


def _resolve_labels(labels: list[str], tree: LabelTree, where: str) -> list[str]:
    ends: dict[str, list[str]] = {}  # every path's trailing parts -> the paths ending so
    for path in tree.paths:
        parts = path.split(SEPARATOR)
        for k in range(1, len(parts)):
            ends.setdefault(SEPARATOR.join(parts[k:]), []).append(path)
    resolved = {}
    for label in dict.fromkeys(labels):
        if label in tree:
            resolved[label] = label
        elif len(ends.get(label, ())) == 1:
            resolved[label] = ends[label][0]
        else:
            row = labels.index(label) + 1
            if label in ends:
                raise SpanError(f"{where}: row {row}: label {label!r} is ambiguous: "
                                f"{', '.join(ends[label])}; write the full path")
            known = ", ".join(tree.paths[:20]) + (", ..." if len(tree.paths) > 20 else "")
            raise SpanError(f"{where}: row {row}: label {label!r} is not in the labels file "
                            f"(known: {known})")
    return [resolved[label] for label in labels]


# --- spans -> frames -------------------------------------------------------------------------


def _micros(seconds: np.ndarray) -> np.ndarray:
    return np.rint(np.asarray(seconds, dtype=np.float64) * _US).astype(np.int64)


def frame_labels(spans: pa.Table, records: Sequence[ClipRecord],
                 timelines: Mapping[tuple[str, int], Timeline]) -> pa.Table:
    """One row per (frame, label) for every frame whose recording time is in a span.

    ``records`` are items rows (recording, clip_index, recording_start_s,
    global_first_frame); ``timelines`` maps ``(recording, clip_index)`` to the clip's WebM
    `Timeline`. A clip without a timeline (not converted) gets no rows. A span naming a
    recording that no record has is a `SpanError` (a typo would otherwise label nothing).
    """
    recordings = np.asarray(spans["recording"].to_pylist(), dtype=object)
    unknown = sorted(set(recordings.tolist()) - {r.recording for r in records})
    if unknown:
        rows = np.flatnonzero(np.isin(recordings, unknown))[:10] + 1
        raise SpanError(f"span row(s) {', '.join(map(str, rows))} name recording(s) "
                        f"{', '.join(map(repr, unknown))} that the items table does not list "
                        f"(known: {', '.join(sorted({r.recording for r in records})[:20])})")
    starts, ends = _micros(spans["start_s"].to_numpy()), _micros(spans["end_s"].to_numpy())
    names, codes = np.unique(np.asarray(spans["label"].to_pylist(), dtype=object),
                             return_inverse=True)
    clips = sorted(records, key=lambda r: (r.recording, r.clip_index))
    parts = []
    for k, record in enumerate(clips):
        timeline = timelines.get((record.recording, record.clip_index))
        mine = np.flatnonzero(recordings == record.recording)
        if timeline is None or not len(timeline) or not mine.size:
            continue
        at = recording_micros(record, timeline)
        lo = np.searchsorted(at, starts[mine], "left")   # first frame at or after the start
        hi = np.searchsorted(at, ends[mine], "left")     # first frame at or after the end
        counts = hi - lo
        if not counts.sum():
            continue
        span = np.repeat(mine, counts)
        frame = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) \
            + np.repeat(lo, counts)
        seconds = timeline.seconds(frame)
        parts.append((np.full(frame.size, k), frame, span, seconds, at[frame]))
    if not parts:
        return FRAME_LABEL_SCHEMA.empty_table()
    clip, frame, span, seconds, at = (np.concatenate(p) for p in zip(*parts))
    order = np.lexsort((span, codes[span], frame, clip))  # spans are in span_id order
    clip, frame, span, seconds, at = (a[order] for a in (clip, frame, span, seconds, at))
    first = np.ones(clip.size, dtype=bool)  # one row per (clip, frame, label): the first span
    first[1:] = (np.diff(clip) != 0) | (np.diff(frame) != 0) | (np.diff(codes[span]) != 0)
    clip, frame, span, seconds, at = (a[first] for a in (clip, frame, span, seconds, at))
    first_frame = np.array([int(r.global_first_frame or 0) for r in clips], np.int64)
    return pa.table({
        "recording": pa.array([r.recording for r in clips], pa.string()).take(clip),
        "clip_index": np.array([r.clip_index for r in clips], np.int32)[clip],
        "frame": frame.astype(np.int64), "global_frame": first_frame[clip] + frame,
        "time_s": seconds, "recording_time_s": at / _US,
        "label": pa.array(names.tolist(), pa.string()).take(codes[span]),
        "span_id": spans["span_id"].to_numpy()[span],
    }, schema=FRAME_LABEL_SCHEMA)


def frame_labels_uri(out_uri: str, recipe: Recipe, spans_uri: str,
                     labels_path: str | None = None) -> dict[str, Any]:
    """Spans file -> ``OUT/spans.parquet`` and ``OUT/frame_labels.parquet`` (each atomic);
    labels from ``labels_path`` or else the recipe's labels file. Returns a summary."""
    from tasks.store.items import is_converted
    from tasks.store.items import ITEMS_FILE, read_records
    from tasks.media.webm import open_webm
    from tasks.store.storage import open_location

    labels_path = labels_path or recipe.labels.file
    out = open_location(out_uri, recipe.storage)
    spans = load_spans(spans_uri, load_label_tree(labels_path) if labels_path else None,
                       ReviewVideos(out))
    records = read_records(out)
    if not records:
        raise SpanError(f"{out.url(out.path(ITEMS_FILE))} not found: convert the dataset first")
    wanted = set(spans["recording"].to_pylist())
    timelines, unconverted = {}, []
    for record in records:
        if record.recording not in wanted:
            continue
        if not is_converted(record):
            unconverted.append(f"{record.recording}/{record.clip_name}")
            continue
        with open_webm(out, record) as reader:  # demuxed only: no frame is decoded
            timelines[(record.recording, record.clip_index)] = reader.timeline
    table = frame_labels(spans, records, timelines)
    spans_path, labels_out = out.path(SPANS_FILE), out.path(FRAME_LABELS_FILE)
    write_table(out, spans_path, spans)
    write_table(out, labels_out, table)
    used = set(table["span_id"].to_pylist())  # a span may give no row: outside every
    # converted frame, or covered wholly by an earlier span of its label
    return {"spans": spans.num_rows, "frame_labels": table.num_rows,
            "spans_without_rows": [i for i in spans["span_id"].to_pylist() if i not in used],
            "unconverted_clips": unconverted,
            "spans_uri": out.url(spans_path), "frame_labels_uri": out.url(labels_out)}


__all__ = ["SPAN_COLUMNS", "FRAME_LABEL_COLUMNS", "SPAN_SCHEMA", "FRAME_LABEL_SCHEMA",
           "SpanError", "load_spans", "frame_labels", "frame_labels_uri"]
