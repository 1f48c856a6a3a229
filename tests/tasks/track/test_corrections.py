"""Reviewers' corrections as plain logic: what counts as a person's keyframe, the audit of
what changed, and the dense tracks rebuilt from a review (a fake tracker stands in for the
real one here; `tests/flows/test_review_flow.py` runs the real pipeline)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tasks.store.record import ClipRecord
from tasks.compact.algorithm import compact_tracks
from tasks.formats.base import ClipInfo
from tasks.errors import FormatError
from tasks.annotations.keyframes import KEYFRAME_SCHEMA, sort_tracks
from tasks.track.corrections import MOVED_PX, correct_tracks, diff_review, replay_review, human_frames
from tasks.track.review_read import read_reviewed
from tasks.store.tables import TRACK_SCHEMA

FRAMES = 60
TIMES = np.arange(FRAMES) / 30.0


def _dense(track_id, frames, boxes, hidden=None, source="tracker"):
    n = len(frames)
    boxes = np.asarray(boxes, np.float64)
    return pa.table({
        "recording": ["cam"] * n, "clip_index": np.zeros(n, np.int32), "frame": frames,
        "global_frame": frames, "time_s": TIMES[frames], "label": ["person"] * n,
        "model_label": ["person"] * n, "score": np.full(n, 0.9, np.float32),
        "x1": boxes[:, 0], "y1": boxes[:, 1], "x2": boxes[:, 2], "y2": boxes[:, 3],
        "track_id": np.full(n, track_id, np.int32),
        "hidden": np.zeros(n, bool) if hidden is None else hidden, "source": [source] * n,
    }).cast(TRACK_SCHEMA)


def _machine():
    f1 = np.arange(0, 50)
    one = _dense(1, f1, [[10 + 2 * f, 20, 40 + 2 * f, 60] for f in f1])
    f2 = np.arange(10, 40)
    hidden = (f2 >= 20) & (f2 < 25)
    two = _dense(2, f2, [[200, 100, 230, 150]] * len(f2), hidden)
    return pa.concat_tables([one, two])


ANCHORS = {1: (np.array([0, 30]), np.array([[10, 20, 40, 60], [70, 20, 100, 60]], float)),
           2: (np.array([10, 30]), np.array([[200, 100, 230, 150]] * 2, float))}


def _baseline():
    return compact_tracks(_machine(), max_error_px=1.0)


def _with(table, rows):
    """``table`` plus keyframe rows given as dicts (other columns from the track's first row)."""
    extra = []
    for row in rows:
        like = table.filter(pc.equal(table["track_id"], row["track_id"])).slice(0, 1).to_pylist()
        base = like[0] if like else table.slice(0, 1).to_pylist()[0]
        extra.append({**base, "kind": "compacted", "source": "interpolated", "hidden": False, **row})
    return sort_tracks(pa.concat_tables([table, pa.Table.from_pylist(extra, KEYFRAME_SCHEMA)]))


def _fake_tracker(calls):
    """A tracker that holds the person's box, hides the object from frame 57 on."""
    def retrack(track_id, frame, box, stop, next_box):
        calls.append((track_id, frame, stop, next_box))
        frames = list(range(frame, stop))
        return {"frame": frames, "box": [box] * len(frames), "score": [0.8] * len(frames),
                "hidden": [f >= 57 for f in frames]}
    return retrack


def test_unchanged_result_changes_nothing():
    baseline = _baseline()
    review = diff_review(baseline, baseline, FRAMES)
    assert review.changes["keyframes"] == {"added": 0, "removed": 0, "moved": 0, "relabelled": 0}
    assert review.changes["tracks_added"] == [] and review.changes["tracks_deleted"] == []
    assert review.changes["human_keyframes"] == 0
    calls = []
    fixed, redone = correct_tracks(_machine(), ANCHORS, review.keyframes, review.scope, FRAMES,
                                   TIMES, 0, _fake_tracker(calls))
    assert calls == [] and redone["frames_retracked"] == 0 and redone["frames_from_review"] == 0
    assert fixed.drop(["attributes"]).equals(_machine().sort_by([("track_id", "ascending"),
                                                                ("frame", "ascending")]))


def test_rounding_is_not_a_move_but_a_real_move_is():
    baseline = _baseline()
    nudged = baseline.set_column(baseline.schema.get_field_index("x1"), "x1",
                                 pc.add(baseline["x1"], pa.scalar(MOVED_PX * 0.9, pa.float32())))
    assert diff_review(baseline, nudged, FRAMES).changes["human_keyframes"] == 0
    moved = _with(baseline, [{"track_id": 1, "frame": 20, "x1": 100.0, "y1": 20.0, "x2": 130.0, "y2": 60.0}])
    review = diff_review(baseline, moved, FRAMES)
    assert review.changes["human_keyframes"] == 1
    assert review.changes["tracks"]["1"]["added"] == [20]
    human = review.keyframes.filter(pc.equal(review.keyframes["source"], "human"))
    assert human["frame"].to_pylist() == [20] and human["kind"].to_pylist() == ["human"]


def test_move_delete_add_hide_relabel_apply_and_are_audited():
    baseline = _baseline()
    reviewed = _with(baseline, [
        {"track_id": 1, "frame": 20, "x1": 100.0, "y1": 20.0, "x2": 130.0, "y2": 60.0},
        {"track_id": 3, "frame": 5, "x1": 300.0, "y1": 10.0, "x2": 320.0, "y2": 30.0,
         "end_frame": 55, "label": "dog"},
        {"track_id": 3, "frame": 15, "x1": 310.0, "y1": 10.0, "x2": 330.0, "y2": 30.0,
         "end_frame": 55, "label": "dog"},
    ])
    reviewed = reviewed.filter(pc.not_equal(reviewed["track_id"], 2))  # a false positive
    # Track 1: hidden from frame 40 to 44 (a row hiding it, the box shown again at 45),
    # relabelled at 45, and ended at 47 instead of 49.
    reviewed = _with(reviewed, [
        {"track_id": 1, "frame": 40, "x1": 90.0, "y1": 20.0, "x2": 120.0, "y2": 60.0, "hidden": True},
        {"track_id": 1, "frame": 45, "x1": 100.0, "y1": 20.0, "x2": 130.0, "y2": 60.0, "label": "cyclist"}])
    reviewed = reviewed.filter(pc.invert(pc.and_(pc.equal(reviewed["track_id"], 1),
                                                 pc.greater(reviewed["frame"], 45))))
    one = pc.equal(reviewed["track_id"], 1)
    reviewed = reviewed.set_column(reviewed.schema.get_field_index("end_frame"), "end_frame",
                                   pc.if_else(one, pa.scalar(47, pa.int64()), reviewed["end_frame"]))
    review = diff_review(baseline, reviewed, FRAMES)
    changes = review.changes
    assert changes["tracks_deleted"] == [2] and changes["tracks_added"] == [3]
    assert changes["tracks"]["1"]["end"] == {"from": 49, "to": 47}
    assert 20 in changes["tracks"]["1"]["added"]
    assert {"frame": 45, "from": "person", "to": "cyclist"} in changes["tracks"]["1"].get("relabelled", []) \
        or 45 in changes["tracks"]["1"]["added"]
    assert changes["tracks"]["1"]["removed"]  # the machine's keyframe at the old end

    calls = []
    fixed, redone = correct_tracks(_machine(), ANCHORS, review.keyframes, review.scope, FRAMES,
                                   TIMES, 100, _fake_tracker(calls))
    # Tracker again from each human keyframe up to the next anchor or human keyframe.
    assert (1, 20, 30, [70.0, 20.0, 100.0, 60.0]) in calls
    assert (3, 5, 15, [310.0, 10.0, 330.0, 30.0]) in calls and (3, 15, 56, None) in calls
    t1 = fixed.filter(pc.equal(fixed["track_id"], 1))
    frames = t1["frame"].to_numpy()
    assert frames.min() == 0 and frames.max() == 47  # the reviewer's end
    box = np.column_stack([t1[c].to_numpy() for c in ("x1", "y1", "x2", "y2")])
    np.testing.assert_array_equal(box[20:30], [[100, 20, 130, 60]] * 10)  # retracked
    machine1 = _machine().filter(pc.equal(_machine()["track_id"], 1))
    mbox = np.column_stack([machine1[c].to_numpy() for c in ("x1", "y1", "x2", "y2")])
    np.testing.assert_array_equal(box[:20], mbox[:20])  # before the person's box: untouched
    np.testing.assert_array_equal(box[30:40], mbox[30:40])  # after the next anchor: untouched
    assert t1["source"][20].as_py() == "human"
    hidden = t1["hidden"].to_numpy()
    assert hidden[40:45].all() and not hidden[:40].any() and not hidden[45:].any()
    assert t1["label"].to_pylist()[45:] == ["cyclist"] * 3 and t1["label"][44].as_py() == "person"
    assert t1["global_frame"].to_pylist() == (frames + 100).tolist()
    assert set(fixed["track_id"].to_pylist()) == {1, 3}
    t3 = fixed.filter(pc.equal(fixed["track_id"], 3))
    assert t3["frame"].to_pylist() == list(range(5, 56))
    assert set(t3["label"].to_pylist()) == {"dog"}
    # The fake tracker lost it from 57; before that it held the box; frames 5..56 all visible.
    assert not t3["hidden"].to_numpy().any()
    assert redone["ranges"] == 3 and redone["tracks"] == 2

    # Compaction keeps the person's boxes exactly, as `human` keyframes.
    keyframes = compact_tracks(fixed, max_error_px=1.0)
    human = keyframes.filter(pc.equal(keyframes["source"], "human"))
    assert sorted(zip(human["track_id"].to_pylist(), human["frame"].to_pylist())) == [(1, 20), (3, 5), (3, 15)]
    row = human.filter(pc.equal(human["frame"], 20))
    assert [row[c][0].as_py() for c in ("x1", "y1", "x2", "y2")] == [100, 20, 130, 60]

    # A stored result replays to the same review.
    again = replay_review(reviewed, human_frames(review), review.scope, review.changes)
    assert again.keyframes.equals(review.keyframes)


def test_human_keyframes_survive_a_second_round():
    baseline = _baseline()
    moved = _with(baseline, [{"track_id": 1, "frame": 20, "x1": 100.0, "y1": 20.0, "x2": 130.0, "y2": 60.0}])
    first = diff_review(baseline, moved, FRAMES)
    fixed, _ = correct_tracks(_machine(), ANCHORS, first.keyframes, first.scope, FRAMES, TIMES, 0,
                              _fake_tracker([]))
    current = compact_tracks(fixed, max_error_px=1.0)
    second = diff_review(current, current, FRAMES)  # the reviewer accepts everything
    human = second.keyframes.filter(pc.equal(second.keyframes["source"], "human"))
    assert human["frame"].to_pylist() == [20]
    assert second.changes["keyframes"]["moved"] == 0


def test_track_scope_ignores_other_tracks():
    baseline = _baseline()
    edited = _with(baseline, [{"track_id": 2, "frame": 12, "x1": 150.0, "y1": 100.0, "x2": 180.0, "y2": 150.0},
                              {"track_id": 1, "frame": 20, "x1": 100.0, "y1": 20.0, "x2": 130.0, "y2": 60.0}])
    review = diff_review(baseline, edited, FRAMES, scope=[2])
    assert review.scope == (2,)
    assert set(review.keyframes["track_id"].to_pylist()) == {2}
    assert review.changes["ignored_tracks"] == [1]
    fixed, redone = correct_tracks(_machine(), ANCHORS, review.keyframes, review.scope, FRAMES,
                                   TIMES, 0, _fake_tracker([]))
    machine1 = _machine().filter(pc.equal(_machine()["track_id"], 1))
    assert fixed.filter(pc.equal(fixed["track_id"], 1)).drop(["attributes"]).equals(machine1)


def _clip():
    return ClipInfo(recording="cam", clip_index=0, name="1.mp4", video_uri="x.webm", width=640,
                    height=480, frames=FRAMES, fps=30, times_s=TIMES)


@pytest.mark.parametrize("fmt, data, message", [
    ("json", b"", "empty"),
    ("json", b"{not json", "JSON"),
    ("mot", b"1,1,1,1,1,1,1,1,1", "not one a review"),
    ("cvat", b"<annotations><track id='0' label='x'><box frame='99' xtl='1' ytl='1' xbr='5' ybr='5' "
     b"outside='0' occluded='0' keyframe='1'/></track></annotations>", "not CVAT 1.1"),
    ("labelstudio", b"[]", "."),
    ("dataloop", b"{\"annotations\": 3}", "."),
])
def test_bad_results_are_refused(fmt, data, message):
    with pytest.raises(FormatError, match=message):
        read_reviewed(data, fmt, _clip())


def test_unknown_label_is_refused():
    from tasks.formats import native

    data = native.write(_baseline(), _clip())
    with pytest.raises(FormatError, match="unknown label 'person'"):
        read_reviewed(data, "json", _clip(), labels={"car"})
    assert read_reviewed(data, "json", _clip(), labels={"person"}).num_rows == _baseline().num_rows


@pytest.mark.parametrize("fmt", ["json", "cvat", "labelstudio", "dataloop"])
def test_every_review_format_gives_the_same_review(fmt):
    """A reviewer's file in each format we export: the same move and deletion are found."""
    from tasks.formats import format_module

    baseline = _baseline()
    edited = _with(baseline, [{"track_id": 1, "frame": 20, "x1": 100.0, "y1": 20.0, "x2": 130.0, "y2": 60.0}])
    edited = edited.filter(pc.not_equal(edited["track_id"], 2))
    data = format_module(fmt).write(edited, _clip())
    review = diff_review(baseline, read_reviewed(data, fmt, _clip()), FRAMES)
    assert human_frames(review) == {"1": [20]}, fmt
    assert review.changes["tracks_deleted"] == [2] and review.changes["tracks_added"] == []
    assert review.changes["keyframes"]["moved"] == 0 and review.changes["tracks"]["1"]["added"] == [20]


def test_a_track_a_tool_added_never_takes_a_deleted_tracks_id():
    """CVAT numbers tracks without our id after the file's largest: with track 2 deleted, a
    new track would become 2 and inherit the false positive's boxes."""
    import dataclasses
    import xml.etree.ElementTree as ET

    from tasks.formats import cvat

    baseline = _baseline()
    edited = baseline.filter(pc.not_equal(baseline["track_id"], 2))
    edited = _with(edited, [{"track_id": 7, "frame": 12, "x1": 500.0, "y1": 10.0, "x2": 520.0,
                             "y2": 30.0, "end_frame": 35, "kind": "start", "source": "human"}])
    root = ET.fromstring(cvat.write(edited, _clip()))
    for track in root.iter("track"):  # the tool's new track carries no id of ours
        for box in track.iter("box"):
            for attribute in list(box):
                if attribute.get("name") == "preannotate_track" and attribute.text == "7":
                    box.remove(attribute)
    data = ET.tostring(root)
    naive = read_reviewed(data, "cvat", _clip())
    assert set(naive["track_id"].to_pylist()) == {1, 2}  # the trap
    clip = dataclasses.replace(_clip(), new_track_ids_from=3)
    review = diff_review(baseline, read_reviewed(data, "cvat", clip), FRAMES)
    assert review.changes["tracks_deleted"] == [2] and review.changes["tracks_added"] == [3]


def test_a_result_with_no_tracks_is_refused():
    empty = _baseline().slice(0, 0)
    with pytest.raises(FormatError, match="no tracks at all"):
        diff_review(_baseline(), empty, FRAMES)


def test_review_file_merges_tasks_and_keeps_its_settings(tmp_path):
    from tasks.track.review_store import load_review, save_review
    from tasks.store.storage import open_location

    out = open_location(str(tmp_path))
    record = ClipRecord(source_uri="/data/cam/1.mp4")
    baseline = _baseline()
    one = diff_review(baseline, baseline, FRAMES, scope=[1])
    two = diff_review(baseline, baseline.filter(pc.not_equal(baseline["track_id"], 2)), FRAMES, scope=[2])
    save_review(out, record, one, 5, "abc")
    save_review(out, record, two, 3)
    stored = load_review(out, record)
    assert stored.tasks == (5, 3) and stored.track_key == "abc" and stored.scope == (1, 2)
    assert set(stored.keyframes["track_id"].to_pylist()) == {1}  # track 2 deleted by task 3


_OUTSIDE = [([395.0, 0.0, 1e30, 1e30], r"lies outside the 640x480 frame"),
            ([10000.0, 10000.0, 10100.0, 10200.0], r"lies outside the 640x480 frame"),
            ([-500.0, 10.0, 40.0, 60.0], r"lies outside the 640x480 frame"),
            ([100.0, 20.0, 100.0, 60.0], r"is under a pixel wide or high")]
# Only formats that can carry NaN or infinity at all (JSON with its NaN extension).
_NOT_FINITE = [([float("nan"), 20.0, 130.0, 60.0], r"not finite|finite numbers"),
               ([100.0, 20.0, float("inf"), 60.0], r"not finite|finite numbers")]


@pytest.mark.parametrize("fmt, box, message",
                         [(f, b, m) for f in ("json", "cvat", "labelstudio", "dataloop")
                          for b, m in _OUTSIDE] +
                         [(f, b, m) for f in ("json", "dataloop") for b, m in _NOT_FINITE])
def test_a_box_outside_the_frame_or_not_a_box_is_refused(fmt, box, message):
    from tasks.formats import format_module

    edited = _with(_baseline(), [{"track_id": 1, "frame": 20, "x1": box[0], "y1": box[1],
                                  "x2": box[2], "y2": box[3]}])
    data = format_module(fmt).write(edited, _clip())
    with pytest.raises(FormatError, match=rf"(track 1,? frame \d+|coordinates).*({message})"):
        read_reviewed(data, fmt, _clip())


def test_a_box_a_hair_outside_the_frame_is_a_tools_rounding_and_kept():
    from tasks.formats import native

    edited = _with(_baseline(), [{"track_id": 1, "frame": 20, "x1": -1.5, "y1": 20.0,
                                  "x2": 641.0, "y2": 60.0}])
    table = read_reviewed(native.write(edited, _clip()), "json", _clip())
    assert table.num_rows == edited.num_rows


def test_a_score_that_is_not_a_probability_is_refused():
    import json as jsonlib

    from tasks.formats import native

    doc = jsonlib.loads(native.write(_baseline(), _clip()))
    doc["tracks"][0]["keyframes"][0]["score"] = float("nan")
    with pytest.raises(FormatError, match=r"score nan has a score outside \[0, 1\]"):
        read_reviewed(jsonlib.dumps(doc).encode(), "json", _clip())
