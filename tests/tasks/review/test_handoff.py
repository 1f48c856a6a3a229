"""Review tasks from the pipeline's outputs: measures, the recipe's priority, one task per
clip or per track, idempotent enqueueing, where the queue lives, result format guessing."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from flows.review import guess_format
from tasks.store.record import ClipRecord
from tasks.errors import ConfigError
from tasks.recipe import parse_recipe
from tasks.review import ReviewQueue
from tasks.review.handoff import enqueue_reviews, queue_url, task_key
from tasks.review.priority import measures, priority
from tasks.store.storage import open_location
from tasks.store.tables import TRACK_SCHEMA, write_table


def _rows(track_id, scores, hidden, clip_index=0):
    n = len(scores)
    frames = np.arange(n)
    return pa.table({
        "recording": ["cam"] * n, "clip_index": np.full(n, clip_index, np.int32), "frame": frames,
        "global_frame": frames, "time_s": frames / 10.0, "label": ["car"] * n,
        "model_label": ["car"] * n, "score": np.asarray(scores, np.float32),
        "x1": np.zeros(n, np.float32), "y1": np.zeros(n, np.float32),
        "x2": np.ones(n, np.float32), "y2": np.ones(n, np.float32),
        "track_id": np.full(n, track_id, np.int32), "hidden": np.asarray(hidden, bool),
        "source": ["tracker"] * n}).cast(TRACK_SCHEMA)


def test_measures_and_priority():
    steady = _rows(1, [0.9] * 10, [False] * 10)
    lost = _rows(2, [0.5] * 10, [False, False, True, True, True, False, False, True, False, False])
    m = measures(pa.concat_tables([steady, lost]))
    # Hidden rows do not count in the mean score; the longest hidden run is 3 frames = 0.3 s.
    assert m == {"mean_score": pytest.approx((0.9 * 10 + 0.5 * 6) / 16, abs=1e-4),
                 "lost_tracks": 1, "hidden_s": 0.3, "tracks": 2, "boxes": 16,
                 "breaks_per_min": 120.0}  # two hidden runs in under a second (counted as 1 s)
    recipe = parse_recipe({"review": {"priority": {"low_confidence": 10, "lost_tracks": 2,
                                                   "hidden_s": 1, "tracks": 0.5, "base": 1,
                                                   "breaks": 0.01}}})
    expected = 1 + 10 * (1 - m["mean_score"]) + 2 * 1 + 1 * 0.3 + 0.5 * 2 + 0.01 * m["breaks_per_min"]
    assert priority(recipe, m) == pytest.approx(expected, abs=1e-5)
    assert measures(steady)["lost_tracks"] == 0 and measures(steady)["hidden_s"] == 0.0


def test_missed_work_ranks_first():
    recipe = parse_recipe({})
    confident = measures(_rows(1, [0.95] * 600, [False] * 600), frames=600, duration_s=60.0)
    empty = measures(_rows(1, [], []), frames=600, duration_s=60.0)
    # One object found in five pieces (lost and found again, then it ends early).
    pieces = [False] * 100 + [True] * 20 + [False] * 100 + [True] * 20 + [False] * 100
    broken = measures(_rows(1, [0.95] * 340, pieces), frames=600, duration_s=60.0)
    assert empty["boxes"] == 0 and confident["breaks_per_min"] == 0.0
    assert broken["breaks_per_min"] == 3.0  # two hidden runs and an early end, in a minute
    ranked = sorted([("confident", confident), ("empty", empty), ("broken", broken)],
                    key=lambda item: -priority(recipe, item[1]))
    assert [name for name, _ in ranked] == ["empty", "broken", "confident"]
    # A track that starts where a shot starts is not a break.
    later = measures(_rows(1, [0.95] * 600, [False] * 600).slice(300), frames=600,
                     duration_s=60.0, shot_starts=frozenset({300}))
    assert later["breaks_per_min"] == 0.0


def test_bad_review_recipes_are_refused():
    for bad in ({"unit": "frame"}, {"max_attempts": 0}, {"lease_seconds": -1},
                {"formats": ["mot"]}, {"priority": {"colour": 1}}):
        with pytest.raises(ConfigError, match="review"):
            parse_recipe({"review": bad})


def _pipeline_out(tmp_path):
    out_dir = tmp_path / "out"
    out = open_location(str(out_dir))
    write_table(out, out.path("tracks.parquet"), pa.concat_tables([
        _rows(1, [0.9] * 10, [False] * 10), _rows(2, [0.2] * 10, [False] * 5 + [True] * 5),
        _rows(1, [0.95] * 10, [False] * 10, clip_index=1)]))
    records = [ClipRecord(recording="cam", clip_index=i, clip_name=f"{i}.mp4",
                          output_uri=str(out_dir / f"cam/{i}.webm"),
                          source_uri=f"/data/cam/{i}.mp4") for i in (0, 1)]
    clips = [{"recording": "cam", "clip_index": i,
              "files": {"json": [f"{out_dir}/exports/json/cam/{i}.json"],
                        "cvat": [f"{out_dir}/exports/cvat/cam/{i}.xml"],
                        "mot": [f"{out_dir}/exports/mot/cam/{i}/gt/gt.txt"]}} for i in (0, 1)]
    return out_dir, records, clips


@pytest.mark.parametrize("unit, keys", [
    ("clip", ["clip:cam:0", "clip:cam:1"]),
    ("track", ["clip:cam:0:track:2", "clip:cam:0:track:1", "clip:cam:1:track:1"]),
])
def test_enqueue_per_unit_by_priority_and_idempotent(tmp_path, unit, keys):
    out_dir, records, clips = _pipeline_out(tmp_path)
    recipe = parse_recipe({"review": {"unit": unit}})
    first = enqueue_reviews(str(out_dir), recipe, records, clips, "/data", None)
    assert first["tasks"] == len(keys) and first["new"] == len(keys)
    assert first["queue"] == f"sqlite:///{out_dir / 'review.db'}"
    again = enqueue_reviews(str(out_dir), recipe, records, clips, "/data", None)
    assert again["new"] == 0 and again["tasks"] == len(keys)
    assert again["per_clip"] == first["per_clip"]
    # Keys the queue has are not measured again (a rerun of 10,000 clips).
    from tasks.review.handoff import review_tasks
    from tasks.store.storage import open_location

    made = review_tasks(open_location(str(out_dir), recipe.storage), recipe, records,
                        {(c["recording"], c["clip_index"]): c["files"] for c in clips}, "/data",
                        None, known=lambda asked: set(asked[1:]))
    assert sorted(t[0] for t in made) == sorted(keys)
    assert made[0][1] is not None and "measures" in made[0][2]
    assert all(t[1] is None and "measures" not in t[2] for t in made[1:])
    with ReviewQueue(first["queue"]) as queue:
        leased = [queue.lease("w", 60) for _ in keys]
        assert queue.lease("w", 60) is None
    assert [t.key for t in leased] == keys  # lowest confidence and most hidden first
    payload = leased[0].payload
    assert set(payload["annotations"]) == {"json", "cvat"}  # MOT is not a review format
    assert payload["out"] == str(out_dir) and payload["dataset"] == "/data"
    if unit == "track":
        assert payload["track_ids"] == [2] and payload["measures"]["lost_tracks"] == 1


def test_queue_location(tmp_path):
    recipe = parse_recipe({})
    assert queue_url(recipe, str(tmp_path)) == f"sqlite:///{tmp_path / 'review.db'}"
    assert queue_url(recipe, "s3://bucket/out", "postgresql://u@h/db") == "postgresql://u@h/db"
    with pytest.raises(ConfigError, match="review.db"):
        queue_url(recipe, "s3://bucket/out")
    assert task_key(ClipRecord(recording="a/b", clip_index=3)) == "clip:a/b:3"


@pytest.mark.parametrize("data, fmt", [
    (b"<?xml version='1.0'?><annotations/>", "cvat"),
    (b'{"schema": "preannotate/annotations", "version": 1}', "json"),
    (b'[{"data": {"video": "x"}, "annotations": []}]', "labelstudio"),
    (b'{"annotations": []}', "dataloop"),
    (b'{"id": 1, "data": {"video": "x"}, "annotations": []}', "labelstudio"),
    (b"not json", "json"),
])
def test_result_format_is_recognised(data, fmt):
    assert guess_format(data) == fmt
