"""The items table's schema, timeline addressing, and its documentation."""

from pathlib import Path

from tasks.store.items import COLUMNS, assign_timeline


def test_readme_documents_every_items_column():
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    missing = [name for name, _, _ in COLUMNS if f"| `{name}` |" not in readme]
    assert missing == []


def test_timeline_addresses_frames_across_clips():
    rows = [
        {"recording": "a", "clip_index": 1, "frame_count": 50, "duration_s": 2.0},
        {"recording": "a", "clip_index": 0, "frame_count": 100, "duration_s": 4.0},
        {"recording": "a", "clip_index": 2, "frame_count": None, "duration_s": None},
        {"recording": "a", "clip_index": 3, "frame_count": 10, "duration_s": 0.4},
        {"recording": "b", "clip_index": 0, "frame_count": 7, "duration_s": 1.0},
    ]
    assign_timeline(rows)
    got = {(r["recording"], r["clip_index"]): (r["global_first_frame"], r["recording_start_s"]) for r in rows}
    assert got == {("a", 0): (0, 0.0), ("a", 1): (100, 4.0), ("a", 2): (150, 6.0),
                   ("a", 3): (150, 6.0), ("b", 0): (0, 0.0)}


def test_readme_documents_every_detection_and_track_column():
    from tasks.store.tables import DETECTION_COLUMNS, SHOT_COLUMNS, TRACK_COLUMNS

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    missing = [name for name, _, _ in DETECTION_COLUMNS + TRACK_COLUMNS + SHOT_COLUMNS
               if f"| `{name}` |" not in readme]
    assert missing == []
