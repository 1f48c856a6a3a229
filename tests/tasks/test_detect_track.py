"""Detection and tracking stages end to end on a rendered scene with known boxes.

The scene (tests/scene.py) is converted for real, then detected (background subtraction),
associated and tracked; quality floors below were measured on it (see the issue note).
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from configs import recipe_path
from tasks.store.record import ClipRecord
from tasks.convert.batch import run_batch
from tasks.annotations.boxmath import iou_pairs
from tasks.detect.stage import detect_clip, make_detector, write_detections
from tasks.detect.state import state_paths
from tasks.errors import ConfigError, StorageError
from tasks.store.items import read_records
from tasks.recipe import parse_recipe
from tasks.store.storage import open_location
from tasks.track.chunks import run_object
from tasks.track.plan import load_keyframes, plan_clip
from tasks.track.state import clip_dir, track_key
from tasks.track.assemble import assemble_clip, write_tracks
from tests.scene import render_scene

np.asfarray = getattr(np, "asfarray", lambda a, dtype=float: np.asarray(a, dtype=dtype))  # motmetrics on numpy 2


def _recipe(**overrides):
    data = yaml.safe_load(recipe_path("moving-objects").read_text())
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        data.setdefault(section, {})[key] = value
    return parse_recipe(data)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("scene")
    (root / "data" / "cam").mkdir(parents=True)
    scene = render_scene(root / "data" / "cam" / "1.mp4")
    run_batch(str(root / "data"), str(root / "out"), _recipe(), "convert")
    out = open_location(str(root / "out"))
    (record,) = read_records(out)
    assert record.status == "converted" and record.output_frames == scene.frames
    return scene, root, record


@pytest.fixture
def fresh_out(converted, tmp_path):
    """A private copy of the converted output, so tests do not see each other's state."""
    scene, root, record = converted
    shutil.copytree(root / "out", tmp_path / "out")
    out = open_location(str(tmp_path / "out"))
    record = record.replace(output_uri=record.output_uri.replace(str(root / "out"), str(tmp_path / "out")))
    return scene, out, record


def _webm_times(out, record):
    with av.open(record.output_uri) as c:
        s = c.streams.video[0]
        return [float(f.pts * s.time_base) for f in c.decode(s)]


def test_detections_match_the_webm_frames_and_scene(fresh_out):
    scene, out, record = fresh_out
    recipe = _recipe()
    summary = detect_clip(record, out, recipe)
    assert summary["status"] == "detected" and summary["frames"] == scene.frames
    table = pq.read_table(state_paths(out, record)[1])
    assert table.num_rows == summary["detections"] > 0
    frames = table["frame"].to_numpy()
    times = np.array(_webm_times(out, record))
    assert np.array_equal(table["time_s"].to_numpy(), times[frames])  # from decoded timestamps
    assert set(table["label"].to_pylist()) == {"moving object"}     # mapped by the recipe
    assert set(table["model_label"].to_pylist()) == {"moving"}
    x1, y1, x2, y2 = (table[c].to_numpy() for c in ("x1", "y1", "x2", "y2"))
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= 320).all() and (y2 <= 240).all()
    # Most visible objects in mid-clip frames are found (IoU >= 0.5).
    found = total = 0
    for i in range(60, 150, 10):
        ids, boxes = scene.gt_frame(i)
        mine = np.column_stack([a[frames == i] for a in (x1, y1, x2, y2)])
        for box in boxes:
            total += 1
            found += bool(len(mine)) and iou_pairs(np.repeat(box[None], len(mine), 0), mine).max() >= 0.5
    assert found / total >= 0.7
    # A rerun with the same settings does nothing; other settings redo the clip.
    assert detect_clip(record, out, recipe)["status"] == "skipped"
    assert detect_clip(record, out, _recipe(detect__every_nth=3))["status"] == "detected"
    assert set(pq.read_table(state_paths(out, record)[1])["frame"].to_numpy() % 3) == {0}


def test_reduced_size_maps_boxes_back_to_full_size(fresh_out):
    scene, out, record = fresh_out
    full = detect_clip(record, out, _recipe())
    small = detect_clip(record, out, _recipe(detect__max_side=160))
    assert small["status"] == "detected" and full["detections"] and small["detections"]
    table = pq.read_table(state_paths(out, record)[1])
    ids, boxes = scene.gt_frame(100)
    mine = table.filter(pa.compute.equal(table["frame"], 100))
    got = np.column_stack([mine[c].to_numpy() for c in ("x1", "y1", "x2", "y2")])
    best = [iou_pairs(np.repeat(b[None], len(got), 0), got).max() for b in boxes]
    assert np.mean(best) >= 0.6  # full-size pixels, not 160-px ones


def test_unmapped_labels_are_dropped(fresh_out):
    scene, out, record = fresh_out
    summary = detect_clip(record, out, _recipe(labels__map={"car": "vehicle"}))
    assert summary["detections"] == 0


def test_bad_detector_settings_fail_before_work():
    with pytest.raises(ConfigError, match="detect.backend 'nope': unknown detector"):
        make_detector(_recipe(detect__backend="nope"))
    with pytest.raises(ConfigError, match="detect.options of backend 'background': unknown option 'bogus'"):
        make_detector(_recipe(detect__options={"bogus": 1}))


def _track_all(out, record, recipe, keyframes=None):
    key = track_key(recipe, None)
    plan = plan_clip(record, out, recipe, keyframes, key)
    for tid in plan["objects"]:
        assert run_object(record, out, recipe, key, tid)["status"] in ("tracked", "skipped")
    assemble_clip(record, out, key, plan["objects"])
    return key, plan, pq.read_table(f"{clip_dir(out, record, key)}/tracks.parquet")


def _mot(scene, tracks):
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=True)
    frame, hidden = tracks["frame"].to_numpy(), tracks["hidden"].to_numpy()
    box = np.column_stack([tracks[c].to_numpy() for c in ("x1", "y1", "x2", "y2")]).astype(float)
    tid = tracks["track_id"].to_numpy()
    for i in range(scene.frames):
        ids, gt = scene.gt_frame(i)
        sel = (frame == i) & ~hidden
        xywh = lambda b: np.column_stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]])
        dist = mm.distances.iou_matrix(xywh(gt.astype(float)), xywh(box[sel]), max_iou=0.5)
        acc.update([ord(o) for o in ids], tid[sel].tolist(), dist)
    metrics = mm.metrics.create().compute(acc, metrics=["mota", "idf1"], name="scene")
    return float(metrics["mota"].iloc[0]), float(metrics["idf1"].iloc[0])


def test_moving_objects_recipe_quality(fresh_out):
    scene, out, record = fresh_out
    recipe = _recipe()
    detect_clip(record, out, recipe)
    key, plan, tracks = _track_all(out, record, recipe)
    mota, idf1 = _mot(scene, tracks)
    # Measured 0.462 and 0.543 (background subtraction learns objects present in the first
    # frames as background, leaving "ghost" boxes; see the issue note).
    assert mota >= 0.40 and idf1 >= 0.48, (mota, idf1)
    write_tracks(out, [{"recording": record.recording, "clip_index": record.clip_index}],
                 [record], key)
    table = pq.read_table(out.path("tracks.parquet"))
    assert table.num_rows == tracks.num_rows
    # One row per object per frame, frames and times from the WebM.
    pairs = list(zip(table["track_id"].to_pylist(), table["frame"].to_pylist()))
    assert len(pairs) == len(set(pairs))
    times = np.array(_webm_times(out, record))
    assert np.array_equal(table["time_s"].to_numpy(), times[table["frame"].to_numpy()])
    assert set(table["source"].to_pylist()) <= {"detector", "tracker", "interpolated"}


def _keyframes_file(tmp_path, rows, name="kf.parquet"):
    table = pa.table({k: [r[i] for r in rows] for i, k in enumerate(
        ("recording", "clip_index", "track_id", "frame", "label", "x1", "y1", "x2", "y2"))})
    path = tmp_path / name
    if name.endswith(".csv"):
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return str(path)


def test_human_keyframe_tracked_through_occlusion_and_resumed_identically(fresh_out, tmp_path, caplog):
    scene, out, record = fresh_out
    a0, a1 = scene.boxes["A"][0], scene.boxes["A"][120]
    kf_path = _keyframes_file(tmp_path, [("cam", 0, 7, 0, "ball", *a0.tolist()),
                                         ("cam", 0, 7, 120, "ball", *a1.tolist())])
    keyframes, digest = load_keyframes(kf_path, out)
    recipe = _recipe(track__from_detections=False, track__carry_frames=10)
    key = track_key(recipe, digest)
    plan = plan_clip(record, out, recipe, keyframes, key)
    assert plan["objects"] == [7]
    whole = run_object(record, out, recipe, key, 7)
    assert whole["status"] == "tracked" and whole["chunks"] >= 10
    assemble_clip(record, out, key, [7])
    base = clip_dir(out, record, key)
    uninterrupted = pq.read_table(f"{base}/objects/7.parquet")
    frames = uninterrupted["frame"].to_numpy()
    hidden = uninterrupted["hidden"].to_numpy()
    box = np.column_stack([uninterrupted[c].to_numpy() for c in ("x1", "y1", "x2", "y2")])
    # Followed while visible, hidden behind the pillar (not drifting), found at the keyframe.
    visible_early = frames < 60
    assert iou_pairs(box[visible_early], scene.boxes["A"][frames[visible_early]]).mean() >= 0.8
    assert hidden[(frames >= 75) & (frames <= 104)].all()
    assert not hidden[frames == 120].any()
    assert frames.max() <= 130  # ends within carry_frames of its last keyframe
    # A run killed after 3 chunks and resumed gives identical rows.
    shutil.rmtree(f"{base}/objects")
    partial = run_object(record, out, recipe, key, 7, stop_after_chunks=3)
    assert partial["status"] == "interrupted" and partial["chunks"] == 3
    resumed = run_object(record, out, recipe, key, 7)
    assert resumed["resumed_at_chunk"] == 3
    assert "replay" not in caplog.text  # rebuilt by replay, not restarted
    assert pq.read_table(f"{base}/objects/7.parquet").equals(uninterrupted)
    assert not (tmp_path / "out").joinpath(base, "objects", "7").exists()  # chunk files merged


def test_a_review_that_cannot_be_applied_leaves_the_machine_tracks_and_says_why(fresh_out, tmp_path):
    from tasks.compact.algorithm import compact_tracks
    from tasks.track.corrections import diff_review
    from tasks.track.review_store import review_path, save_review
    from tasks.track.stage import finish_clip_uri
    from tasks.errors import ReviewStorageError

    scene, out, record = fresh_out
    recipe = _recipe()
    detect_clip(record, out, recipe)
    key, plan, machine = _track_all(out, record, recipe)
    # The one unit assembles the clip and applies its review: no review, nothing to report.
    plain = finish_clip_uri(record, str(tmp_path / "out"), recipe, key, plan["objects"])
    assert plain["review"] is None and plain["review_error"] is None
    assert plain["tracks"]["rows"] == machine.num_rows and plain["tracks"]["reused"]
    # A review made on other tracking settings: its track ids mean other objects.
    keyframes = compact_tracks(machine, max_error_px=1.0)
    save_review(out, record, diff_review(keyframes, keyframes, scene.frames), 1, "other-settings")
    got = finish_clip_uri(record, str(tmp_path / "out"), recipe, key, plan["objects"])
    assert got["review"] is None and "other tracking settings (other-settings" in got["review_error"]
    assert got["tracks"]["rows"] == machine.num_rows  # the machine's tracks stand
    # A store that cannot be read is no verdict: it raises a StorageError, for the task's
    # retries, carrying the assembled table's summary (the machine's tracks stand after them).
    path = Path(review_path(out, record))
    path.unlink()
    path.mkdir()
    with pytest.raises(StorageError, match="applying the review of") as raised:
        finish_clip_uri(record, str(tmp_path / "out"), recipe, key, plan["objects"])
    assert isinstance(raised.value, ReviewStorageError)
    again = pickle.loads(pickle.dumps(raised.value))  # as it comes back from Dask or Ray
    assert again.tracks == raised.value.tracks and again.tracks["rows"] == machine.num_rows
    assert str(again) == str(raised.value) and str(again).startswith("applying the review of")


@pytest.mark.parametrize("rows, message", [
    ([("cam", 0, 1, 0, "x", 10, 10, 5, 20)], "empty or inverted"),
    ([("cam", 0, 0, 0, "x", 1, 1, 5, 5)], "track ids >= 1"),
])
def test_bad_keyframes_are_refused(fresh_out, tmp_path, rows, message):
    scene, out, record = fresh_out
    with pytest.raises(ConfigError, match=message):
        load_keyframes(_keyframes_file(tmp_path, rows), out)


def test_keyframes_missing_columns_or_frames_beyond_the_clip(fresh_out, tmp_path):
    scene, out, record = fresh_out
    path = tmp_path / "kf.csv"
    path.write_text("recording,clip_index,frame\ncam,0,1\n")
    with pytest.raises(ConfigError, match="missing column"):
        load_keyframes(str(path), out)
    beyond = _keyframes_file(tmp_path, [("cam", 0, 1, 999, "x", 1, 1, 20, 20)], "kf2.csv")
    table, digest = load_keyframes(beyond, out)
    recipe = _recipe(track__from_detections=False)
    with pytest.raises(ConfigError, match="beyond the clip"):
        plan_clip(record, out, recipe, table, track_key(recipe, digest))


def test_without_a_tracker_gaps_are_interpolated(fresh_out, tmp_path):
    scene, out, record = fresh_out
    d0, d1 = scene.boxes["D"][10], scene.boxes["D"][20]
    kf = _keyframes_file(tmp_path, [("cam", 0, 1, 10, "d", *d0.tolist()),
                                    ("cam", 0, 1, 20, "d", *d1.tolist())])
    table, digest = load_keyframes(kf, out)
    recipe = _recipe(track__from_detections=False, track__tracker=None)
    key = track_key(recipe, digest)
    plan_clip(record, out, recipe, table, key)
    run_object(record, out, recipe, key, 1)
    rows = pq.read_table(f"{clip_dir(out, record, key)}/objects/1.parquet")
    assert rows["frame"].to_pylist() == list(range(10, 21))
    assert rows["source"].to_pylist() == ["human"] + ["interpolated"] * 9 + ["human"]
    assert np.allclose(rows["x1"][5].as_py(), (d0[0] + d1[0]) / 2)


def test_detections_within_a_frame_have_one_order_whatever_the_model_gave():
    """A model's NMS may list equal boxes in any order; the table does not (issue 15)."""
    import numpy as np

    from models.boxes import Boxes
    from tasks.detect.stage import _Columns, _Sampled

    xyxy = np.array([[5, 5, 20, 20], [1, 1, 9, 9], [30, 2, 40, 12], [1, 1, 9, 10]], np.float32)
    score = np.array([0.5, 0.9, 0.5, 0.9], np.float32)
    record = ClipRecord(recording="cam", clip_index=0, global_first_frame=0)
    tables = []
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]):
        columns = _Columns()
        columns.add(_Sampled(4, 0.16, np.zeros((1, 1, 3), np.uint8)),
                    Boxes(xyxy[order], score[order], np.zeros(4, np.int32)), ["person"],
                    {0: "person"})
        tables.append(columns.table(record))
    assert tables[0].equals(tables[1]) and tables[0].equals(tables[2])
    assert tables[0]["x1"].to_pylist() == [1, 1, 5, 30] and tables[0]["y2"].to_pylist()[:2] == [9, 10]
