"""Our own annotations JSON; also the fixtures the other format tests share (dense tracks,
their keyframes, the round-trip check)."""

from __future__ import annotations

import json
from fractions import Fraction

import jsonschema
import numpy as np
import pyarrow as pa
import pytest

from tasks.formats import native
from tasks.formats.base import ClipInfo
from tasks.errors import FormatError
from tasks.annotations.keyframes import (BOX, KEYFRAME_SCHEMA, attributes_json, check_keyframes,
                             compare_states, expand, normalise_dense, sort_tracks, track_starts)
from tasks.store.tables import TRACK_SCHEMA

FPS = Fraction(30000, 1001)


def make_clip(frames: int = 150, recording: str = "cam", clip_index: int = 3) -> ClipInfo:
    # Decoded timestamps that do not start at 0, so a reader that uses frame / fps is caught.
    times = 0.0334 + np.arange(frames) * float(1 / FPS)
    return ClipInfo(recording, clip_index, "10.mp4", f"s3://bucket/out/{recording}/10.webm",
                    640, 360, frames, FPS, times)


def dense_tracks(clip: ClipInfo, seed: int = 0, *, attributes: bool = True,
                 jitter: float = 0.0, held: bool = False) -> pa.Table:
    """Tracks as `tasks.track.assemble` writes them (one row per frame), plus an ``attributes`` column
    when asked: random walks, piecewise linear between control points every 5 frames (so
    that keyframes there reproduce them), hidden ranges holding the last box, label and
    attribute changes, tracks that end early, last to the clip's end, last 1 or 2 frames.
    ``held``: boxes jump at the control points and hold between them (mode ``none``)."""
    rng = np.random.default_rng(seed)
    last = clip.frames - 1
    specs = [  # track id, first frame, last frame, hidden [a, b), {frame: label}
        (1, 0, last, (40, 55), {0: "tool/grasper", 70: "tool/scissors"}),
        (2, 7, 93, (20, 23), {7: "person", 30: "tool/grasper", 61: "person"}),
        (3, 33, last, None, {33: "person"}),
        (4, 50, 51, None, {50: "tool/scissors"}),
        (5, 120, 120, None, {120: "person"}),
        (6, 12, 80, (13, 15), {12: "tool/grasper"}),
    ]
    parts = []
    for track_id, first, end, hidden_range, labels in specs:
        frames = np.arange(first, end + 1)
        knots = np.arange(first, end + 6, 5)
        centre = np.cumsum(rng.normal(0, 6, (len(knots), 2)), axis=0) + rng.uniform(100, 300, 2)
        size = np.clip(np.cumsum(rng.normal(0, 2, (len(knots), 2)), axis=0) + 40, 8, None)
        ctl = np.column_stack([centre - size / 2, centre + size / 2])
        box = (ctl[(frames - first) // 5] if held else
               np.column_stack([np.interp(frames, knots, ctl[:, c]) for c in range(4)]))
        box += rng.uniform(-jitter, jitter, box.shape)
        hidden = np.zeros(len(frames), bool)
        if hidden_range:
            a, b = hidden_range
            hidden[a - first:b - first] = True
            box[a - first:b - first] = box[a - first - 1]  # a hidden frame keeps the last box
        change = sorted(labels)
        which = np.searchsorted(change, frames, side="right") - 1
        n = len(frames)
        parts.append({
            "recording": [clip.recording] * n, "clip_index": [clip.clip_index] * n,
            "frame": frames, "global_frame": frames, "time_s": clip.times_s[frames],
            "label": [labels[change[w]] for w in which], "model_label": ["m"] * n,
            "score": rng.uniform(0.3, 1.0, n), **{c: box[:, i] for i, c in enumerate(BOX)},
            "track_id": [track_id] * n, "hidden": hidden, "source": ["tracker"] * n,
            "attributes": [attributes_json({"phase": int(w), "tip": bool(w % 2)} if w else {})
                           for w in which]})
    table = pa.concat_tables([pa.table({k: v for k, v in p.items() if k != "attributes"},
                                       schema=TRACK_SCHEMA) for p in parts])
    if attributes:
        table = table.append_column("attributes", pa.array(
            [a for p in parts for a in p["attributes"]], pa.string()))
    return table


def standin_keyframes(dense: pa.Table, clip: ClipInfo, mode: str = "linear") -> pa.Table:
    """Keyframes of `dense_tracks` without the compactor: wherever anything changes (start,
    end, hidden, shown, the last visible frame before hidden, label or attributes) and on
    the 5-frame control points, which makes linear interpolation exact."""
    table = sort_tracks(dense)
    if "attributes" not in table.column_names:
        table = table.append_column("attributes", pa.array(["{}"] * table.num_rows))
    n = table.num_rows
    frame = table["frame"].to_numpy()
    hidden = table["hidden"].to_numpy(zero_copy_only=False)
    tag = np.array([f"{a}|{b}" for a, b in zip(table["label"].to_pylist(),
                                               table["attributes"].to_pylist())], object)
    first = np.zeros(n, bool)
    first[track_starts(table)] = True
    last = np.r_[first[1:], True]
    start_frame = frame[np.flatnonzero(first)][np.cumsum(first) - 1]
    before = np.r_[False, hidden[:-1]]
    conditions = [first, last, hidden & ~before, ~hidden & before & ~first,
                  np.r_[False, tag[1:] != tag[:-1]] & ~first,
                  (np.r_[hidden[1:], False] & ~hidden & ~last) | ((frame - start_frame) % 5 == 0)]
    kind = np.select(conditions, ["start", "end", "hidden", "shown", "label", "compacted"], "")
    keep = kind != ""
    if mode == "none":  # held boxes: a keyframe wherever the box changes
        box = np.column_stack([table[c].to_numpy() for c in BOX])
        moved = np.r_[True, (box[1:] != box[:-1]).any(axis=1)] & ~hidden
        kind = np.where(~keep & moved, "compacted", kind)
        keep |= moved
    end = table["frame"].to_numpy()[np.r_[np.flatnonzero(last)]]
    track_end = np.repeat(end, np.diff(np.r_[np.flatnonzero(first), n]))
    rows = table.filter(pa.array(keep))
    end_frame = [None if e == clip.frames - 1 else int(e) for e in track_end[keep]]
    return pa.table({
        **{name: rows[name] for name in ("recording", "clip_index", "track_id", "frame",
                                         "global_frame", "time_s", "label", *BOX, "hidden")},
        "kind": kind[keep], "mode": [mode] * rows.num_rows, "end_frame": end_frame,
        "attributes": rows["attributes"], "source": rows["source"], "score": rows["score"],
    }, schema=KEYFRAME_SCHEMA)


def compacted(dense: pa.Table, clip: ClipInfo, max_error_px: float) -> pa.Table:
    """The pipeline's compaction (`tasks.compact.algorithm`), or the stand-in before it exists."""
    try:
        from tasks.compact.algorithm import compact_tracks
    except ImportError:
        return standin_keyframes(dense, clip)
    return compact_tracks(dense, max_error_px=max_error_px)


def clip_frames(clip: ClipInfo) -> dict[tuple[str, int], int]:
    return {(clip.recording, clip.clip_index): clip.frames}


def assert_round_trip(keyframes: pa.Table, dense: pa.Table, clip: ClipInfo, write, read, *,
                      precision: float, tolerance: float = 0.0) -> pa.Table:
    """expand(read(write(kf))) equals expand(kf) within the format's precision and the dense
    input within the compaction tolerance plus that precision; returns what was read."""
    back = read(write(keyframes, clip), clip)
    check_keyframes(back)
    assert back.schema == KEYFRAME_SCHEMA
    assert set(back["recording"].to_pylist()) <= {clip.recording}
    assert back["time_s"].to_pylist() == [clip.time_of(f) for f in back["frame"].to_pylist()]
    frames = clip_frames(clip)
    assert compare_states(expand(keyframes, frames), expand(back, frames),
                          max_error_px=precision) == []
    assert compare_states(normalise_dense(dense), expand(back, frames),
                          max_error_px=tolerance + precision) == []
    return back


@pytest.fixture
def clip() -> ClipInfo:
    return make_clip()


@pytest.fixture
def keyframes(clip) -> pa.Table:
    return standin_keyframes(dense_tracks(clip), clip)


def test_stand_in_keyframes_reproduce_the_dense_tracks(clip):
    for mode in ("linear", "none"):
        dense = dense_tracks(clip, seed=3, held=mode == "none")
        kf = standin_keyframes(dense, clip, mode)
        check_keyframes(kf)
        assert compare_states(normalise_dense(dense), expand(kf, clip_frames(clip)),
                              max_error_px=1e-3) == []


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mode", ["linear", "none"])
def test_round_trip_is_exact(clip, seed, mode):
    dense = dense_tracks(clip, seed, held=mode == "none")
    kf = standin_keyframes(dense, clip, mode)
    back = assert_round_trip(kf, dense, clip, native.write, native.read, precision=0.0,
                             tolerance=1e-3)
    assert back.equals(sort_tracks(kf))  # every column, float32 boxes and scores bit for bit


def test_round_trip_of_compacted_tracks_and_of_no_tracks(clip):
    dense = dense_tracks(clip, 5, jitter=0.2)
    assert_round_trip(compacted(dense, clip, 0.5), dense, clip, native.write, native.read,
                      precision=0.0, tolerance=0.5)
    empty = KEYFRAME_SCHEMA.empty_table()
    doc = json.loads(native.write(empty, clip))
    assert doc["tracks"] == [] and native.read(native.write(empty, clip), clip).num_rows == 0


def test_output_is_deterministic_and_valid(clip, keyframes):
    data = native.write(keyframes, clip)
    shuffled = keyframes.take(np.random.default_rng(0).permutation(keyframes.num_rows))
    assert native.write(shuffled, clip) == data
    doc = json.loads(data)
    jsonschema.Draft202012Validator.check_schema(native.json_schema())
    jsonschema.validate(doc, native.json_schema())
    assert doc["clip"]["fps"] == "30000/1001"
    assert [t["track_id"] for t in doc["tracks"]] == sorted({t["track_id"] for t in doc["tracks"]})
    # One keyframe per line, so that a reviewer's change is one line of a diff.
    assert data.decode().count('{"frame": ') == keyframes.num_rows
    assert len(data.decode().splitlines()) > keyframes.num_rows


def test_hand_typed_keyframes_take_defaults(clip):
    doc = json.loads(native.write(KEYFRAME_SCHEMA.empty_table(), clip))
    doc["tracks"] = [{"track_id": 9, "mode": "linear", "end_frame": None, "keyframes": [
        {"frame": 4, "label": "person", "box": [1, 2, 30, 40]},
        {"frame": 2, "label": "person", "box": [0, 0, 10, 10], "kind": "start"}]}]
    back = native.read(json.dumps(doc).encode(), clip)
    assert back["frame"].to_pylist() == [2, 4]
    assert back["kind"].to_pylist() == ["start", "human"]
    assert back["source"].to_pylist() == ["human", "human"]
    assert back["attributes"].to_pylist() == ["{}", "{}"]
    assert back["score"].null_count == 2 and back["hidden"].to_pylist() == [False, False]


def test_schema_markdown_lists_every_field():
    text = native.schema_markdown()
    schema = native.json_schema()
    for part, prefix in (("clip", "clip."), ("track", "tracks[]."),
                         ("keyframe", "tracks[].keyframes[].")):
        for name, spec in schema["$defs"][part]["properties"].items():
            assert f"`{prefix}{name}`" in text and spec["description"] in text
    assert "`tracks[].keyframes[].hidden` | boolean (optional, default false)" in text


def _edit(doc, path, value):
    *head, tail = path
    target = doc
    for key in head:
        target = target[key]
    if value is _DELETE:
        del target[tail]
    else:
        target[tail] = value


_DELETE = object()


@pytest.mark.parametrize("path, value, message", [
    (["version"], 2, "version 2 is newer than this reader, which reads version 1"),
    (["version"], "1", r"at \.version: 1 was expected"),
    (["schema"], "something/else", "not a preannotate annotations file"),
    (["tracks", 0, "keyframes", 1, "box"], _DELETE, r"tracks\[0\]\.keyframes\[1\]: 'box' is a "
     "required property"),
    (["tracks", 0, "keyframes", 1, "box"], [1, 2, 3], r"tracks\[0\]\.keyframes\[1\]\.box: .* is "
     "too short"),
    (["tracks", 0, "keyframes", 1, "box"], [1, 2, "x", 4], r"'x' is not of type 'number'"),
    (["tracks", 0, "keyframes", 1, "box"], [50, 2, 10, 40], r"tracks\[0\]\.keyframes\[1\] "
     r"\(track 1, frame \d+\): box \[50, 2, 10, 40\] has x2 < x1"),
    (["tracks", 0, "keyframes", 1, "frame"], 150, "frame is past the track's end 149"),
    (["tracks", 1, "end_frame"], 150, r"end_frame 150 is past the clip's last frame 149"),
    (["tracks", 1, "keyframes", 1, "frame"], 94, "frame is past the track's end 93"),
    (["tracks", 0, "keyframes", 1, "frame"], 0, "two keyframes on one frame"),
    (["tracks", 1, "track_id"], 1, r"tracks\[1\]: track_id 1 appears twice"),
    (["tracks", 0, "keyframes", 0, "hidden"], True, "first keyframe cannot be hidden"),
    (["tracks", 0, "keyframes", 0, "lable"], "x", "Additional properties are not allowed"),
    (["tracks", 0, "keyframes", 0, "label"], "", r"keyframes\[0\]\.label: '' should be non-empty"),
    (["tracks", 0, "keyframes", 0, "kind"], "guess", r"kind: 'guess' is not one of"),
    (["tracks", 0, "mode"], "cubic", r"tracks\[0\]\.mode: 'cubic' is not one of"),
    (["clip", "recording"], "other", r"file is for clip.recording = 'other', but this clip has "
     "'cam'"),
    (["clip", "frames"], 151, "clip.frames = 151"),
])
def test_bad_files_are_refused_with_their_place(clip, keyframes, path, value, message):
    doc = json.loads(native.write(keyframes, clip))
    _edit(doc, path, value)
    with pytest.raises(FormatError, match=message):
        native.read(json.dumps(doc).encode(), clip)


@pytest.mark.parametrize("data, message", [
    (b'{"schema": "preannotate/annotations", "version": 1,', "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "not a preannotate annotations file"),
])
def test_bad_json_is_refused(clip, data, message):
    with pytest.raises(FormatError, match=message):
        native.read(data, clip)
