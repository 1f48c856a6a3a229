"""The review handoff end to end on the real Prefect engine and the synthetic scene: export
enqueues one task per clip; a reviewer leases it, deletes the machine's track of object A and
draws A again as a new track with two boxes; the result comes back as CVAT XML, is validated,
stored, and applied: the tracker runs again from the reviewer's boxes and follows A between
them, compaction keeps them as `human` keyframes, and every export shows the correction."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from configs import recipe_path
from flows.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from flows.review import EXIT_LEASE_LOST
from tasks.store.items import read_records
from tasks.annotations.boxmath import iou_pairs
from tasks.export.stage import clip_info
from tasks.formats import cvat
from tasks.formats import native
from tasks.annotations.keyframes import KEYFRAME_SCHEMA, sort_tracks
from tasks.store.storage import open_location
from tests.scene import render_scene


def _review(capsys, *args) -> tuple[int, object]:
    """Exit code and JSON output of a `preannotate review` command (stderr is kept in
    ``_review.err``)."""
    code = main(["review", *args])
    printed = capsys.readouterr()
    _review.err = printed.err
    return code, (json.loads(printed.out) if printed.out.strip() else None)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, prefect_harness):
    root = tmp_path_factory.mktemp("review")
    (root / "data" / "cam").mkdir(parents=True)
    scene = render_scene(root / "data" / "cam" / "1.mp4")
    recipe = yaml.safe_load(recipe_path("moving-objects").read_text())
    recipe["export"] = {"formats": ["json", "cvat", "labelstudio", "dataloop"],
                        "video_url": "/data/local-files/?d={relpath}"}
    config = root / "recipe.yaml"
    config.write_text(yaml.safe_dump(recipe))
    out = root / "out"
    assert main(["export", str(root / "data"), "--out", str(out), "--config", str(config)]) == EXIT_OK
    return scene, root, out, config


def _a_track(keyframes, scene) -> int:
    """The machine's track of object A: best mean IoU with A's boxes on its keyframes."""
    best, best_iou = None, 0.0
    for tid in sorted(set(keyframes["track_id"].to_pylist())):
        rows = keyframes.filter(pc.and_(pc.equal(keyframes["track_id"], tid),
                                        pc.invert(keyframes["hidden"])))
        frames = rows["frame"].to_numpy()
        boxes = np.column_stack([rows[c].to_numpy() for c in ("x1", "y1", "x2", "y2")])
        iou = iou_pairs(boxes.astype(float), scene.boxes["A"][frames].astype(float)).mean()
        if iou > best_iou:
            best, best_iou = tid, iou
    assert best is not None and best_iou > 0.5
    return best


def test_review_round_trip(exported, capsys, tmp_path):
    scene, root, out, config = exported
    code, stats = _review(capsys, "stats", "--out", str(out))
    assert code == EXIT_OK and stats["queued"] == 1 and stats["total"] == 1
    code, (task,) = _review(capsys, "list", "--out", str(out))
    payload = task["payload"]
    assert task["key"] == "clip:cam:0" and payload["video"].endswith(".webm")
    assert set(payload["annotations"]) == {"json", "cvat", "labelstudio", "dataloop"}
    assert all(open_location(str(out)).fs.exists(u) for u in payload["annotations"].values())
    assert payload["measures"]["tracks"] >= 3 and task["priority"] > 0

    code, leased = _review(capsys, "lease", "--out", str(out), "--worker", "alice",
                           "--lease-seconds", "600")
    assert code == EXIT_OK and leased["id"] == task["id"] and leased["worker"] == "alice"

    # Label Studio's own export of the task, skipped by its reviewer (predictions as ids, as
    # the server lists them): the queue task is released for another reviewer (the recipe's
    # default), nothing is applied.
    skipped_export = json.loads(open(payload["annotations"]["labelstudio"], "rb").read())
    skipped_export[0].update(id=5, annotations=[{"id": 1, "was_cancelled": True, "result": []}],
                             predictions=[9])
    skipped = tmp_path / "skipped.json"
    skipped.write_text(json.dumps(skipped_export))
    code, done = _review(capsys, "complete", str(task["id"]), "--out", str(out), "--worker",
                         "alice", "--result", str(skipped))
    assert code == EXIT_OK and done["queue"] == "released" and "skipped" in done["skipped"]
    assert not (out / "reviews").exists()
    code, stats = _review(capsys, "stats", "--out", str(out))
    assert stats["queued"] == 1 and stats["leased"] == 0
    skipped_export[0]["annotations"] = []  # not submitted yet: refused, the lease kept
    skipped.write_text(json.dumps(skipped_export))
    code, leased = _review(capsys, "lease", "--out", str(out), "--worker", "alice",
                           "--lease-seconds", "600")
    code, _ = _review(capsys, "complete", str(task["id"]), "--out", str(out), "--worker",
                      "alice", "--result", str(skipped))
    assert code == EXIT_USAGE and "no submitted annotation" in _review.err, _review.err

    # The reviewer: A's machine track is deleted and A drawn again at frames 0 and 60.
    keyframes = pq.read_table(out / "keyframes.parquet")
    machine_a = _a_track(keyframes, scene)
    record = read_records(open_location(str(out)))[0]
    clip = clip_info(open_location(str(out)), record)
    sent = native.read(open(payload["annotations"]["json"], "rb").read(), clip)
    kept = sent.filter(pc.not_equal(sent["track_id"], machine_a))
    new_id = max(sent["track_id"].to_pylist()) + 1
    drawn = [{"recording": "cam", "clip_index": 0, "track_id": new_id, "frame": f,
              "global_frame": f, "time_s": clip.time_of(f), "label": "moving object",
              **dict(zip(("x1", "y1", "x2", "y2"), scene.boxes["A"][f].tolist())),
              "hidden": False, "kind": "start" if f == 0 else "compacted", "mode": "linear",
              "end_frame": 60, "attributes": "{}", "source": "human", "score": 1.0}
             for f in (0, 40, 60)]
    import pyarrow as pa

    reviewed = sort_tracks(pa.concat_tables([kept, pa.Table.from_pylist(drawn, KEYFRAME_SCHEMA)]))
    result = tmp_path / "reviewed.xml"
    result.write_bytes(cvat.write(reviewed, clip))

    # Refused: a worker without the lease, and a broken file (nothing written either time).
    code, _ = _review(capsys, "complete", str(task["id"]), "--out", str(out), "--worker", "bob",
                      "--result", str(result))
    assert code == EXIT_LEASE_LOST and "'bob' holds no lease" in _review.err
    broken = tmp_path / "broken.xml"
    broken.write_bytes(result.read_bytes()[:500])
    code, _ = _review(capsys, "complete", str(task["id"]), "--out", str(out), "--worker", "alice",
                      "--result", str(broken))
    assert code == EXIT_USAGE and "XML" in _review.err, _review.err
    # Bounded (issue 15, point 7): nesting before parsing, size before reading (recipe).
    deep = tmp_path / "deep.json"
    deep.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    code, _ = _review(capsys, "complete", str(task["id"]), "--out", str(out), "--worker", "alice",
                      "--result", str(deep), "--format", "json")
    assert code == EXIT_USAGE and "nests 100,000 levels deep" in _review.err, _review.err
    small = tmp_path / "small-limits.yaml"
    limited = yaml.safe_load(config.read_text())
    limited["review"] = {**limited.get("review", {}), "limits": {"max_bytes": 1024}}
    small.write_text(yaml.safe_dump(limited))
    code, _ = _review(capsys, "complete", str(task["id"]), "--out", str(out), "--worker", "alice",
                      "--result", str(result), "--config", str(small))
    assert code == EXIT_USAGE and "review.limits.max_bytes allows 1,024" in _review.err, _review.err
    assert not (out / "reviews").exists()
    code, again = _review(capsys, "stats", "--out", str(out))
    assert again["leased"] == 1 and again["done"] == 0

    code, done = _review(capsys, "complete", str(task["id"]), "--out", str(out), "--worker",
                         "alice", "--result", str(result))
    assert code == EXIT_OK, done
    changes = done["changes"]
    assert done["format"] == "cvat"
    assert changes["tracks_deleted"] == [machine_a] and changes["tracks_added"] == [new_id]
    (applied,) = done["applied"]["reviews_applied"]
    assert applied["status"] == "applied" and applied["ranges"] == 3
    assert applied["frames_retracked"] == 61 and applied["chunks_retracked"] >= 7

    # The new track follows A between the reviewer's boxes; A's old track is gone.
    tracks = pq.read_table(out / "tracks.parquet")
    mine = tracks.filter(pc.equal(tracks["track_id"], new_id))
    assert mine["frame"].to_pylist() == list(range(61))
    assert machine_a not in tracks["track_id"].to_pylist()
    visible = ~mine["hidden"].to_numpy()
    boxes = np.column_stack([mine[c].to_numpy() for c in ("x1", "y1", "x2", "y2")]).astype(float)
    iou = iou_pairs(boxes[visible], scene.boxes["A"][np.flatnonzero(visible)].astype(float))
    assert iou.mean() > 0.7, iou
    keyframes = pq.read_table(out / "keyframes.parquet")
    human = keyframes.filter(pc.equal(keyframes["source"], "human"))
    assert sorted(human["frame"].to_pylist()) == [0, 40, 60]
    row = human.filter(pc.equal(human["frame"], 40))
    assert [row[c][0].as_py() for c in ("x1", "y1", "x2", "y2")] == scene.boxes["A"][40].tolist()
    for fmt, path in payload["annotations"].items():  # every export shows the correction
        text = open(path, "rb").read()
        back = {"json": native, "cvat": cvat}.get(fmt)
        if back is not None:
            table = back.read(text, clip)
            assert new_id in table["track_id"].to_pylist() and machine_a not in table["track_id"].to_pylist()

    # Audit trail: who leased it and when, what changed.
    code, history = _review(capsys, "history", str(task["id"]), "--out", str(out))
    events = [h["event"] for h in history]
    assert events[:2] == ["enqueued", "leased"] and "completed" in events and "changes" in events
    assert next(h for h in history if h["event"] == "leased")["worker"] == "alice"
    logged = next(h for h in history if h["event"] == "changes")["detail"]
    assert logged["tracks_deleted"] == [machine_a]

    # Done is done: a second completion is refused; a rerun adds no task and changes nothing.
    code, _ = _review(capsys, "complete", str(task["id"]), "--out", str(out), "--worker", "alice",
                      "--result", str(result))
    assert code == EXIT_LEASE_LOST
    before = (out / "keyframes.parquet").read_bytes()
    assert main(["export", str(root / "data"), "--out", str(out), "--config", str(config)]) == EXIT_OK
    capsys.readouterr()
    assert (out / "keyframes.parquet").read_bytes() == before
    code, stats = _review(capsys, "stats", "--out", str(out))
    assert stats["total"] == 1 and stats["done"] == 1

    # The stored result rebuilds the review if OUT/reviews is lost.
    shutil.rmtree(out / "reviews")
    code, rebuilt = _review(capsys, "apply", "--out", str(out))
    assert code == EXIT_OK and rebuilt["rebuilt"]["results"] == 1
    assert (out / "keyframes.parquet").read_bytes() == before

    # Other tracking settings: the review's track ids now mean other objects, so it is not
    # applied. The run reports it (exit 1) and the clip keeps the machine's tracks.
    changed = yaml.safe_load(config.read_text())
    changed["track"]["frames_per_execution"] = changed["track"].get("frames_per_execution", 10) + 5
    other = root / "other-tracking.yaml"
    other.write_text(yaml.safe_dump(changed))
    assert main(["export", str(root / "data"), "--out", str(out), "--config", str(other)]) == EXIT_FAILED
    printed = capsys.readouterr()
    assert "apply review" in printed.out and "other tracking settings" in printed.out
    tracks = pq.read_table(out / "tracks.parquet")
    assert tracks.num_rows and set(tracks["source"].to_pylist()) <= {"detector", "tracker",
                                                                     "interpolated"}


def test_a_label_studio_result_deleting_every_track_is_that_clips(exported):
    """An export whose task names the clip (data.clip_id) with every region deleted is the
    reviewer deleting every track; the same file without the clip's id could be any clip's."""
    from tasks.errors import FormatError
    from tasks.recipe import load_recipe
    from tasks.review.results import validate_result

    scene, root, out, config = exported
    (ours,) = json.loads((out / "exports" / "labelstudio" / "cam" / "1.json").read_bytes())
    assert ours["data"]["clip_id"] and ours["data"]["clip"] == "1.mp4"
    assert ours["data"]["video"] == "/data/local-files/?d=cam/1.webm"  # the recipe's template
    ours.update(id=3, annotations=[{"id": 1, "result": []}], predictions=[])
    payload = {"out": str(out), "recording": "cam", "clip_index": 0}
    recipe = load_recipe(str(config))
    review = validate_result(payload, json.dumps([ours]).encode(), "labelstudio", recipe)
    assert review.changes["tracks_added"] == [] and len(review.changes["tracks_deleted"]) >= 3
    del ours["data"]["clip_id"]
    with pytest.raises(FormatError, match="no tracks at all"):
        validate_result(payload, json.dumps([ours]).encode(), "labelstudio", recipe)
