"""Label Studio videorectangle tasks: round trips, the sequence semantics, label-studio-sdk's
offline validation and keyframe expansion (peer environment), reviewer files, bad input."""

from __future__ import annotations

import copy
import dataclasses
import json
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tasks.compact.algorithm import compact_tracks
from tasks.formats import labelstudio as ls
from tasks.errors import FormatError, NotReviewedError
from tasks.annotations.keyframes import compare_states, expand, normalise_dense
from tests.peer import run_peer
from tests.tasks.formats.test_cvat import (CLIP, CLIP_FRAMES, COMPACT_PX, HAND, SNIPPETS, box,
                                           dense_tracks, keyframes)

EXACT_PX = 1e-4  # float32 keyframes; the file keeps full float precision


def states(table: pa.Table) -> pa.Table:
    return expand(table, CLIP_FRAMES)


def without_hidden_changes(table: pa.Table) -> pa.Table:
    """The table with each label or attribute change made on a hidden keyframe moved to where
    the object is shown again: Label Studio cannot hold a change while hidden."""
    rows = table.to_pylist()
    for prev, row in zip(rows, rows[1:]):
        if row["hidden"] and row["track_id"] == prev["track_id"]:
            row["label"], row["attributes"] = prev["label"], prev["attributes"]
    return pa.Table.from_pylist(rows, schema=table.schema)


@pytest.mark.parametrize("table", [
    without_hidden_changes(HAND),
    compact_tracks(dense_tracks(1, change_while_hidden=False), max_error_px=COMPACT_PX)],
    ids=["hand", "compacted"])
def test_round_trip_keyframes(table):
    back = ls.read(ls.write(table, CLIP), CLIP)
    assert compare_states(states(table), states(back), max_error_px=EXACT_PX) == []


@pytest.mark.parametrize("seed", [2, 3])
def test_round_trip_from_dense_tracks(seed):
    dense = dense_tracks(seed, change_while_hidden=False)
    back = ls.read(ls.write(compact_tracks(dense, max_error_px=COMPACT_PX), CLIP), CLIP)
    assert compare_states(normalise_dense(dense), states(back),
                          max_error_px=COMPACT_PX + EXACT_PX) == []


def test_a_change_while_hidden_shows_where_the_object_does():
    back = states(ls.read(ls.write(HAND, CLIP), CLIP))
    label = dict(zip(zip(back["track_id"].to_pylist(), back["frame"].to_pylist()),
                     back["label"].to_pylist()))
    assert (label[7, 14], label[7, 15], label[7, 19], label[7, 20]) == ("car",) * 3 + ("truck",)


def test_the_sequence_is_what_label_studio_reads():
    table = keyframes([
        {"track_id": 3, "frame": 4, "end_frame": 30, **box(64, 48), "score": 0.5},
        {"track_id": 3, "frame": 10, "end_frame": 30, **box(128, 96), "hidden": True},
        {"track_id": 3, "frame": 20, "end_frame": 30, **box(192, 144), "label": "truck",
         "attributes": '{"ok":true}', "score": 1.0}])
    [task] = json.loads(ls.write(table, CLIP))
    assert task["data"] == {"video": CLIP.video_uri, "fps": float(CLIP.fps)}
    [prediction] = task["predictions"]
    assert prediction["model_version"] == "preannotate" and prediction["score"] == round(2 / 3, 6)
    first, second = prediction["result"]
    assert (first["id"], second["id"]) == ("track-3", "track-3-2")
    assert (first["value"]["labels"], second["value"]["labels"]) == (["car"], ["truck"])
    assert second["meta"] == {"attributes": {"ok": True}} and "meta" not in first
    assert first["value"]["framesCount"] == 90
    assert first["value"]["duration"] == pytest.approx(CLIP.times_s[-1] + 1001 / 30000)
    seq = [(s["frame"], s["enabled"], s["x"], s["y"], s["time"])
           for s in first["value"]["sequence"]]
    # frame 4 shown (1-based 5), interpolated towards frame 10, last shown frame 9 disabled.
    x9 = 64 + (128 - 64) * 5 / 6
    assert seq == [(5, True, 10.0, 10.0, CLIP.times_s[4]),
                   (10, False, pytest.approx(x9 / 640 * 100), pytest.approx(x9 * 0.75 / 480 * 100),
                    CLIP.times_s[9])]
    assert [(s["frame"], s["enabled"]) for s in second["value"]["sequence"]] == [(21, True),
                                                                                 (31, False)]
    assert ls.write(table, CLIP) == ls.write(table, CLIP)  # ids and order are stable


def peer_check(tasks: list, labels: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        config, data = Path(folder) / "config.xml", Path(folder) / "tasks.json"
        config.write_text(ls.labeling_config(labels))
        data.write_text(json.dumps(tasks))
        return run_peer((SNIPPETS / "labelstudio_sdk.py").read_text(), str(config), str(data))


def test_label_studio_sdk_accepts_and_expands_what_we_write():
    table = compact_tracks(dense_tracks(5, change_while_hidden=False), max_error_px=COMPACT_PX)
    labels = sorted(set(table["label"].to_pylist()))
    tasks = json.loads(ls.write(table, CLIP))
    found = peer_check(tasks, labels)
    assert found["labels"] == labels
    [checked] = found["tasks"]
    assert checked["errors"] == []
    # The sdk's own expansion (keyframes, lifespans) gives exactly our visible frames.
    rows = []
    for region, items in checked["frames"].items():
        track = int(ls.REGION_ID.fullmatch(region).group(1))
        for frame, x, y, w, h in items:
            rows.append({"track_id": track, "frame": frame - 1, "x1": x * 6.4, "y1": y * 4.8,
                         "x2": (x + w) * 6.4, "y2": (y + h) * 4.8})
    sdk = pa.Table.from_pylist(rows).sort_by([("track_id", "ascending"), ("frame", "ascending")])
    ours = states(table).filter(pc.invert(states(table)["hidden"]))
    assert sdk["track_id"].to_pylist() == ours["track_id"].to_pylist()
    assert sdk["frame"].to_pylist() == ours["frame"].to_pylist()
    for c in ("x1", "y1", "x2", "y2"):
        assert max(abs(a - b) for a, b in zip(sdk[c].to_pylist(), ours[c].to_pylist())) < EXACT_PX


def test_label_studio_sdk_rejects_broken_regions():
    tasks = json.loads(ls.write(without_hidden_changes(HAND), CLIP))
    broken = []
    for change in ("label", "x", "from_name"):
        task = copy.deepcopy(tasks[0])
        region = task["predictions"][0]["result"][0]
        if change == "label":
            region["value"]["labels"] = ["dog"]
        elif change == "x":
            region["value"]["sequence"][0]["x"] = 150.0
        else:
            region["from_name"] = "boxes"
        broken.append(task)
    found = peer_check(broken, ["bus", "car", "truck"])
    assert all(t["errors"] for t in found["tasks"]), found["tasks"]
    assert "dog" in " ".join(found["tasks"][0]["errors"])


def test_labeling_config_quotes_labels():
    labels = ['a "quoted" & <odd> \'label\'', "car"]
    root = ET.fromstring(ls.labeling_config(labels))
    assert [label.get("value") for label in root.iter("Label")] == labels
    assert root.find("Video").attrib == {"name": "video", "value": "$video", "frameRate": "$fps"}


def reviewed() -> list:
    """An export: a person's annotation (one region edited, one drawn) next to our prediction."""
    tasks = json.loads(ls.write(without_hidden_changes(HAND), CLIP))
    result = copy.deepcopy(tasks[0]["predictions"][0]["result"])
    result[0]["origin"] = "prediction-changed"
    drawn = copy.deepcopy(result[-1])
    drawn.update(id="Xk3u9LQpZa", origin="manual")
    drawn["value"]["sequence"] = [{"frame": 1, "enabled": True, "x": 1, "y": 1, "width": 5,
                                   "height": 5, "rotation": 0, "time": 0.03}]
    tasks[0]["annotations"] = [{"id": 1, "was_cancelled": True, "result": []},
                               {"id": 2, "result": result + [drawn]}]
    tasks.append({"data": {"video": "s3://bucket/out/rec-01/11.webm"}, "predictions": []})
    return tasks


def test_a_reviewed_export():
    back = ls.read(json.dumps(reviewed()).encode(), CLIP, labels=["bus", "car", "truck"])
    tracks = back["track_id"].to_pylist()
    assert sorted(set(tracks)) == [7, 9, 11, 13, 14]  # the drawn region: the next id
    source = set(zip(tracks, back["label"].to_pylist(), back["source"].to_pylist()))
    assert {(7, "car", "human"), (7, "bus", "interpolated"), (14, "truck", "human")} <= source
    assert (7, "car", "interpolated") not in source and (9, "car", "human") not in source
    assert back.filter(pc.equal(back["track_id"], 14))["end_frame"].to_pylist() == [None]


def mutated(path: str, value) -> bytes:
    """reviewed() with the item at a JSON path ("0.annotations.1.result.0.id") replaced
    (value None: removed)."""
    tasks = reviewed()
    *parents, last = path.split(".")
    node = tasks
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last = int(last) if isinstance(node, list) else last
    if value is None:
        del node[last]
    else:
        node[last] = value
    return json.dumps(tasks).encode()


R = "0.annotations.1.result.0"
BAD = [
    (b"[{", "not JSON", None),
    (b"[1]", "list of Label Studio tasks", None),
    (mutated("1.data.video", CLIP.video_uri), "2 of 2 tasks", None),
    (mutated("0.annotations.0.was_cancelled", False), "2 of them", None),
    (mutated(f"{R}.type", "rectangle"), r"\[0\]\.annotations\[1\]\.result\[0\]: not a video", None),
    (mutated(f"{R}.value.labels", ["dog"]), r"\['dog'\] is not one label of \['bus', 'car'", "l"),
    (mutated(f"{R}.value.labels", []), r"region 'track-7' has no label \(a box drawn", None),
    (mutated(f"{R}.value.labels", None), r"region 'track-7' has no label", "l"),
    (mutated(f"{R}.value.sequence", []), "not a non-empty list", None),
    (mutated(f"{R}.value.sequence.0.frame", 0), r"sequence\[0\]\.frame: 0 is not a frame 1\.\.90",
     None),
    (mutated(f"{R}.value.sequence.0.frame", 91), "is not a frame 1..90", None),
    (mutated(f"{R}.value.sequence.1.frame", 3), "two keyframes on frame 3", None),
    (mutated(f"{R}.value.sequence.0.x", "1"), r"\.x: '1' is not a finite number", None),
    (mutated(f"{R}.value.sequence.0.width", -5), "width -5.0", None),
    (mutated(f"{R}.value.sequence.0.rotation", 10), "no rotation", None),
    (mutated(f"{R}.value.sequence.0.enabled", "no"), "is not true or false", None),
    (mutated(f"{R}.value.sequence.0.y", None), r"\.y: None", None),
    (mutated(f"{R}.meta", {"attributes": [1]}), r"meta\.attributes: \[1\] is not an object", None),
    (mutated("0.annotations.1.result.1.id", "track-9"), "track 9: .* overlap at frame 20", None),
]


@pytest.mark.parametrize("data, message, strict", BAD, ids=[m for _, m, _ in BAD])
def test_bad_input_is_named(data, message, strict):
    with pytest.raises(FormatError, match=message):
        ls.read(data, CLIP, labels=["bus", "car", "truck"] if strict else None)


# --- tasks that name their clip, and the server's own exports -------------------------------

NAMED = dataclasses.replace(CLIP, clip_id="0123456789abcdef0123",
                            video_url="/data/local-files/?d=out/rec-01/10.webm")


def named_export(annotations, predictions=None, url="http://ls.example/data/upload/1/x.webm"):
    """A whole-project export as the server gives it: our task among others, its video URL
    rewritten, predictions as ids unless given."""
    ours = json.loads(ls.write(without_hidden_changes(HAND), NAMED))[0]
    ours["data"]["video"] = url
    ours.update(id=41, annotations=annotations,
                predictions=[101] if predictions is None else predictions)
    other = {"id": 42, "data": {**ours["data"], "clip_id": "ffffffffffffffffffff"},
             "annotations": [], "predictions": [102]}
    return json.dumps([other, ours]).encode()


def test_tasks_name_their_clip_and_carry_the_video_url():
    (task,) = json.loads(ls.write(HAND, NAMED))
    assert task["data"] == {"video": NAMED.video_url, "fps": float(NAMED.fps),
                            "clip_id": NAMED.clip_id, "recording": "rec-01", "clip_index": 3,
                            "clip": "10.mp4"}


def test_a_whole_project_export_is_matched_by_clip_id_whatever_its_urls():
    result = json.loads(ls.write(without_hidden_changes(HAND), NAMED))[0]["predictions"][0]["result"]
    data = named_export([{"id": 7, "result": result, "was_cancelled": False}])
    back = ls.read(data, NAMED)
    assert compare_states(states(back), states(ls.read(ls.write(without_hidden_changes(HAND),
                                                                 NAMED), NAMED)),
                          max_error_px=EXACT_PX) == []
    assert ls.names_clip(data, NAMED)
    with pytest.raises(FormatError, match="0 of 2 tasks are clip 9999"):
        ls.read(data, dataclasses.replace(NAMED, clip_id="9999"))


def test_skipped_and_unsubmitted_tasks_are_told_apart():
    with pytest.raises(NotReviewedError, match="task 41 was skipped") as skipped:
        ls.read(named_export([{"id": 7, "result": [], "was_cancelled": True}]), NAMED)
    assert skipped.value.skipped
    with pytest.raises(NotReviewedError, match="task 41 has no submitted annotation") as waiting:
        ls.read(named_export([]), NAMED)
    assert not waiting.value.skipped
    with pytest.raises(NotReviewedError, match="no submitted annotation"):
        ls.read(named_export([7]), NAMED)  # annotations listed as ids, none submitted


def test_every_track_deleted_is_an_empty_result_of_that_clip():
    data = named_export([{"id": 7, "result": [], "was_cancelled": False}])
    assert ls.read(data, NAMED).num_rows == 0 and ls.names_clip(data, NAMED)
    # Without the clip's id in the task, an empty file could be any clip's.
    unnamed = json.loads(data)[1]
    for key in ("clip_id", "recording", "clip_index", "clip"):
        del unnamed["data"][key]
    assert not ls.names_clip(json.dumps([unnamed]).encode(), NAMED)


def test_the_editors_own_rewrites_keep_a_moved_box():
    """The editor leaves origin "prediction" on a region it moved, and rewrites every "time"
    as frame / frameRate: what changed is read from the geometry."""
    from tasks.track.corrections import diff_review

    table = without_hidden_changes(HAND)
    result = json.loads(ls.write(table, NAMED))[0]["predictions"][0]["result"]
    region = result[0]
    assert region["origin"] == "prediction"
    moved = region["value"]["sequence"][0]
    moved["x"] += 20 / NAMED.width * 100  # 20 px to the right, origin left as it was
    for r in result:
        for item in r["value"]["sequence"]:
            item["time"] = (item["frame"]) / float(NAMED.fps)
    reviewed = ls.read(named_export([{"id": 7, "result": result}]), NAMED)
    review = diff_review(ls.read(ls.write(table, NAMED), NAMED), reviewed, NAMED.frames)
    track = int(region["id"].split("-")[1])
    assert review.changes["keyframes"]["moved"] == 1
    (change,) = review.changes["tracks"][str(track)]["moved"]
    assert change["frame"] == moved["frame"] - 1 and change["px"] == pytest.approx(20.0, abs=1e-3)
    human = review.keyframes.filter(pc.equal(review.keyframes["source"], "human"))
    assert set(human["track_id"].to_pylist()) == {track}
    assert human["frame"].to_pylist() == [moved["frame"] - 1]
