"""Merged tables are rewritten only when their inputs changed (issue 15, point 12): the
signature follows every input file and the description, and a replaced target is not
taken for the one the record describes."""

from __future__ import annotations

import os

from tasks.store import merged
from tasks.store.storage import open_location


def test_the_signature_follows_inputs_and_description(tmp_path):
    out = open_location(str(tmp_path))
    state = tmp_path / "_state" / "detect"
    state.mkdir(parents=True)
    (state / "a.parquet").write_bytes(b"one")
    first = merged.signature(out, [out.path("_state/detect")], ["v1", [1, 2]])
    assert merged.signature(out, [out.path("_state/detect")], ["v1", [1, 2]]) == first
    assert merged.signature(out, [out.path("_state/detect")], ["v1", [1, 3]]) != first
    os.utime(state / "a.parquet", ns=(1, 1))  # rewritten with the same bytes: a new token
    touched = merged.signature(out, [out.path("_state/detect")], ["v1", [1, 2]])
    assert touched != first
    (state / "b.parquet").write_bytes(b"two")
    assert merged.signature(out, [out.path("_state/detect")], ["v1", [1, 2]]) != touched
    assert merged.signature(out, [out.path("_state/missing")], []) == merged.signature(out, [], [])


def test_a_merge_is_current_only_for_its_signature_and_its_own_file(tmp_path):
    out = open_location(str(tmp_path))
    target = out.path("detections.parquet")
    assert merged.current(out, target, "sig") is None  # never merged
    (tmp_path / "detections.parquet").write_bytes(b"table")
    merged.note(out, target, "sig", {"clips": 2})
    assert merged.current(out, target, "sig")["summary"] == {"clips": 2}
    assert merged.current(out, target, "other") is None
    (tmp_path / "detections.parquet").write_bytes(b"TABLE!")  # replaced behind our back
    assert merged.current(out, target, "sig") is None
    (tmp_path / "detections.parquet").unlink()
    assert merged.current(out, target, "sig") is None
