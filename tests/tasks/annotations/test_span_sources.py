"""Span files as tools write them: Prodigy db-out JSONL with audio_spans, Label Studio timeline
label exports; each bad line or range refused naming where it is."""

from __future__ import annotations

import json

import pytest

from configs import CONFIG_DIR
from tasks.annotations.spans import load_spans
from tasks.errors import SpanError
from tasks.labels import load_label_tree

TREE = load_label_tree(CONFIG_DIR / "labels" / "example.yaml")


def _jsonl(tmp_path, *examples) -> str:
    path = tmp_path / "db-out.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in examples) + "\n")
    return str(path)


def test_prodigy_accepted_audio_spans_are_spans(tmp_path):
    path = _jsonl(
        tmp_path,
        {"video": "https://host/review/site-a.webm", "answer": "accept",
         "audio_spans": [{"start": 0.5, "end": 2.25, "label": "Sub Task 1.2"},
                         {"start": 601.0, "end": 612.5, "label": "Task 1"}]},
        {"audio": "/data/other.webm", "meta": {"recording": "site/cam 1"}, "answer": "accept",
         "audio_spans": [{"start": 3, "end": 4, "label": "cyclist"}]},
        {"video": "x.webm", "answer": "reject", "audio_spans": [{"start": 0, "end": 1,
                                                                  "label": "Task 1"}]},
        {"video": "y.webm", "answer": "ignore"})
    rows = load_spans(path, TREE).to_pylist()
    assert [(r["recording"], r["start_s"], r["end_s"], r["label"]) for r in rows] == [
        ("site-a", 0.5, 2.25, "Task 1/Sub Task 1.2"), ("site-a", 601.0, 612.5, "Task 1"),
        ("site/cam 1", 3.0, 4.0, "people/cyclist")]
    assert rows[0]["note"] == "line 1 audio_spans[0]"


@pytest.mark.parametrize("example, message", [
    ({"video": "a.webm", "audio_spans": [{"start": "1", "end": 2, "label": "Task 1"}]},
     r"line 1 audio_spans\[0\]: start '1' is not a number of seconds"),
    ({"video": "a.webm", "audio_spans": [{"start": 1, "end": 2}]}, "label None is not a label"),
    ({"audio_spans": [{"start": 1, "end": 2, "label": "Task 1"}]}, "no recording"),
    ({"video": "a.webm", "audio_spans": [{"start": 3, "end": 2, "label": "Task 1"}]},
     "row 1: end_s 2.0 is not after start_s 3.0"),
    ({"video": "a.webm", "audio_spans": {"start": 1}}, "audio_spans is not a list"),
])
def test_bad_prodigy_lines_are_named(tmp_path, example, message):
    with pytest.raises(SpanError, match=message):
        load_spans(_jsonl(tmp_path, example), TREE)


def test_a_line_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "db-out.jsonl"
    path.write_text('{"video": "a.webm"}\n{broken\n')
    with pytest.raises(SpanError, match="line 2: not JSON"):
        load_spans(str(path), TREE)


def _timeline_task(ranges, label="Task 1", fps=25.0, cancelled=False, **data):
    region = {"id": "r1", "type": "timelinelabels", "from_name": "activity", "to_name": "video",
              "value": {"ranges": ranges, "timelinelabels": [label]}}
    return {"id": 1, "data": {"video": "/data/local-files/?d=review/site-a.webm", "fps": fps,
                              **data},
            "annotations": [{"id": 5, "was_cancelled": cancelled, "result": [region]}],
            "predictions": []}


def test_label_studio_timeline_frames_become_recording_seconds(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps([
        _timeline_task([{"start": 1, "end": 25}, {"start": 51, "end": 51}]),
        _timeline_task([{"start": 31, "end": 60}], label="Sub Task 1.1", fps=30000 / 1001,
                       recording="site/cam 1"),
        _timeline_task([{"start": 1, "end": 2}], cancelled=True)]))  # skipped: no spans
    rows = load_spans(str(path), TREE).to_pylist()
    assert [(r["recording"], r["start_s"], r["end_s"], r["label"]) for r in rows] == [
        ("site-a", 0.0, 1.0, "Task 1"), ("site-a", 2.0, 2.04, "Task 1"),
        ("site/cam 1", 30 * 1001 / 30000, 60 * 1001 / 30000, "Task 1/Sub Task 1.1")]


@pytest.mark.parametrize("task, message", [
    (_timeline_task([{"start": 0, "end": 3}]), r"ranges\[0\]: .* is not a 1-based frame range"),
    (_timeline_task([{"start": 1.5, "end": 3}]), "is not a 1-based frame range"),
    (_timeline_task([{"start": 1, "end": 3}], fps=None), "data.fps None is not a frame rate"),
    (_timeline_task([{"start": 1, "end": 3}], label=["a", "b"]), "is not one label"),
])
def test_bad_timeline_ranges_are_named(tmp_path, task, message):
    if isinstance(task["annotations"][0]["result"][0]["value"]["timelinelabels"][0], list):
        task["annotations"][0]["result"][0]["value"]["timelinelabels"] = ["a", "b"]
    path = tmp_path / "export.json"
    path.write_text(json.dumps([task]))
    with pytest.raises(SpanError, match=message):
        load_spans(str(path), TREE)
