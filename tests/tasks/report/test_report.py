"""The run's per-clip rows: outcomes from the items table and the run's failures, counts
from the tables the stages wrote."""

from __future__ import annotations

import pyarrow as pa

from tasks.store.items import write_items
from tasks.store.record import ClipRecord
from tasks.report.rows import artifact_rows, clip_rows, outcome_counts, outcome_line
from tasks.store.storage import open_location
from tasks.store.tables import write_table


def _item(index, status, reason=None, detail=None, frames=0):
    done = status in ("converted", "skipped")
    return ClipRecord(recording="cam", clip_name=f"{index}.mp4", clip_index=index, status=status,
                      reason=reason, detail=detail, source_uri=f"/data/cam/{index}.mp4",
                      frame_count=frames, output_frames=frames if done else None,
                      output_uri=f"/out/cam/{index}.webm" if done else None,
                      parity_ok=True if done else None)


def _rows(clips_and_tracks):
    return pa.table({"recording": ["cam"] * len(clips_and_tracks),
                     "clip_index": pa.array([c for c, _ in clips_and_tracks], pa.int32()),
                     "track_id": pa.array([t for _, t in clips_and_tracks], pa.int32())})


def test_rows_outcomes_and_counts(tmp_path):
    out = open_location(str(tmp_path))
    write_items(out, [_item(0, "converted", frames=90), _item(1, "skipped", frames=60),
                      _item(2, "blocked", "truncated", "cut short", frames=10),
                      _item(3, "failed", "storage_error", "S3 said no"),
                      _item(4, "converted", frames=30)])
    write_table(out, out.path("detections.parquet"), _rows([(0, 0), (0, 0), (1, 0), (4, 0)]))
    write_table(out, out.path("tracks.parquet"), _rows([(0, 1), (0, 1), (0, 2), (1, 1)]))
    write_table(out, out.path("keyframes.parquet"), _rows([(0, 1), (0, 2), (0, 2), (1, 1)]))
    summary = {"review": {"per_clip": [["cam", 0, 1], ["cam", 1, 2]]},
               "track": {"failed": [{"unit": "track /out/cam/4.webm #3", "clip": "/out/cam/4.webm",
                                     "error": "boom"}]},
               "export": {"failed": [{"unit": "review queue", "error": "down"}]}}
    rows = clip_rows(out, summary)
    assert [(r["clip"], r["status"]) for r in rows] == [
        ("cam/0.mp4", "done"), ("cam/1.mp4", "done"), ("cam/2.mp4", "blocked"),
        ("cam/3.mp4", "failed"), ("cam/4.mp4", "failed")]
    assert rows[2]["reason"] == "truncated"
    assert rows[3]["reason"] == "convert: storage_error: S3 said no"
    assert rows[4]["reason"] == "track: boom"
    assert [(r["frames"], r["detections"], r["tracks"], r["keyframes"], r["review_tasks"])
            for r in rows] == [(90, 2, 2, 3, 1), (60, 1, 1, 1, 2), (10, 0, 0, 0, 0),
                               (0, 0, 0, 0, 0), (30, 1, 0, 0, 0)]
    counts = outcome_counts(rows)
    assert counts == {"done": 2, "blocked": 1, "failed": 2}
    assert outcome_line(counts) == "2 done, 1 blocked, 2 failed clip(s)"
    assert list(artifact_rows(rows)[0]) == ["clip", "status", "reason", "frames", "detections",
                                            "tracks", "keyframes", "review_tasks"]


def test_no_items_no_rows(tmp_path):
    assert clip_rows(open_location(str(tmp_path)), {}) == []


def test_stage_failures_keep_their_stage_and_clip():
    from tasks.report.rows import stage_failures

    summary = {"detect": {"failed": [{"clip": "s3://b/out/a b.webm", "error": "E"}]},
               "export": {"failed": [{"unit": "review queue", "error": "down"}]}}
    assert stage_failures(summary) == [
        {"clip": "s3://b/out/a b.webm", "error": "E", "stage": "detect"},
        {"unit": "review queue", "error": "down", "stage": "export"}]
