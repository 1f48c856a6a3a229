"""MOTChallenge ground truth: one line per visible frame of every object, as CVAT's "MOT 1.1"
and datumaro's ``mot_seq_gt`` write it (datumaro ``plugins/data_formats/mot.py``, ``MotPath``):

    frame,id,x,y,w,h,not_ignored,class_id,visibility        (gt/gt.txt)
    one label per line; class_id 1 is the first line          (gt/labels.txt)

This is the MOT16/17 ground-truth layout (the 2-D MOT15 one has ``conf,-1,-1,-1`` in the last
four columns and no class); `motmetrics` (``mm.io.loadtxt(path, fmt="mot15-2D")``), TrackEval,
datumaro and CVAT read it. Frames are 1-based; ids are our track ids, which are 1-based already
(``tasks.track.assemble``). MOT has no keyframes, so the file is dense: every visible frame of
`expand(keyframes)`, sorted by frame and id; hidden frames are left out and a track ends with
its last visible frame. Boxes are our pixel edges, as CVAT and datumaro write them (motmetrics'
loader subtracts 1 from x and y, the MOTChallenge devkit's 1-based pixels, for ground truth and
hypotheses alike). Values are rounded to 4 decimals: a read box is within 0.0002 px. MOT keeps
neither attributes nor scores; ``not_ignored`` 0 is read as the attribute ``{"ignored": true}``
and written back from it, ``visibility`` is written 1.

The labels are a second file: `write_labels` gives it, and `read` names labels from it when it
is given; without it a label is its class id as text ("1", "2", ...). `read` returns a keyframe
on every listed frame, a ``hidden`` one on the first frame of each gap and ``shown`` after it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from tasks.formats.base import ClipInfo
from tasks.errors import FormatError
from tasks.formats.native import ROW_COLUMNS, keyframe_table
from tasks.annotations.keyframes import BOX, expand, sort_tracks

NAME = "mot"
EXTENSION = ".txt"
LABELS_FILE = "labels.txt"  # beside gt.txt
FIELDS = ["frame", "id", "x", "y", "w", "h", "not_ignored", "class_id", "visibility"]
_INTS = {"frame", "id", "not_ignored", "class_id"}
_IGNORED = '{"ignored":true}'


def label_list(keyframes: pa.Table, labels: Sequence[str] | None = None) -> list[str]:
    """The labels.txt lines: ``labels`` (e.g. the recipe's, so that every clip numbers them
    alike) or the clip's labels sorted; every label of ``keyframes`` must be in it."""
    used = set(keyframes["label"].to_pylist())
    names = list(labels) if labels is not None else sorted(used)
    bad = [n for n in names if not n or n != n.strip() or "\n" in n or "\r" in n]
    if bad or len(set(names)) < len(names):
        raise ValueError(f"labels must be unique, non-empty single lines without outer spaces: "
                         f"{bad or names}")
    if used - set(names):
        raise ValueError(f"labels {sorted(used - set(names))} are not in the labels list")
    return names


def write_labels(keyframes: pa.Table, clip: ClipInfo, labels: Sequence[str] | None = None) -> bytes:
    return "".join(f"{name}\n" for name in label_list(keyframes, labels)).encode("utf-8")


def write(keyframes: pa.Table, clip: ClipInfo, labels: Sequence[str] | None = None) -> bytes:
    names = label_list(keyframes, labels)
    if keyframes.num_rows and pc.min(keyframes["track_id"]).as_py() < 1:
        raise ValueError("MOT ids are 1-based: track ids must be >= 1")
    states = expand(keyframes, {(clip.recording, clip.clip_index): clip.frames})
    states = states.filter(pc.invert(states["hidden"]))
    states = states.sort_by([("frame", "ascending"), ("track_id", "ascending")])
    box = {c: states[c].to_numpy() for c in BOX}
    n = states.num_rows
    class_of = {name: i + 1 for i, name in enumerate(names)}
    attrs = states["attributes"].to_pylist()
    ignored = {a: json.loads(a).get("ignored") is True for a in set(attrs)}
    out = pa.table({
        "frame": pc.add(states["frame"], 1), "id": states["track_id"],
        "x": np.round(box["x1"], 4), "y": np.round(box["y1"], 4),
        "w": np.round(box["x2"] - box["x1"], 4), "h": np.round(box["y2"] - box["y1"], 4),
        "not_ignored": np.array([not ignored[a] for a in attrs], np.int64),
        "class_id": np.array([class_of[x] for x in states["label"].to_pylist()], np.int64),
        "visibility": np.ones(n, np.int64)})
    sink = io.BytesIO()
    pacsv.write_csv(out, sink, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return sink.getvalue()


def _line_of(data: bytes, row: int) -> int:
    """The 1-based line of a row (the CSV reader skips empty lines); for error messages."""
    return [n for n, line in enumerate(data.splitlines(), 1) if line][row]


def _column(raw: pa.Table, name: str, data: bytes) -> np.ndarray:
    """One column as numbers; the first bad value is named with its line."""
    text = pc.utf8_trim_whitespace(raw[name])
    kind = pa.int64() if name in _INTS else pa.float64()
    try:
        values = pc.cast(text, kind).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        convert = int if name in _INTS else float
        for row, value in enumerate(text.to_pylist()):
            try:
                convert(value)
            except (TypeError, ValueError):
                raise FormatError(f"MOT line {_line_of(data, row)}: {name} {value!r} is not "
                                  f"{'an integer' if name in _INTS else 'a number'}") from e
        raise FormatError(f"MOT column {name}: {e}") from e
    if kind == pa.float64() and not np.isfinite(values).all():
        line = _line_of(data, int(np.flatnonzero(~np.isfinite(values))[0]))
        raise FormatError(f"MOT line {line}: {name} is not a finite number")
    return values


def read(data: bytes, clip: ClipInfo, labels: bytes | None = None) -> pa.Table:
    names = None
    if labels is not None:
        try:
            # Every line counts, blank or not, as in datumaro's reader (class_id = line number).
            names = [line.strip() for line in labels.decode("utf-8").splitlines()]
        except UnicodeDecodeError as e:
            raise FormatError(f"{LABELS_FILE} is not UTF-8 text: {e}") from e
    try:
        raw = pacsv.read_csv(io.BytesIO(data), read_options=pacsv.ReadOptions(column_names=FIELDS),
                             convert_options=pacsv.ConvertOptions(
                                 column_types={f: pa.string() for f in FIELDS}))
    except pa.ArrowInvalid as e:
        if not data.strip():
            raw = pa.table({f: pa.array([], pa.string()) for f in FIELDS})
        else:
            raise FormatError(f"MOT file: expected {len(FIELDS)} comma-separated values per line "
                              f"({','.join(FIELDS)}): {e}") from e
    col = {name: _column(raw, name, data) for name in FIELDS}

    def bad(mask: np.ndarray, what: str) -> None:
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            raise FormatError(f"MOT line {_line_of(data, i)} (id {col['id'][i]}, frame "
                              f"{col['frame'][i]}): {what}")

    bad((col["frame"] < 1) | (col["frame"] > clip.frames),
        f"frame is outside the clip's 1 to {clip.frames} (MOT frames are 1-based)")
    bad((col["id"] < 1) | (col["id"] > 2**31 - 1), "id must be a positive 32-bit integer")
    bad((col["w"] < 0) | (col["h"] < 0), "negative width or height")
    bad(~np.isin(col["not_ignored"], [0, 1]), "not_ignored must be 0 or 1")
    bad((col["visibility"] < 0) | (col["visibility"] > 1), "visibility must be in [0, 1]")
    top = len(names) if names is not None else 2**31 - 1
    if names is not None:
        bad(np.isin(col["class_id"], [i + 1 for i, name in enumerate(names) if not name]),
            f"class_id names an empty line of {LABELS_FILE}")
    bad((col["class_id"] < 1) | (col["class_id"] > top), f"class_id must be 1 to {top}"
        + (f" (the lines of {LABELS_FILE})" if names is not None else ""))
    order = np.lexsort((col["frame"], col["id"]))
    col = {k: v[order] for k, v in col.items()}
    same = col["id"][1:] == col["id"][:-1]
    dup = np.flatnonzero(same & (col["frame"][1:] == col["frame"][:-1]))
    if dup.size:
        i = int(dup[0])
        raise FormatError(f"MOT: id {col['id'][i]} has two boxes on frame {col['frame'][i]}")
    return _keyframes(col, same, names, clip)


def _keyframes(col: dict[str, np.ndarray], same: np.ndarray, names: list[str] | None,
               clip: ClipInfo) -> pa.Table:
    """Every listed row a keyframe, plus a hidden one at the start of each gap in a track."""
    frame = col["frame"] - 1
    n = len(frame)
    if n == 0:
        return keyframe_table({name: [] for name in ROW_COLUMNS}, clip)
    gap = np.flatnonzero(same & (frame[1:] > frame[:-1] + 1))
    rows = np.r_[np.arange(n), gap]  # a gap's hidden keyframe holds the row before it
    hidden = np.r_[np.zeros(n, bool), np.ones(gap.size, bool)]
    at = np.r_[frame, frame[gap] + 1]
    order = np.lexsort((at, col["id"][rows]))
    rows, hidden, at = rows[order], hidden[order], at[order]
    track = col["id"][rows]
    first = np.r_[True, track[1:] != track[:-1]]
    last = np.r_[track[1:] != track[:-1], True]
    label = (np.array(names, object)[col["class_id"] - 1] if names is not None
             else col["class_id"].astype(str).astype(object))[rows]
    attrs = np.where(col["not_ignored"][rows] == 0, _IGNORED, "{}").astype(object)
    changed = np.r_[False, (label[1:] != label[:-1]) | (attrs[1:] != attrs[:-1])] & ~first
    after_hidden = np.r_[False, hidden[:-1]] & ~first
    kind = np.select([first, last, hidden, after_hidden, changed],
                     ["start", "end", "hidden", "shown", "label"], "compacted")
    ends = {t: f for t, f in zip(track[last].tolist(), at[last].tolist())}
    end = [None if ends[t] == clip.frames - 1 else ends[t] for t in track.tolist()]
    x1, y1 = col["x"][rows], col["y"][rows]
    table = keyframe_table({
        "track_id": track.tolist(), "frame": at.tolist(), "label": label.tolist(),
        "x1": x1.tolist(), "y1": y1.tolist(), "x2": (x1 + col["w"][rows]).tolist(),
        "y2": (y1 + col["h"][rows]).tolist(), "hidden": hidden.tolist(), "kind": kind.tolist(),
        "mode": ["linear"] * len(rows), "end_frame": end, "attributes": attrs.tolist(),
        "source": ["interpolated"] * len(rows), "score": [None] * len(rows)}, clip)
    return sort_tracks(table)
