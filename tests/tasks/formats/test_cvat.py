"""CVAT for video 1.1 XML: round trips (keyframes, and dense tracks through compaction), the
file as CVAT writes it, datumaro reading it (peer environment), reviewer files, bad input.

Also holds the fixtures the Label Studio tests share: a clip and dense tracks."""

from __future__ import annotations

import json
import tempfile
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tasks.compact.algorithm import compact_tracks
from tasks.formats import cvat
from tasks.formats.base import ClipInfo
from tasks.errors import FormatError
from tasks.annotations.keyframes import (KEYFRAME_SCHEMA, attributes_json, compare_states, expand,
                             normalise_dense)
from tasks.store.tables import TRACK_SCHEMA
from tests.peer import run_peer

CLIP = ClipInfo("rec-01", 3, "10.mp4", "s3://bucket/out/rec-01/10.webm", 640, 480, 90,
                Fraction(30000, 1001), np.arange(90) * 1001 / 30000 + 0.5)
CLIP_FRAMES = {(CLIP.recording, CLIP.clip_index): CLIP.frames}
COMPACT_PX = 0.25  # compaction tolerance of the dense round trips
SNIPPETS = Path(__file__).parent / "peer_snippets"


def dense_tracks(seed: int, *, change_while_hidden: bool = True) -> pa.Table:
    """Random walks with jitter: tracks ending before the clip's end and one lasting to it,
    hidden ranges, label and attribute changes (optionally while hidden), a one-frame run."""
    rng = np.random.default_rng(seed)
    hidden_change = 46 if change_while_hidden else 55
    specs = [  # track, start, end, hidden ranges, {frame: label}, {frame: attributes}
        (1, 0, 89, [(30, 38)], {0: "car", 50: "truck"}, {0: {}, 60: {"state": "moving"}}),
        (2, 5, 70, [(12, 15), (40, 52)], {5: "person", hidden_change: "cyclist"},
         {5: {"moving": True}, hidden_change - 1: {"moving": False}}),
        (3, 20, 21, [], {20: "person"}, {20: {}}),
        (4, 60, 60, [], {60: "car"}, {60: {"state": "parked"}}),
        (5, 10, 80, [], {10: "car", 30: "bus", 31: "car"}, {10: {}})]
    rows = []
    for track, start, end, hidden_ranges, labels, attributes in specs:
        n = end - start + 1
        centre = np.cumsum(np.cumsum(rng.normal(0, 0.08, (n, 2)), axis=0), axis=0)
        centre = np.clip(centre + rng.uniform(150, 450, 2), 60, 400)
        size = np.clip(60 + np.cumsum(rng.normal(0, 0.3, (n, 2)), axis=0), 20, 110)
        boxes = np.column_stack([centre - size / 2, centre + size / 2])
        boxes += rng.normal(0, 0.15, boxes.shape)
        label, attrs, last = None, None, None
        for i, frame in enumerate(range(start, end + 1)):
            label, attrs = labels.get(frame, label), attributes.get(frame, attrs)
            hidden = any(a <= frame < b for a, b in hidden_ranges)
            last = last if hidden else boxes[i]
            rows.append({
                "recording": CLIP.recording, "clip_index": CLIP.clip_index, "frame": frame,
                "global_frame": 1000 + frame, "time_s": float(CLIP.times_s[frame]),
                "label": label, "model_label": label, "score": 0.9, "x1": last[0],
                "y1": last[1], "x2": last[2], "y2": last[3], "track_id": track,
                "hidden": hidden, "source": "tracker", "attributes": attributes_json(attrs)})
    schema = TRACK_SCHEMA.append(pa.field("attributes", pa.string()))
    return pa.Table.from_pylist(rows, schema=schema)


def keyframes(rows: list[dict]) -> pa.Table:
    """A keyframes table from short rows (defaults for the columns they leave out)."""
    full = [{"recording": CLIP.recording, "clip_index": CLIP.clip_index, "global_frame": r["frame"],
             "time_s": None, "label": "car", "hidden": False, "kind": "compacted",
             "mode": "linear", "end_frame": None, "attributes": "{}", "source": "tracker",
             "score": 0.5, **r} for r in rows]
    return pa.Table.from_pylist(full, schema=KEYFRAME_SCHEMA)


def box(x: float, y: float, w: float = 40, h: float = 30) -> dict:
    return {"x1": x, "y1": y, "x2": x + w, "y2": y + h}


HAND = keyframes([  # linear and held tracks, hidden ranges, label and attribute changes
    {"track_id": 7, "frame": 2, "end_frame": 40, **box(10, 10), "kind": "start"},
    {"track_id": 7, "frame": 9, "end_frame": 40, **box(31.337, 12.5)},
    {"track_id": 7, "frame": 12, "end_frame": 40, **box(40, 14), "hidden": True},
    {"track_id": 7, "frame": 15, "end_frame": 40, **box(40, 14), "hidden": True,
     "label": "truck", "attributes": '{"n":3,"ok":true,"r":0.25,"s":"x y"}'},
    {"track_id": 7, "frame": 20, "end_frame": 40, **box(60, 20), "label": "truck",
     "attributes": '{"n":3,"ok":true,"r":0.25,"s":"x y"}'},
    {"track_id": 7, "frame": 30, "end_frame": 40, **box(80, 25), "label": "bus",
     "attributes": '{"n":4,"ok":false,"r":1.5,"s":""}'},
    {"track_id": 9, "frame": 0, **box(300, 200), "mode": "none"},
    {"track_id": 9, "frame": 10, **box(310, 205), "mode": "none"},
    {"track_id": 9, "frame": 11, **box(310, 205), "mode": "none", "hidden": True},
    {"track_id": 9, "frame": 50, **box(330, 215), "mode": "none"},
    {"track_id": 11, "frame": 88, **box(600, 400), "end_frame": 88},
    {"track_id": 13, "frame": 60, **box(500, 50), "end_frame": 75},
    {"track_id": 13, "frame": 65, **box(520, 60), "end_frame": 75, "hidden": True,
     "label": "truck"},
    {"track_id": 13, "frame": 70, **box(540, 70), "end_frame": 75, "label": "truck"}])


def states(table: pa.Table) -> pa.Table:
    return expand(table, CLIP_FRAMES)


@pytest.mark.parametrize("table", [HAND, compact_tracks(dense_tracks(1), max_error_px=COMPACT_PX)],
                         ids=["hand", "compacted"])
def test_round_trip_keyframes(table):
    back = cvat.read(cvat.write(table, CLIP), CLIP)
    assert compare_states(states(table), states(back), max_error_px=cvat.PRECISION_PX) == []
    assert set(back["kind"].to_pylist()) <= {"start", "end", "hidden", "shown", "label",
                                              "compacted"}
    assert back["time_s"].to_pylist() == [CLIP.time_of(f) for f in back["frame"].to_pylist()]


@pytest.mark.parametrize("seed", [2, 3])
def test_round_trip_from_dense_tracks(seed):
    dense = dense_tracks(seed)
    back = cvat.read(cvat.write(compact_tracks(dense, max_error_px=COMPACT_PX), CLIP), CLIP)
    assert compare_states(normalise_dense(dense), states(back),
                          max_error_px=COMPACT_PX + cvat.PRECISION_PX) == []


def test_the_file_is_what_cvat_writes():
    data = cvat.write(HAND, CLIP)
    root = ET.fromstring(data)
    task = root.find("meta/task")
    assert root.findtext("version") == "1.1" and task.findtext("mode") == "interpolation"
    assert (task.findtext("size"), task.findtext("stop_frame")) == ("90", "89")
    assert (task.findtext("original_size/width"), task.findtext("source")) == ("640", "10.webm")
    truck = {a.findtext("name"): a.findtext("input_type")
             for a in task.find("labels").iter("attribute")
             if a.findtext("name") != cvat.TRACK_ATTRIBUTE}
    assert truck == {"n": "number", "ok": "checkbox", "r": "number", "s": "text"}
    tracks = root.findall("track")
    assert [t.get("id") for t in tracks] == [str(i) for i in range(len(tracks))]
    assert [t.get("label") for t in tracks] == ["car", "truck", "bus", "car", "car", "car",
                                                "truck"]
    expected = states(HAND)
    visible: dict[int, list[int]] = {}
    for t in tracks:
        boxes = t.findall("box")
        ours = {b.find(f"attribute[@name='{cvat.TRACK_ATTRIBUTE}']").text for b in boxes}
        assert len(ours) == 1
        visible.setdefault(int(ours.pop()), []).extend(
            int(b.get("frame")) for b in boxes if b.get("outside") == "0")
        frames = [int(b.get("frame")) for b in boxes]
        for b in boxes:  # 2 decimals, and outside boxes are keyframes
            assert all(len(b.get(c).split(".")[1]) == 2 for c in ("xtl", "ytl", "xbr", "ybr"))
            assert b.get("outside") == "0" or b.get("keyframe") == "1"
        # CVAT's reading: keyframe="0" boxes lie on the line between the keyframes around
        # them, or hold the last one; none follows an outside keyframe.
        key = [(f, b) for f, b in zip(frames, boxes) if b.get("keyframe") == "1"]
        for f, b in zip(frames, boxes):
            if b.get("keyframe") == "1":
                continue
            before = [k for k in key if k[0] < f][-1]
            after = [k for k in key if k[0] > f]
            assert before[1].get("outside") == "0"
            xy = lambda e: np.array([float(e.get(c)) for c in ("xtl", "ytl", "xbr", "ybr")])
            line = xy(before[1]) if not after else xy(before[1]) + (
                xy(after[0][1]) - xy(before[1])) * (f - before[0]) / (after[0][0] - before[0])
            assert np.abs(line - xy(b)).max() <= 2 * cvat.PRECISION_PX + 1e-9
    for track, frames in visible.items():  # every visible frame, once
        mine = expected.filter(pa.compute.equal(expected["track_id"], track))
        shown = [f for f, h in zip(mine["frame"].to_pylist(), mine["hidden"].to_pylist()) if not h]
        assert sorted(frames) == shown
    # Track 7 ends on 40: an outside keyframe on 41; track 9 lasts to the clip's end: none.
    last = tracks[2].findall("box")[-1]
    assert (last.get("frame"), last.get("outside")) == ("41", "1")
    assert tracks[3].findall("box")[-1].get("frame") == "89"
    assert cvat.write(HAND, CLIP) == data  # deterministic


def test_datumaro_returns_every_written_frame():
    dense = dense_tracks(4)
    data = cvat.write(compact_tracks(dense, max_error_px=COMPACT_PX), CLIP)
    # datumaro needs only the XML (no images folder, no frame count: `CvatBase._load_items`
    # names each frame's item frame_%06d and gives it a lazy image path).
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "10.xml").write_bytes(data)
        rows = run_peer((SNIPPETS / "cvat_datumaro.py").read_text(), folder)
    written = [(int(t.get("id")), int(b.get("frame")), b.get("outside") == "1",
                b.get("keyframe") == "1") for t in ET.fromstring(data).iter("track") for b in t]
    assert sorted((r["cvat_track"], r["frame"], r["outside"], r["keyframe"]) for r in rows) == \
        sorted(written)
    assert all(r["item"] == f"frame_{r['frame']:06d}" and r["type"] == "bbox" for r in rows)
    visible = {(r["attributes"][cvat.TRACK_ATTRIBUTE], r["frame"]) for r in rows
               if not r["outside"]}
    table = []
    for r in rows:
        track = r["attributes"].pop(cvat.TRACK_ATTRIBUTE)
        if r["outside"] and (track, r["frame"]) in visible:
            continue  # the outside keyframe closing a label's CVAT track where the next starts
        x, y, w, h = r["bbox"]
        table.append({"recording": CLIP.recording, "clip_index": CLIP.clip_index,
                      "track_id": int(track), "frame": r["frame"], "label": r["label"],
                      "x1": x, "y1": y, "x2": x + w, "y2": y + h, "hidden": r["outside"],
                      "attributes": attributes_json(r["attributes"])})
    found = normalise_dense(pa.Table.from_pylist(table))
    assert compare_states(normalise_dense(dense), found,
                          max_error_px=COMPACT_PX + cvat.PRECISION_PX) == []


REVIEWED = b"""<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta><task><id>12</id><name>rec-01 10</name><size>90</size><mode>interpolation</mode>
    <labels><label><name>car</name><color>#fa3253</color><type>rectangle</type><attributes>
      <attribute><name>preannotate_track</name><mutable>False</mutable>
        <input_type>text</input_type><default_value></default_value><values></values>
      </attribute></attributes></label></labels>
    <original_size><width>640</width><height>480</height></original_size>
    <source>10.webm</source></task><dumped>2025-01-01 10:00:00+00:00</dumped></meta>
  <track id="0" label="car" source="file">
    <box frame="0" keyframe="1" outside="0" occluded="0"
         xtl="10.00" ytl="10.00" xbr="50.00" ybr="40.00" z_order="0">
      <attribute name="preannotate_track">4</attribute></box>
    <box frame="1" keyframe="0" outside="0" occluded="1"
         xtl="10.00" ytl="10.00" xbr="50.00" ybr="40.00" z_order="0">
      <attribute name="preannotate_track">4</attribute></box>
    <box frame="2" keyframe="1" outside="1" occluded="0"
         xtl="10.00" ytl="10.00" xbr="50.00" ybr="40.00" z_order="0">
      <attribute name="preannotate_track">4</attribute></box>
  </track>
  <track id="1" label="car" source="manual">
    <box frame="10" keyframe="1" outside="0" occluded="0"
         xtl="100.00" ytl="100.00" xbr="150.00" ybr="140.00" z_order="0">
      <attribute name="preannotate_track"></attribute></box>
    <box frame="20" keyframe="1" outside="1" occluded="0"
         xtl="200.00" ytl="100.00" xbr="250.00" ybr="140.00" z_order="0">
      <attribute name="preannotate_track"></attribute></box>
  </track>
</annotations>
"""


def test_a_file_cvat_exported_after_review():
    back = cvat.read(REVIEWED, CLIP)
    assert back["track_id"].to_pylist() == [4, 5, 5]  # a reviewer's new track: the next id
    assert back["end_frame"].to_pylist() == [1, 19, 19]
    assert back["source"].to_pylist() == ["interpolated", "human", "human"]
    # CVAT interpolated frames 11..19 towards the outside keyframe's box: kept on frame 19.
    s = states(back).filter(pa.compute.equal(states(back)["track_id"], 5))
    assert s["x1"].to_pylist()[-1] == pytest.approx(100 + 100 * 9 / 10)
    assert cvat.read(REVIEWED, CLIP, labels=["car"]).num_rows == 3


def test_no_tracks():
    data = cvat.write(KEYFRAME_SCHEMA.empty_table(), CLIP)
    assert cvat.read(data, CLIP).num_rows == 0


def test_writer_refuses_what_cvat_cannot_hold():
    for attrs in ('{"outside":true}', '{"l":[1]}', '{"t":"a"}'):
        table = keyframes([{"track_id": 1, "frame": 0, **box(1, 1), "attributes": attrs},
                           {"track_id": 1, "frame": 5, **box(1, 1), "attributes": '{"t":1}'}])
        with pytest.raises(FormatError, match="attribute"):
            cvat.write(table, CLIP)
    with pytest.raises(ValueError, match="ends after"):
        cvat.write(keyframes([{"track_id": 1, "frame": 0, **box(1, 1), "end_frame": 90}]), CLIP)
    other = keyframes([{"track_id": 1, "frame": 0, **box(1, 1), "clip_index": 4}])
    with pytest.raises(ValueError, match="given for clip"):
        cvat.write(other, CLIP)


def edited(xpath: str, **attrib: str | None) -> bytes:
    """REVIEWED with the attributes of the first element at ``xpath`` changed (None: removed)."""
    root = ET.fromstring(REVIEWED)
    el = root.find(xpath)
    for name, value in attrib.items():
        if value is None:
            el.attrib.pop(name)
        else:
            el.set(name, value)
    return ET.tostring(root)


BAD = [
    (b"<annotations><version>1.1</version>", "not well-formed"),
    (b'<!DOCTYPE a [<!ENTITY e "x">]><annotations/>', "DOCTYPE"),
    (REVIEWED.replace(b">1.1<", b">1.0<"), "not CVAT 1.1"),
    (REVIEWED.replace(b"<task>", b"<project>").replace(b"</task>", b"</project>"), "project"),
    (REVIEWED.replace(b"<width>640", b"<width>320"), "original_size"),
    (REVIEWED.replace(b"<size>90", b"<size>91"), "91 frames"),
    (REVIEWED.replace(b"</meta>", b'</meta><image id="0" name="a.png"/>'), "CVAT for images"),
    (edited("track", label="dog"), "label 'dog' is not one of"),
    (edited("track/box", xtl=None), "xtl=None is missing"),
    (edited("track/box", xtl="nan"), "not finite"),
    (edited("track/box", xbr="5"), "xbr < xtl"),
    (edited("track/box", frame="90"), "outside the clip's frames 0..89"),
    (edited("track/box", frame="x"), "frame='x'"),
    (edited("track/box[2]", frame="0"), "a second box"),
    (edited("track/box", keyframe=None), "must be 0 or 1"),
    (edited("track/box", outside="2"), "must be 0 or 1"),
    (edited("track/box[3]", keyframe="0").replace(b'frame="0" keyframe="1"',
                                                  b'frame="0" keyframe="0"'), "no keyframe"),
    (REVIEWED.replace(b">4<", b">four<", 1), "preannotate_track"),
    (REVIEWED.replace(b'"preannotate_track"></', b'"preannotate_track">4</').replace(
        b'frame="10"', b'frame="1"'), "overlap"),
    (REVIEWED.replace(b"<box frame=\"10\"", b"<polygon frame=\"10\"").replace(
        b"</box>\n    <box frame=\"20\"", b"</polygon>\n    <box frame=\"20\""), "only boxes"),
]


@pytest.mark.parametrize("data, message", BAD, ids=[m for _, m in BAD])
def test_bad_input_is_named(data, message):
    with pytest.raises(FormatError, match=message):
        cvat.read(data, CLIP)


def test_typed_attributes_are_checked():
    data = cvat.write(HAND, CLIP).replace(b'name="ok">true<', b'name="ok">maybe<')
    with pytest.raises(FormatError, match="checkbox value 'maybe'"):
        cvat.read(data, CLIP)
    with pytest.raises(FormatError, match=r"label 'car' is not one of \['bus'\]"):
        cvat.read(cvat.write(HAND, CLIP), CLIP, labels=["bus"])
    back = cvat.read(cvat.write(HAND, CLIP), CLIP)
    truck = back["attributes"][back["label"].to_pylist().index("truck")].as_py()
    assert json.loads(truck) == {"n": 3, "ok": True, "r": 0.25, "s": "x y"}
