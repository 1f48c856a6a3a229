"""The annotation model: every edit changes exactly the frames it names (checked on `expand`'s
states before and after), refused edits say why, and tables round-trip."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.annotations.edits import Attributes, Keyframe, Track, tracks_from_table, tracks_to_table
from tasks.errors import EditError, PipelineError
from tasks.compact.algorithm import compact_tracks
from tasks.annotations.keyframes import KINDS, MODES, check_keyframes, expand
from tasks.labels import LabelTree
from tasks.store.tables import TRACK_SCHEMA

CLIP = 40
TOL = 1e-3  # px: a materialised box is stored as float32
UNIT = (0, 0, 1, 1)


def kf(frame, box, hidden=False, label="car", attrs=None, kind="compacted", source="tracker"):
    return Keyframe(frame, box, hidden, label, attrs or {}, kind, source, 0.5)


def sample(mode="linear", end=33):
    """Start 2, a box at 10, hidden 16..19, shown at 20 as a bus, a box at 26, end 33."""
    return Track("rec", 0, 7, mode, (
        kf(2, (0, 0, 10, 10), kind="start"), kf(10, (16, 8, 30, 24)),
        kf(16, (20, 8, 34, 24), hidden=True, kind="hidden"),
        kf(20, (40, 10, 50, 30), label="bus", attrs={"parked": False}, kind="shown"),
        kf(26, (52, 4, 70, 30.5))), end, CLIP)


def dense(track: Track) -> dict[int, tuple]:
    rows = track.states().to_pylist()
    return {r["frame"]: (r["label"], np.array([r[c] for c in ("x1", "y1", "x2", "y2")]),
                         r["hidden"], r["attributes"]) for r in rows}


def same(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and a[2] == b[2] and a[3] == b[3] and np.allclose(a[1], b[1], atol=TOL)


def changed(before: Track, after: Track) -> set[int]:
    """Frames whose state differs, plus frames only one of the tracks has."""
    b, a = dense(before), dense(after)
    return {f for f in b.keys() | a.keys() if f not in a or f not in b or not same(a[f], b[f])}


def round_trip(track: Track) -> Track:
    table = tracks_to_table([track])
    check_keyframes(table)
    (back,) = tracks_from_table(table, {(track.recording, track.clip_index): track.clip_frames})
    assert back == track
    return back


# --- the model ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_state_at_agrees_with_expand_on_every_frame(mode):
    track = sample(mode)
    states = track.states().to_pylist()
    assert [r["frame"] for r in states] == list(range(2, 34))
    for r in states:
        s = track.state_at(r["frame"])
        assert (s.label, s.hidden, s.attributes.json) == (r["label"], r["hidden"], r["attributes"])
        assert s.box == (r["x1"], r["y1"], r["x2"], r["y2"])  # bit for bit
    assert (track.start, track.label, track.last_frame) == (2, "car", 33)
    assert sample(mode, end=None).last_frame == CLIP - 1


def test_sample_semantics_linear_and_none():
    lin, held = dense(sample("linear")), dense(sample("none"))
    assert np.allclose(lin[6][1], (8, 4, 20, 17))  # halfway from 2 to 10
    assert np.allclose(held[6][1], (0, 0, 10, 10))
    assert lin[17][2] and np.allclose(lin[17][1], (20, 8, 34, 24))  # hidden holds the box
    assert lin[33][1].tolist() == [52, 4, 70, 30.5]  # held after the last keyframe


@pytest.mark.parametrize("bad, rule", [
    (dict(keyframes=(kf(3, UNIT, hidden=True),)), "first frame cannot be hidden at frame 3"),
    (dict(keyframes=(kf(3, UNIT), kf(3, UNIT))), "sorted, one per frame at frame 3"),
    (dict(keyframes=(kf(5, UNIT), kf(3, UNIT))), "sorted, one per frame at frame 3"),
    (dict(keyframes=(kf(3, UNIT), kf(9, UNIT)), end=8), "after the end 8 at frame 9"),
    (dict(end=1), "the end 1 is before the start at frame 2"),
    (dict(end=None, clip_frames=20), "past the clip's 20 frames at frame 26"),
    (dict(end=40), "past the clip's 40 frames at frame 40"),
    (dict(mode="spline"), "mode must be one of"),
    (dict(keyframes=(kf(3, (0, 0, math.inf, 1)),)), "not finite at frame 3"),
    (dict(keyframes=(kf(3, (5, 0, 1, 1)),)), "x2 < x1 or y2 < y1 at frame 3"),
    (dict(keyframes=(kf(3, UNIT, kind="guess"),)), "kind must be one of"),
    (dict(keyframes=(kf(3, UNIT, label=""),)), "label must be non-empty"),
    (dict(keyframes=()), "at least one keyframe"),
])
def test_invalid_tracks_are_refused_naming_rule_track_and_frame(bad, rule):
    fields = dict(recording="rec", clip_index=0, track_id=7, mode="linear",
                  keyframes=sample().keyframes, end=33, clip_frames=CLIP) | bad
    with pytest.raises(EditError, match="track 7 of 'rec' clip 0: .*" + rule.replace("(", r"\(")):
        Track(**fields)


def test_keyframes_normalise_and_compare():
    a = Keyframe(np.int64(3), [1, 2, 3.1, 4], np.bool_(False), "car", {"b": [1], "a": 1}, "start")
    b = Keyframe(3, (1, 2, np.float32(3.1), 4), False, "car", Attributes('{"a":1,"b":[1]}'),
                 "start")
    assert a == b and hash(a) == hash(b) and a.box[2] == float(np.float32(3.1))
    assert a.attributes == {"a": 1, "b": [1]} and a.attributes.json == '{"a":1,"b":[1]}'
    a.attributes["b"].append(2)  # a copy: the keyframe cannot be changed through it
    assert a.attributes["b"] == [1]
    assert isinstance(EditError("x"), PipelineError) and isinstance(EditError("x"), ValueError)
    with pytest.raises(EditError, match="4 numbers"):
        Keyframe(3, (1, 2, 3), False, "car", {}, "start")
    with pytest.raises(EditError, match="JSON object"):
        Attributes("[1, 2]")
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.frame = 4  # type: ignore[misc]


# --- tables ---------------------------------------------------------------------------------

def test_tables_round_trip_several_tracks_with_times_and_offsets():
    tracks = [sample("linear"), dataclasses.replace(sample("none", end=None), track_id=2),
              dataclasses.replace(sample(), recording="other", clip_index=3, clip_frames=50)]
    times = {("rec", 0): np.arange(CLIP) * 0.04 + 1.0}
    table = tracks_to_table(tracks, times_s=times, offsets={("other", 3): 1000})
    check_keyframes(table)
    assert table.num_rows == 15
    rows = table.to_pylist()
    assert rows[0]["time_s"] == pytest.approx(1.08) and rows[0]["global_frame"] == 2
    assert [r["time_s"] for r in rows if r["recording"] == "other"] == [None] * 5
    assert [r["global_frame"] for r in rows if r["recording"] == "other"] == [1002, 1010, 1016,
                                                                              1020, 1026]
    assert rows[5]["end_frame"] is None and rows[0]["end_frame"] == 33
    assert rows[3]["attributes"] == '{"parked":false}'
    clips = {("rec", 0): CLIP, ("other", 3): 50}
    back = tracks_from_table(table.take(np.random.default_rng(1).permutation(15)), clips)
    key = lambda t: (t.recording, t.clip_index, t.track_id)  # noqa: E731
    assert back == sorted(tracks, key=key)
    assert expand(tracks_to_table(back), clips).equals(expand(table, clips))
    with pytest.raises(EditError, match="no timestamp"):
        tracks_to_table(tracks, times_s={("rec", 0): np.zeros(10)})


def test_from_table_refuses_inconsistent_tracks():
    table = tracks_to_table([sample()])
    mode = table.schema.get_field_index("mode")
    mixed = table.set_column(mode, "mode", pa.array(["linear"] * 4 + ["none"]))
    with pytest.raises(EditError, match="track 7 of 'rec': mode differs"):
        tracks_from_table(mixed)
    with pytest.raises(EditError, match="nulls in \\['label'\\]"):
        tracks_from_table(table.set_column(table.schema.get_field_index("label"), "label",
                                           pa.array([None] * 5, pa.string())))
    with pytest.raises(EditError, match="first frame cannot be hidden"):
        tracks_from_table(table.set_column(table.schema.get_field_index("hidden"), "hidden",
                                           pa.array([True] * 5)))
    with pytest.raises(EditError, match="lacks columns \\['score'\\]"):
        tracks_from_table(table.drop_columns(["score"]))
    assert tracks_from_table(table.slice(0, 0)) == []


def test_from_table_handles_many_keyframes():
    rng = np.random.default_rng(0)
    n_tracks, per = 400, 50
    frame = np.tile(np.arange(per) * 3, n_tracks)
    box = rng.uniform(0, 100, (n_tracks * per, 2))
    table = pa.table({
        "recording": ["r"] * (n_tracks * per), "clip_index": np.zeros(n_tracks * per, np.int32),
        "track_id": np.repeat(np.arange(n_tracks, dtype=np.int32), per), "frame": frame,
        "global_frame": frame, "time_s": frame / 25.0,
        "label": rng.choice(["car", "bus"], n_tracks * per),
        "x1": box[:, 0], "y1": box[:, 1], "x2": box[:, 0] + 5, "y2": box[:, 1] + 5,
        "hidden": (np.arange(n_tracks * per) % per % 7) == 3,
        "kind": ["compacted"] * (n_tracks * per),
        "mode": ["linear"] * (n_tracks * per), "end_frame": np.full(n_tracks * per, 200),
        "attributes": ["{}"] * (n_tracks * per), "source": ["tracker"] * (n_tracks * per),
        "score": np.ones(n_tracks * per)})
    tracks = tracks_from_table(table)
    assert len(tracks) == n_tracks and all(len(t.keyframes) == per for t in tracks)
    again = tracks_to_table(tracks)
    assert again.drop_columns(["time_s"]).equals(
        table.cast(again.schema).drop_columns(["time_s"]))


def test_compacted_tracks_load_edit_and_write_back_exactly():
    """Compaction's output (the real input of these edits) round-trips column for column."""
    rng = np.random.default_rng(5)
    parts = []
    for track_id, (start, n) in enumerate([(0, 60), (12, 30), (5, 55)], 1):
        frame = np.arange(start, start + n)
        boxes = np.cumsum(rng.normal(0, 2, (n, 2)), axis=0) + 100
        hidden = (frame >= start + 20) & (frame < start + 26)
        label = np.where(frame < start + 40, "car", "truck")
        parts.append(pa.table({
            "recording": ["rec"] * n, "clip_index": [0] * n, "frame": frame,
            "global_frame": frame + 1000, "time_s": frame / 29.97, "label": label,
            "model_label": label, "score": np.full(n, 0.8, np.float32), "x1": boxes[:, 0],
            "y1": boxes[:, 1], "x2": boxes[:, 0] + 30, "y2": boxes[:, 1] + 20,
            "track_id": [track_id] * n, "hidden": hidden, "source": ["tracker"] * n},
        ).cast(TRACK_SCHEMA))
    keyframes = compact_tracks(pa.concat_tables(parts), max_error_px=1.0)
    clip = {("rec", 0): 60}
    tracks = tracks_from_table(keyframes, clip)
    assert [t.track_id for t in tracks] == [1, 2, 3] and tracks[1].end == 41
    back = tracks_to_table(tracks, times_s={("rec", 0): np.arange(60) / 29.97},
                           offsets={("rec", 0): 1000})
    assert back.equals(keyframes)
    edited = [t.hide(30).set_label("van", 35, ("range", 38)).move_box(10, (0, 0, 5, 5))
              if t.track_id == 1 else t for t in tracks]
    nxt = min(f for f in tracks[0].frames if f > 30)  # hidden from 30 until then
    assert changed(tracks[0], edited[0]) == set(range(30, nxt)) | set(range(35, 39)) | {10}
    check_keyframes(tracks_to_table(edited))
    assert expand(tracks_to_table(edited[1:]), clip).equals(
        expand(keyframes.filter(pc.field("track_id") > 1), clip))


# --- edits ----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_set_start_later_drops_earlier_frames_only(mode):
    before = sample(mode)
    after = before.set_start(7)
    assert changed(before, after) == set(range(2, 7))  # gone
    assert after.keyframes[0].frame == 7 and after.keyframes[0].kind == "start"
    assert after.frames == [7, 10, 16, 20, 26]
    drawn = before.set_start(7, box=(1, 2, 3, 4))
    assert changed(before, drawn) == set(range(2, 8))
    assert dense(drawn)[7][1].tolist() == [1, 2, 3, 4] and drawn.keyframes[0].source == "human"
    assert before.set_start(10).keyframes[0].kind == "start"  # a keyframe becomes the start


@pytest.mark.parametrize("mode", MODES)
def test_set_start_earlier_holds_the_start_box(mode):
    before = sample(mode)
    after = before.set_start(0)
    b, a = dense(before), dense(after)
    assert changed(before, after) == {0, 1}
    for f in (0, 1):
        assert same(a[f], b[2])
    assert [k.kind for k in after.keyframes][:2] == ["start", "human"]  # no longer the start
    drawn = before.set_start(0, box=(5, 5, 6, 6))
    d = dense(drawn)
    assert changed(before, drawn) == {0, 1} and d[0][1].tolist() == [5, 5, 6, 6]
    expected_1 = [5, 5, 6, 6] if mode == "none" else [2.5, 2.5, 8, 8]
    assert np.allclose(d[1][1], expected_1)


def test_set_start_refusals():
    track = sample()
    with pytest.raises(EditError, match=r"cannot start on a hidden frame \(show it first\) at "
                                        "frame 17"):
        track.set_start(17)
    with pytest.raises(EditError, match=r"within 0..33 \(the end\) at frame 34"):
        track.set_start(34)
    with pytest.raises(EditError, match="at frame -1"):
        track.set_start(-1)


@pytest.mark.parametrize("mode", MODES)
def test_set_end(mode):
    before = sample(mode)
    shorter = before.set_end(23)
    assert changed(before, shorter) == set(range(24, 34))
    assert shorter.end == 23 and shorter.keyframes[-1].frame == 23
    assert shorter.keyframes[-1].kind == "end" and shorter.keyframes[-1].source == "interpolated"
    assert before.set_end(18).keyframes[-1].hidden  # ends hidden, as the frame was
    longer = before.set_end(None)
    assert longer.end is None and changed(before, longer) == set(range(34, CLIP))
    assert all(same(dense(longer)[f], dense(before)[33]) for f in range(34, CLIP))
    assert shorter.set_end(None).keyframes[-1].kind == "human"  # no longer the end
    assert changed(shorter, shorter.set_end(30)) == set(range(24, 31))
    with pytest.raises(EditError, match="before the start 2 at frame 1"):
        before.set_end(1)
    with pytest.raises(EditError, match="clip's 40 frames at frame 40"):
        before.set_end(40)


@pytest.mark.parametrize("mode", MODES)
def test_hide_until_the_next_keyframe(mode):
    before = sample(mode)
    after = before.hide(5)
    assert changed(before, after) == set(range(5, 10))
    b, a = dense(before), dense(after)
    assert all(a[f][2] and np.allclose(a[f][1], b[5][1], atol=TOL) for f in range(5, 10))
    assert after.keyframes[1].kind == "hidden" and after.keyframes[2].kind == "shown"
    assert before.hide(10).frames == before.frames and changed(before, before.hide(10)) == set(
        range(10, 16))
    assert before.hide(18) is before  # already hidden
    with pytest.raises(EditError, match="first frame cannot be hidden .* at frame 2"):
        before.hide(2)
    with pytest.raises(EditError, match=r"outside the track \(2..33\) at frame 35"):
        before.hide(35)


@pytest.mark.parametrize("mode", MODES)
def test_show_until_the_next_keyframe(mode):
    before = sample(mode)
    after = before.show(18)
    assert changed(before, after) == {18, 19}
    a = dense(after)
    assert not a[18][2] and a[18][1].tolist() == [20, 8, 34, 24]
    assert after.keyframes[3].kind == "shown"
    drawn = before.show(16, box=(1, 1, 2, 2))
    assert changed(before, drawn) == {16, 17, 18, 19}
    assert dense(drawn)[16][1].tolist() == [1, 1, 2, 2]
    shown = next(k for k in drawn.keyframes if k.frame == 16)
    assert shown.kind == "human" and shown.source == "human"  # visible after a visible one
    assert before.show(12) is before
    assert changed(before, before.show(12, box=(1, 1, 2, 2))) == {12}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("frame", [2, 5, 9, 10, 11, 20, 27, 33])
def test_move_box_changes_that_frame_only(mode, frame):
    before = sample(mode)
    after = before.move_box(frame, (100, 100, 110, 120))
    assert changed(before, after) == {frame}
    assert dense(after)[frame][1].tolist() == [100, 100, 110, 120]
    moved = next(k for k in after.keyframes if k.frame == frame)
    assert moved.source == "human" and moved.score == 1.0
    assert moved.kind in ("start", "shown", "end", "human")


def test_move_box_refusals():
    with pytest.raises(EditError, match="cannot move a hidden box .* at frame 17"):
        sample().move_box(17, (0, 0, 1, 1))
    with pytest.raises(EditError, match="x2 < x1 or y2 < y1 at frame 5"):
        sample().move_box(5, (3, 0, 1, 1))


@pytest.mark.parametrize("mode", MODES)
def test_delete_keyframe_reinterpolates_between_neighbours(mode):
    before = sample(mode)
    after = before.delete_keyframe(10)
    assert changed(before, after) <= set(range(3, 16)) and changed(before, after)
    assert after.frames == [2, 16, 20, 26]
    with pytest.raises(EditError, match="start keyframe cannot be deleted .* at frame 2"):
        before.delete_keyframe(2)
    with pytest.raises(EditError, match="no keyframe to delete at frame 11"):
        before.delete_keyframe(11)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scope, frames", [
    ("next", range(5, 10)), (("range", 12), range(5, 13)), ("end", range(5, 34)),
    (("range", 33), range(5, 34))])
def test_set_label_scopes(mode, scope, frames):
    before = sample(mode)
    after = before.set_label("truck", 5, scope)
    b, a = dense(before), dense(after)
    assert changed(before, after) == set(frames)
    for f in frames:
        assert a[f][0] == "truck" and same(a[f], ("truck",) + b[f][1:])
    assert next(k for k in after.keyframes if k.frame == 5).kind == "label"
    if scope == ("range", 12):  # the old label resumes on 13
        assert next(k for k in after.keyframes if k.frame == 13).kind == "label"


def test_set_label_on_keyframes_and_refusals():
    before = sample()
    assert changed(before, before.set_label("truck", 20, "next")) == set(range(20, 26))
    assert changed(before, before.set_label("truck", 2, "next")) == set(range(2, 10))
    assert before.set_label("truck", 2, "end").label == "truck"
    assert before.set_label("car", 5, "next") is before  # nothing to change
    tree = LabelTree(("vehicle", "vehicle/car", "vehicle/bus"))
    relabelled = before.set_label("vehicle/bus", 5, "end", allowed=tree)
    assert relabelled.state_at(30).label == "vehicle/bus"
    with pytest.raises(EditError, match="'truck' is not an allowed label at frame 5"):
        before.set_label("truck", 5, "next", allowed={"car", "bus"})
    with pytest.raises(EditError, match="'boat' is not an allowed label"):
        before.set_label("boat", 5, "next", allowed=tree)
    with pytest.raises(EditError, match=r"a range must end within 5..33, got 34"):
        before.set_label("bus", 5, ("range", 34))
    with pytest.raises(EditError, match=r"a range must end within 5..33, got 4"):
        before.set_label("bus", 5, ("range", 4))
    with pytest.raises(EditError, match="scope must be"):
        before.set_label("bus", 5, "forever")
    with pytest.raises(EditError, match="outside the track"):
        before.set_label("bus", 1, "next")


@pytest.mark.parametrize("mode", MODES)
def test_set_attributes_merges_over_the_scope(mode):
    before = sample(mode)
    after = before.set_attributes({"occluded": True}, 12, "end")
    a = dense(after)
    assert changed(before, after) == set(range(12, 34))
    assert a[12][3] == '{"occluded":true}' and a[25][3] == '{"occluded":true,"parked":false}'
    removed = after.set_attributes({"occluded": None}, 22, ("range", 27))
    assert changed(after, removed) == set(range(22, 28))
    assert dense(removed)[22][3] == '{"parked":false}' and dense(removed)[28][3] == a[28][3]
    with pytest.raises(EditError, match="JSON object"):
        before.set_attributes({"x": object()}, 12, "end")


def test_edits_leave_the_original_untouched():
    before = sample()
    copy = sample()
    for edit in (lambda t: t.hide(5), lambda t: t.move_box(5, (0, 0, 1, 1)),
                 lambda t: t.set_label("x", 5, "end"), lambda t: t.set_end(20)):
        assert edit(before) != before
    assert before == copy and hash(before) == hash(copy)


def test_unknown_clip_length_refuses_edits_that_need_it():
    track = sample(end=None)
    track = dataclasses.replace(track, clip_frames=None)
    with pytest.raises(EditError, match="frame count is unknown"):
        track.hide(5)
    assert round_trip(track.set_end(30)).end == 30


# --- properties: random tracks, random edit sequences ----------------------------------------

LABELS = ["car", "bus", "van"]
ATTRS = [{}, {"parked": True}, {"parked": False, "colour": "red"}]


@st.composite
def tracks(draw):
    clip = draw(st.integers(2, 30))  # short clips, to reach their edges often
    start = draw(st.integers(0, clip - 1))
    end = draw(st.none() | st.integers(start, clip - 1))
    last = clip - 1 if end is None else end
    others = st.sets(st.integers(start, last), min_size=min(2, last - start + 1), max_size=8)
    frames = [start] + sorted(draw(others) - {start})
    coord = st.floats(0, 500, width=32, allow_subnormal=False)
    kfs = []
    for i, f in enumerate(frames):
        x, y, w, h = draw(coord), draw(coord), draw(coord), draw(coord)
        kfs.append(Keyframe(f, (x, y, x + w, y + h), i > 0 and draw(st.booleans()),
                            draw(st.sampled_from(LABELS)), draw(st.sampled_from(ATTRS)),
                            draw(st.sampled_from(list(KINDS))), "tracker", 0.7))
    return Track("rec", 1, 3, draw(st.sampled_from(MODES)), kfs, end, clip)


EDITS = ["set_start", "set_end", "hide", "show", "move_box", "delete_keyframe", "set_label",
         "set_attributes"]


def draw_edit(data, name: str, t: Track):
    """An edit with arguments drawn mostly inside the track, often on a keyframe, sometimes
    outside it (to be refused)."""
    inside = st.integers(t.start, t.last_frame)
    frame = st.one_of(inside, st.sampled_from(t.frames),
                      st.integers(t.start - 2, t.clip_frames + 1))
    box = st.none() | st.tuples(*[st.floats(0, 100, width=32, allow_subnormal=False)] * 2).map(
        lambda p: (p[0], p[1], p[0] + 10, p[1] + 5))
    scope = st.sampled_from(["next", "end"]) | st.tuples(st.just("range"), inside | frame)
    args = {"set_start": (frame, box), "set_end": (st.none() | frame,), "hide": (frame,),
            "show": (frame, box), "move_box": (frame, box.filter(bool)),
            "delete_keyframe": (frame,), "set_label": (st.sampled_from(LABELS), frame, scope),
            "set_attributes": (st.sampled_from([{"parked": True}, {"colour": None}]), frame, scope),
            }[name]
    return name, tuple(data.draw(a) for a in args)


def expect(name, args, t: Track, b: dict) -> tuple[set[int] | None, object]:
    """What the edit may change: (frames allowed to change, check of the new states), or
    (None, reason) when it must be refused."""
    last, start, kfs = t.last_frame, t.start, t.frames
    f = args[0] if name not in ("set_label", "set_attributes") else args[1]
    inside = f is not None and start <= f <= last
    nxt = next((k for k in kfs if f is not None and k > f), last + 1)
    if name == "set_start":
        if f < 0 or f > last or (f >= start and b[f][2]):
            return None, "refused"
        if f >= start:
            return set(range(start, f + (args[1] is not None))), None
        return set(range(f, start)), lambda a: all(
            a[g][0] == b[start][0] and not a[g][2] for g in range(f, start))
    if name == "set_end":
        if f is not None and (f < start or f >= t.clip_frames):
            return None, "refused"
        stop = t.clip_frames - 1 if f is None else f
        return set(range(min(stop, last) + 1, max(stop, last) + 1)), lambda a: all(
            same(a[g], b[last]) for g in range(last + 1, stop + 1))
    if not inside:
        return None, "refused"
    if name == "hide":
        if f == start:
            return None, "refused"
        return set(range(f, nxt)), lambda a: all(
            a[g][2] and np.allclose(a[g][1], b[f][1], atol=TOL) and a[g][0] == b[g][0]
            for g in range(f, nxt))
    if name == "show":
        if not b[f][2]:
            return ({f} if args[1] else set()), None
        return set(range(f, nxt)), lambda a: all(not a[g][2] for g in range(f, nxt))
    if name == "move_box":
        if b[f][2]:
            return None, "refused"
        return {f}, lambda a: np.allclose(a[f][1], args[1], atol=TOL) and not a[f][2]
    if name == "delete_keyframe":
        if f == start or f not in kfs:
            return None, "refused"
        prev = max(k for k in kfs if k < f)
        return set(range(prev + 1, nxt)), lambda a: all(
            a[g][0] == b[prev][0] and a[g][3] == b[prev][3] for g in range(prev + 1, nxt))
    scope = args[2]
    stop = {"next": nxt - 1, "end": last}.get(scope) if isinstance(scope, str) else scope[1]
    if not f <= stop <= last:
        return None, "refused"
    if name == "set_label":
        value = lambda g: (args[0], b[g][1], b[g][2], b[g][3])  # noqa: E731
    else:
        value = lambda g: (b[g][0], b[g][1], b[g][2], Attributes(  # noqa: E731
            {k: v for k, v in ({**Attributes(b[g][3]), **args[0]}).items() if v is not None}).json)
    return set(range(f, stop + 1)), lambda a: all(same(a[g], value(g)) for g in range(f, stop + 1))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tracks(), st.data())
def test_random_edit_sequences_keep_invariants_and_scope(track, data):
    """After every edit the track is valid, survives its table, and only the frames in the
    edit's scope differ (with the values the edit promises); refused edits are exactly those
    the rules refuse."""
    round_trip(track)
    b = dense(track)
    for name in data.draw(st.permutations(EDITS)):  # every edit, in a random order
        name, args = draw_edit(data, name, track)
        scope, check = expect(name, args, track, b)
        if scope is None:
            with pytest.raises(EditError):
                getattr(track, name)(*args)
            continue
        after = getattr(track, name)(*args)
        if after is track:  # a no-op (nothing to change) returns the track as it was
            continue
        round_trip(after)
        a = dense(after)
        for g in b.keys() | a.keys():
            if g not in scope:
                assert g in a and g in b and same(a[g], b[g]), (name, args, g)
        assert check is None or check(a), (name, args)
        ks = after.keyframes
        assert ks[0].kind == "start" and all(k.kind in KINDS for k in ks)
        assert all(k.kind in ("end", "hidden") for k in ks[1:] if k.hidden)
        if name == "set_end" and args[0] is not None:
            assert ks[-1].frame == after.end == args[0] and ks[-1].kind in ("start", "end")
        track, b = after, a
