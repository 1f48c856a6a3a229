"""Keyframe compaction: exact minimum against a plain dynamic programme, every frame within
tolerance, forced keyframes, bad input."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.compact.algorithm import (compact_tracks, exact_minimum, exact_total, plan_keyframes,
                           shortest_keyframes, verify)
from tasks.errors import ConfigError
from tasks.annotations.keyframes import check_keyframes, expand, normalise_dense
from tasks.store.tables import TRACK_SCHEMA


def floats(low: float, high: float):
    # No subnormals: torch's tests flush them process-wide, which hypothesis refuses.
    return st.floats(low, high, allow_subnormal=False)


def walk(rng: np.random.Generator, n: int, smooth: float, jitter: float) -> np.ndarray:
    """Boxes of an object moving with random acceleration, its size drifting, plus jitter."""
    centre = np.cumsum(np.cumsum(rng.normal(0, 0.2 * smooth, (n, 2)), axis=0), axis=0) + 200
    size = 40 + np.cumsum(rng.normal(0, 0.2, (n, 2)), axis=0).clip(-30, 30)
    return np.column_stack([centre - size / 2, centre + size / 2]) + rng.normal(0, jitter, (n, 4))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 90), smooth=floats(0.1, 3),
       jitter=floats(0, 1.5), tol=floats(0.2, 4))
def test_pixel_tolerance_matches_the_exact_minimum(seed, n, smooth, jitter, tol):
    boxes = walk(np.random.default_rng(seed), n, smooth, jitter)
    kept = shortest_keyframes(boxes, [0], [n - 1], max_error_px=tol)
    exact = exact_minimum(boxes, max_error_px=tol)
    assert len(kept) <= 1.05 * exact  # the bound ...
    assert len(kept) == exact  # ... and in fact the minimum
    assert kept[0] == 0 and kept[-1] == n - 1


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 90), smooth=floats(0.1, 3),
       tol=st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0]))
def test_whole_pixel_boxes_match_the_exact_minimum(seed, n, smooth, tol):
    """Trackers and detectors give whole pixels, where errors of exactly the tolerance are
    common: they count as within it, in the fast path as in the reference."""
    boxes = np.round(walk(np.random.default_rng(seed), n, smooth, 0.7))
    kept = shortest_keyframes(boxes, [0], [n - 1], max_error_px=tol)
    assert len(kept) == exact_minimum(boxes, max_error_px=tol)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 70), smooth=floats(0.1, 3),
       jitter=floats(0, 1.5), iou=floats(0.5, 0.98))
def test_iou_tolerance_matches_the_exact_minimum(seed, n, smooth, jitter, iou):
    boxes = walk(np.random.default_rng(seed), n, smooth, jitter)
    kept = shortest_keyframes(boxes, [0], [n - 1], min_iou=iou)
    assert len(kept) == exact_minimum(boxes, min_iou=iou)


def test_the_reference_programme_on_a_hand_example():
    # x1 goes 0, 0, 5, 0, 0: with 1 px nothing bridges the spike, so 0-1-2-3-4 minus what a
    # chord can skip: 0->1 (adjacent), 1->2, 2->3, 3->4: frames 1 and 3 cannot be skipped.
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 10, 10],
                      [0, 0, 10, 10]], float)
    assert exact_minimum(boxes, max_error_px=1) == 5
    # 0 -> 2 -> 4 bridges with an error of exactly 2.5 px: on the tolerance is within it.
    assert exact_minimum(boxes, max_error_px=2.5) == 3
    assert list(shortest_keyframes(boxes, [0], [4], max_error_px=2.5)) == [0, 2, 4]
    assert exact_minimum(boxes, max_error_px=2.49) == 5


def test_straight_and_still_objects_need_only_their_ends():
    t = np.arange(500)[:, None]
    moving = np.column_stack([10 + 0.7 * t, 20 + 0.1 * t, 60 + 0.7 * t, 90 + 0.1 * t])
    assert list(shortest_keyframes(moving, [0], [499], max_error_px=0.01)) == [0, 499]
    still = np.tile([5.0, 5.0, 50.0, 50.0], (20_000, 1))
    assert list(shortest_keyframes(still, [0], [19_999], max_error_px=0.5)) == [0, 19_999]


def dense_tracks(seed: int, n_tracks: int = 6) -> pa.Table:
    """Tracks as the tracking stage writes them, with hidden ranges, a hidden tail, label
    changes, a human box and a missing row (a gap)."""
    rng = np.random.default_rng(seed)
    parts = []
    for track_id in range(1, n_tracks + 1):
        n = int(rng.integers(30, 300))
        start = int(rng.integers(0, 50))
        boxes = walk(rng, n, float(rng.uniform(0.2, 2)), float(rng.uniform(0, 1)))
        hidden = np.zeros(n, bool)
        for _ in range(int(rng.integers(0, 3))):
            h = int(rng.integers(1, n - 1))
            hidden[h:h + int(rng.integers(1, 12))] = True
        if track_id == 2:
            hidden[-5:] = True  # hidden to the end: the same as ended
        label = np.where(np.arange(n) < int(rng.integers(0, n)), "car", "truck")
        source = np.full(n, "tracker", dtype=object)
        source[int(rng.integers(0, n))] = "human"
        frame = np.arange(start, start + n)
        parts.append(pa.table({
            "recording": ["rec"] * n, "clip_index": [track_id % 2] * n, "frame": frame,
            "global_frame": frame + 1000, "time_s": frame / 29.97, "label": label.tolist(),
            "model_label": label.tolist(), "score": rng.uniform(0.3, 1, n).astype(np.float32),
            "x1": boxes[:, 0], "y1": boxes[:, 1], "x2": boxes[:, 2], "y2": boxes[:, 3],
            "track_id": [track_id] * n, "hidden": hidden, "source": source.tolist()},
        ).cast(TRACK_SCHEMA))
    table = pa.concat_tables(parts)
    gap = pc.and_(pc.equal(table["track_id"], 3), pc.equal(table["frame"], table["frame"][0].as_py() + 9))
    return table.filter(pc.invert(gap))


@pytest.mark.parametrize("tolerance", [{"max_error_px": 0.5}, {"max_error_px": 2.0},
                                       {"min_iou": 0.9}, {"min_iou": 0.7}])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_frame_is_reproduced_within_tolerance(seed, tolerance):
    dense = dense_tracks(seed)
    keyframes = compact_tracks(dense, **tolerance)
    check_keyframes(keyframes)
    assert verify(dense, keyframes, **tolerance) == []  # every frame, hidden and labels exact
    assert keyframes.num_rows < normalise_dense(dense).num_rows


def test_frames_that_must_be_keyframes_are_kept_with_their_reason():
    dense = normalise_dense(dense_tracks(4), ["global_frame", "time_s", "label", "x1", "y1", "x2",
                                             "y2", "attributes", "source", "score"])
    keyframes = compact_tracks(dense, max_error_px=1000)  # only forced frames survive
    at = {(r["track_id"], r["frame"]): r for r in keyframes.to_pylist()}
    rows = dense.to_pylist()
    for prev, row, nxt in zip([None] + rows[:-1], rows, rows[1:] + [None]):
        key = (row["track_id"], row["frame"])
        first = prev is None or prev["track_id"] != row["track_id"]
        last = nxt is None or nxt["track_id"] != row["track_id"]
        if first:
            assert at[key]["kind"] == "start"
        elif last:
            assert at[key]["kind"] == "end"
        elif row["hidden"] and not prev["hidden"]:
            assert at[key]["kind"] == "hidden" and at[key]["hidden"]
        elif not row["hidden"] and prev["hidden"]:
            assert at[key]["kind"] == "shown"
        elif row["label"] != prev["label"]:
            assert at[key]["kind"] == "label" and at[key]["label"] == row["label"]
        elif row["source"] == "human" and not row["hidden"]:
            assert at[key]["kind"] == "human"
        elif not row["hidden"] and nxt["hidden"]:
            assert key in at  # the last visible box before a hidden range
        elif row["hidden"]:
            assert key not in at  # held: the hidden keyframe carries it
    ends = {r["track_id"]: r["end_frame"] for r in keyframes.to_pylist()}
    for track_id, end in ends.items():
        visible = [r["frame"] for r in rows if r["track_id"] == track_id and not r["hidden"]]
        assert end == max(visible)


def test_gap_frames_are_hidden_and_have_no_timestamp():
    dense = dense_tracks(5, n_tracks=1)
    dense = dense.set_column(dense.schema.get_field_index("hidden"), "hidden",
                             pa.array(np.zeros(dense.num_rows, bool)))
    first = dense["frame"][0].as_py()
    dense = dense.filter(pc.not_equal(dense["frame"], first + 4))  # a missing row
    keyframes = compact_tracks(dense, max_error_px=1)
    states = expand(keyframes)
    assert states.filter(pc.equal(states["frame"], first + 4))["hidden"].to_pylist() == [True]
    gap = keyframes.filter(pc.equal(keyframes["frame"], first + 4)).to_pylist()
    assert [(r["kind"], r["time_s"], r["global_frame"]) for r in gap] == \
        [("hidden", None, first + 4 + 1000)]
    assert keyframes.filter(pc.equal(keyframes["frame"], first + 5))["kind"].to_pylist() == ["shown"]


def test_empty_and_bad_input():
    assert compact_tracks(TRACK_SCHEMA.empty_table(), max_error_px=1).num_rows == 0
    with pytest.raises(ConfigError, match="exactly one tolerance"):
        compact_tracks(TRACK_SCHEMA.empty_table())
    with pytest.raises(ConfigError, match="exactly one tolerance"):
        compact_tracks(TRACK_SCHEMA.empty_table(), max_error_px=1, min_iou=0.5)
    with pytest.raises(ConfigError, match="max_error_px"):
        compact_tracks(TRACK_SCHEMA.empty_table(), max_error_px=-1)
    with pytest.raises(ConfigError, match="min_iou"):
        compact_tracks(TRACK_SCHEMA.empty_table(), min_iou=1.5)
    with pytest.raises(ConfigError, match="missing column"):
        compact_tracks(pa.table({"frame": [0]}), max_error_px=1)
    with pytest.raises(ValueError, match="inside the boxes"):
        shortest_keyframes(np.zeros((3, 4)), [0], [5], max_error_px=1)


@pytest.mark.parametrize("tolerance", [{"max_error_px": 1.0}, {"min_iou": 0.85}])
def test_whole_tables_compact_to_the_exact_minimum(tolerance):
    dense = dense_tracks(7, n_tracks=3)
    plan = plan_keyframes(dense)
    assert compact_tracks(dense, **tolerance).num_rows == exact_total(plan, **tolerance)
