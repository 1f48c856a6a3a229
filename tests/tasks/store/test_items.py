"""The items table's schema, timeline addressing, and its documentation."""

from pathlib import Path

import json

import pytest

from tasks.store.items import COLUMNS, assign_timeline, load_record, save_record
from tasks.store.record import ClipRecord
from tasks.store.storage import open_location


def test_readme_documents_every_items_column():
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    missing = [name for name, _, _ in COLUMNS if f"| `{name}` |" not in readme]
    assert missing == []


def test_timeline_addresses_frames_across_clips():
    rows = [
        ClipRecord(recording="a", clip_index=1, frame_count=50, duration_s=2.0),
        ClipRecord(recording="a", clip_index=0, frame_count=100, duration_s=4.0),
        ClipRecord(recording="a", clip_index=2, frame_count=None, duration_s=None),
        ClipRecord(recording="a", clip_index=3, frame_count=10, duration_s=0.4),
        ClipRecord(recording="b", clip_index=0, frame_count=7, duration_s=1.0),
    ]
    placed = assign_timeline(rows)
    assert [(r.recording, r.clip_index) for r in placed] == [(r.recording, r.clip_index) for r in rows]
    assert all(r.global_first_frame is None for r in rows)  # records are frozen: new ones made
    got = {(r.recording, r.clip_index): (r.global_first_frame, r.recording_start_s) for r in placed}
    assert got == {("a", 0): (0, 0.0), ("a", 1): (100, 4.0), ("a", 2): (150, 6.0),
                   ("a", 3): (150, 6.0), ("b", 0): (0, 0.0)}


def test_readme_documents_every_detection_and_track_column():
    from tasks.store.tables import DETECTION_COLUMNS, SHOT_COLUMNS, TRACK_COLUMNS

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    missing = [name for name, _, _ in DETECTION_COLUMNS + TRACK_COLUMNS + SHOT_COLUMNS
               if f"| `{name}` |" not in readme]
    assert missing == []


def test_record_fields_are_the_items_columns_plus_state_only_ones():
    from dataclasses import fields

    names = [f.name for f in fields(ClipRecord)]
    assert names[:len(COLUMNS)] == [name for name, _, _ in COLUMNS]
    assert names[len(COLUMNS):] == ["output_version"]  # kept in the state record, not the table


def test_record_is_frozen_and_typed_access_only():
    record = ClipRecord(recording="cam", clip_name="0.mp4")
    with pytest.raises(AttributeError):
        record.recording = "other"
    with pytest.raises(TypeError):
        record["recording"]
    with pytest.raises(TypeError):
        ClipRecord(recordng="cam")  # a misspelt field is an error where a record is made
    assert record.replace(clip_index=3).clip_index == 3 and record.clip_index is None


def test_state_record_round_trips_and_reads_older_ones(tmp_path):
    out = open_location(str(tmp_path))
    record = ClipRecord(source_uri="file:///a/0.mp4", recording="a", clip_index=0, status="converted",
                        parity_ok=True, output_uri="file:///o/0.webm", fps="30000/1001",
                        output_version="123:456")
    save_record(out, "abc", record)
    assert load_record(out, "abc") == record
    # An older version's record: a key no longer known is dropped, a new field reads as None.
    older = {**record.as_dict(), "retired_field": 1}
    del older["output_version"]
    (tmp_path / "_state" / "clips" / "abc.json").write_text(json.dumps(older))
    assert load_record(out, "abc") == record.replace(output_version=None)
    for bad in ("[1, 2]", "{not json", ""):  # unreadable: as good as none, the clip is redone
        (tmp_path / "_state" / "clips" / "abc.json").write_text(bad)
        assert load_record(out, "abc") is None
