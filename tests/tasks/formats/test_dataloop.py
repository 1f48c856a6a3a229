"""Dataloop video JSON: round trips, every frame as Dataloop's own rule (and dtlpy, where
installed) reads it, and a clear error for each kind of bad file."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tasks.formats import dataloop
from tasks.errors import FormatError
from tasks.annotations.keyframes import BOX, KEYFRAME_SCHEMA, compare_states, expand, sort_tracks
from tests.tasks.formats.test_native import (assert_round_trip, clip_frames, compacted,
                                             dense_tracks, make_clip, standin_keyframes)

ROOT = Path(__file__).resolve().parents[3]
PRECISION = 1e-3  # interpolated frames are float32 decimals; keyframes are exact


@pytest.fixture
def clip():
    return make_clip()


@pytest.fixture
def keyframes(clip):
    return standin_keyframes(dense_tracks(clip), clip)


def reflect(doc: dict) -> list[tuple]:
    """Every frame of every annotation by Dataloop's rule, written for this test from dtlpy's
    ``ReflectDict``: a frame without a snapshot is a copy of the last one before it.
    Rows: (objectId, frame, label, x1, y1, x2, y2, visible, attributes JSON)."""
    rows = []
    for ann in doc["annotations"]:
        system = ann["metadata"]["system"]
        snaps = {system["frame"]: {"label": ann["label"], "data": ann["coordinates"],
                                   "objectVisible": True,
                                   "namedAttributes": system.get("attributes")}}
        snaps.update({s["frame"]: s for s in system["snapshots_"]})
        state = None
        for f in range(system["frame"], system["endFrame"] + 1):
            state = snaps.get(f, state)
            (a, b) = state["data"]
            rows.append((int(system["objectId"]), f, state["label"], a["x"], a["y"], b["x"],
                         b["y"], state["objectVisible"],
                         json.dumps(state.get("namedAttributes") or {}, sort_keys=True,
                                    separators=(",", ":"))))
    return rows


def states_rows(keyframes, clip) -> list[tuple]:
    s = sort_tracks(expand(keyframes, clip_frames(clip)))
    cols = [s[c].to_pylist() for c in ("track_id", "frame", "label", *BOX, "hidden", "attributes")]
    return [(t, f, lab, x1, y1, x2, y2, not h, a) for t, f, lab, x1, y1, x2, y2, h, a in zip(*cols)]


def assert_same_frames(expected: list[tuple], found: list[tuple]) -> None:
    assert len(expected) == len(found)
    for e, f in zip(expected, found):
        assert (e[:3], e[7:]) == (f[:3], f[7:]), (e, f)
        if e[7]:  # boxes of hidden frames are not part of the state
            assert np.abs(np.subtract(e[3:7], f[3:7])).max() <= PRECISION, (e, f)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("mode", ["linear", "none"])
def test_round_trip(clip, seed, mode):
    dense = dense_tracks(clip, seed, held=mode == "none")
    kf = standin_keyframes(dense, clip, mode)
    back = assert_round_trip(kf, dense, clip, dataloop.write, dataloop.read, precision=PRECISION)
    # Folding gives back exactly our keyframes (they are the fixed snapshots) and their mode.
    assert back["frame"].to_pylist() == sort_tracks(kf)["frame"].to_pylist()
    modes = dict(zip(back["track_id"].to_pylist(), back["mode"].to_pylist()))
    assert {modes[t] for t in (1, 2, 3)} == {mode}  # 1- and 2-frame tracks are linear in both
    for c in BOX:  # keyframe boxes are exact
        assert back[c].equals(sort_tracks(kf)[c])


def test_round_trip_of_compacted_tracks(clip):
    dense = dense_tracks(clip, 4, jitter=0.2)
    assert_round_trip(compacted(dense, clip, 0.5), dense, clip, dataloop.write, dataloop.read,
                      precision=PRECISION, tolerance=0.5)


def test_every_frame_follows_dataloops_rule(clip, keyframes):
    doc = json.loads(dataloop.write(keyframes, clip))
    assert_same_frames(states_rows(keyframes, clip), reflect(doc))
    kf = sort_tracks(keyframes)
    for ann in doc["annotations"]:
        system = ann["metadata"]["system"]
        track = kf.filter(pa.compute.equal(kf["track_id"], int(system["objectId"])))
        ours = set(track["frame"].to_pylist())
        assert {s["frame"] for s in system["snapshots_"] if s["fixed"]} == ours - {system["frame"]}
        assert system["frame"] == min(ours)
        assert system["startTime"] == pytest.approx(system["frame"] / float(clip.fps))
        frames = [s["frame"] for s in system["snapshots_"]]
        assert frames == sorted(set(frames))
    assert doc["metadata"]["system"]["ffmpeg"]["nb_read_frames"] == clip.frames
    assert doc["filename"] == "/10.webm"


def _points(x1, y1, x2, y2) -> list[dict]:
    return [{"x": x1, "y": y1, "z": 0}, {"x": x2, "y": y2, "z": 0}]


def _snap(frame, box, fixed, visible=True) -> dict:
    return {"frame": frame, "fixed": fixed, "label": "person", "type": "box",
            "objectVisible": visible, "data": _points(*box)}


def test_files_from_other_writers_held_and_interpolated(clip):
    """Files shaped the ways Dataloop's model allows: fixed keyframes far apart (held between
    them) in one object, every frame an unfixed snapshot along a line in the other."""
    held = [_snap(10, (20, 20, 40, 40), True), _snap(30, (25, 20, 45, 40), True),
            _snap(35, (25, 20, 45, 40), True, False)]
    line = [_snap(f, (f, 0, f + 10, 10), f % 20 == 0) for f in range(1, 41)]
    doc = {"annotations": [
        {"type": "box", "label": "person", "coordinates": _points(0, 0, 10, 10),
         "metadata": {"system": {"frame": 0, "endFrame": 50, "objectId": "1",
                                 "snapshots_": held}}},
        {"type": "box", "label": "person", "coordinates": _points(0, 0, 10, 10),
         "metadata": {"system": {"frame": 0, "endFrame": 40, "objectId": "2", "automated": False,
                                 "snapshots_": line}}}]}
    back = dataloop.read(json.dumps(doc).encode(), clip)
    assert_same_frames(reflect(doc), states_rows(back, clip))
    one = back.filter(pa.compute.equal(back["track_id"], 1))
    assert one["mode"].to_pylist() == ["none"] * 4 and one["kind"][-1].as_py() == "hidden"
    two = back.filter(pa.compute.equal(back["track_id"], 2))
    assert two["frame"].to_pylist() == [0, 20, 40]  # the line folds onto its fixed snapshots
    assert two["source"].to_pylist() == ["human"] * 3 and two["score"].to_pylist() == [1.0] * 3


def test_points_in_any_order_and_no_tracks(clip):
    doc = {"annotations": [{"type": "box", "label": "a", "metadata": {"system": {
        "frame": 3, "endFrame": 9, "objectId": 4}},
        "coordinates": [{"x": 30, "y": 40, "z": 0}, {"x": 10, "y": 20, "z": 0}]}]}
    back = dataloop.read(json.dumps(doc).encode(), clip)  # dtlpy's Box takes min and max
    assert [back[c][0].as_py() for c in BOX] == [10, 20, 30, 40]
    assert back["end_frame"].to_pylist() == [9]
    empty = dataloop.write(KEYFRAME_SCHEMA.empty_table(), clip)
    assert dataloop.read(empty, clip).num_rows == 0


def _good(clip, keyframes) -> dict:
    return json.loads(dataloop.write(keyframes, clip))


def _snapshot(doc, i=0, j=0) -> dict:
    return doc["annotations"][i]["metadata"]["system"]["snapshots_"][j]


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("annotations"), r'expected \{"annotations": \[...\]\}'),
    (lambda d: d["annotations"][0].update(type="segment"), "only box annotations .* 'segment'"),
    (lambda d: d["annotations"][0].pop("coordinates"), r"annotations\[0\]\.coordinates: expected "
     "two points"),
    (lambda d: d["annotations"][0]["coordinates"][0].update(x="7"), "finite numbers"),
    (lambda d: d["annotations"][0]["coordinates"].append(30.0), "rotated box"),
    (lambda d: _snapshot(d).pop("data"), r"snapshots_\[0\]\.data: expected two points"),
    (lambda d: d["annotations"][0]["metadata"]["system"].pop("objectId"),
     r"system\.objectId: expected str or int"),
    (lambda d: d["annotations"][0]["metadata"]["system"].update(objectId="a7"),
     "objectId: expected a number"),
    (lambda d: d["annotations"][1]["metadata"]["system"].update(objectId="1"),
     r"annotations\[1\]: objectId 1 is used by two annotations"),
    (lambda d: d["annotations"][0]["metadata"]["system"].update(endFrame=150),
     "frames 0 to 150 are not inside the clip's 0 to 149"),
    (lambda d: d["annotations"][1]["metadata"]["system"].update(frame=-1), "frames -1 to"),
    (lambda d: d["annotations"][0]["metadata"]["system"].update(frame=True),
     r"system\.frame: expected int"),
    (lambda d: _snapshot(d, 1).update(frame=3),
     r"snapshots_\[0\] \(object 2\): frame 3 is not after the start frame 7"),
    (lambda d: _snapshot(d, 1).update(frame=94), "at most endFrame 93"),
    (lambda d: _snapshot(d, 0, 1).update(frame=_snapshot(d, 0, 0)["frame"]),
     r"\(object 1\): two snapshots on frame \d+"),
    (lambda d: _snapshot(d).pop("frame"), r"snapshots_\[0\]\.frame: expected int"),
    (lambda d: _snapshot(d).update(label=""), "empty label"),
    (lambda d: _snapshot(d).pop("label"), r"snapshots_\[0\]\.label: expected str"),
    (lambda d: _snapshot(d).update(objectVisible="no"), r"objectVisible: expected bool"),
    (lambda d: _snapshot(d).update(namedAttributes=[1]), "namedAttributes: expected dict"),
])
def test_bad_files_are_refused_with_their_place(clip, keyframes, edit, message):
    doc = _good(clip, keyframes)
    edit(doc)
    with pytest.raises(FormatError, match=message):
        dataloop.read(json.dumps(doc).encode(), clip)


@pytest.mark.parametrize("data, message", [(b'{"annotations": [', "not valid JSON"),
                                           (b'"text"', "expected")])
def test_bad_json_is_refused(clip, data, message):
    with pytest.raises(FormatError, match=message):
        dataloop.read(data, clip)


# --- dtlpy itself, where a virtual environment with it is at hand ----------------------------

DTLPY_SNIPPET = r"""
import copy, json, sys
import dtlpy as dl
from dtlpy.repositories.annotations import Annotations
doc = json.load(open(sys.argv[1]))
collection = dl.AnnotationCollection.from_json(copy.deepcopy(doc))
rows = []
for a in collection.annotations:
    for f in range(a.start_frame, a.end_frame + 1):
        s = a.frames[f]
        rows.append([int(a.object_id), f, s.label, float(s.left), float(s.top), float(s.right),
                     float(s.bottom), bool(s.object_visible),
                     json.dumps(s.attributes or {}, sort_keys=True, separators=(",", ":"))])
# What the upload path sends: it drops snapshots equal to the one before unless fixed.
kept = [len(Annotations._annotation_encoding(copy.deepcopy(a))["metadata"]["system"]["snapshots_"])
        for a in doc["annotations"]]
print(json.dumps({"count": len(collection.annotations), "rows": rows, "kept": kept}))
"""


def dtlpy_python() -> str:
    """dtlpy pins versions our environment cannot take (attrs), so it lives in its own
    virtual environment: PREANNOTATE_DTLPY_PYTHON or .venv-dtlpy (pip install dtlpy)."""
    path = Path(os.environ.get("PREANNOTATE_DTLPY_PYTHON") or ROOT / ".venv-dtlpy/bin/python")
    if not path.exists():
        message = (f"no dtlpy environment at {path}: bash tests/setup-peers.sh creates it")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return str(path)


def test_dtlpy_reads_every_frame_as_we_wrote_it(clip, tmp_path):
    python = dtlpy_python()
    kf = pa.concat_tables([
        standin_keyframes(dense_tracks(clip, 7), clip, "linear"),
        _shifted(standin_keyframes(dense_tracks(clip, 8, held=True), clip, "none"), 100)])
    doc = json.loads(dataloop.write(kf, clip))
    path = tmp_path / "item.json"
    path.write_text(json.dumps(doc))
    env = dict(os.environ, DATALOOP_PATH=str(tmp_path / "dataloop"))
    done = subprocess.run([python, "-c", DTLPY_SNIPPET, str(path)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["count"] == len(doc["annotations"])  # dtlpy drops annotations it cannot parse
    found = sorted(tuple(r) for r in out["rows"])
    assert_same_frames(states_rows(kf, clip), found)
    assert out["kept"] == [len(a["metadata"]["system"]["snapshots_"]) for a in doc["annotations"]]
    # And our reader agrees with dtlpy on every frame.
    assert compare_states(expand(kf, clip_frames(clip)),
                          expand(dataloop.read(path.read_bytes(), clip), clip_frames(clip)),
                          max_error_px=PRECISION) == []


def _shifted(table: pa.Table, offset: int) -> pa.Table:
    ids = pa.compute.add(table["track_id"], pa.scalar(offset, pa.int32()))
    return table.set_column(table.schema.get_field_index("track_id"), "track_id", ids)

