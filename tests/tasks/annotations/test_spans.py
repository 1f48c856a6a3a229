"""Time spans -> per-frame labels: hand-made timelines (VFR, gaps, spans crossing clips,
exact frame boundaries), span-file checks, label paths, and a real converted recording
whose WebM frames are decoded to check every row."""

from __future__ import annotations

import json
import random
from fractions import Fraction

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.store.record import ClipRecord
from tasks.convert.batch import run_batch
from tasks.media.frames import Timeline
from tasks.labels import LabelTree
from tasks.recipe import parse_recipe
from tasks.annotations.spans import FRAME_LABEL_SCHEMA, SPAN_SCHEMA, frame_labels, frame_labels_uri, load_spans
from tasks.errors import SpanError
from tests import synth

MS = Fraction(1, 1000)


def _spans(*rows) -> pa.Table:
    """Spans as (recording, start_s, end_s, label); span ids 1, 2, ... in order."""
    return pa.table({"span_id": list(range(1, len(rows) + 1)),
                     "recording": [r[0] for r in rows], "start_s": [float(r[1]) for r in rows],
                     "end_s": [float(r[2]) for r in rows], "label": [r[3] for r in rows],
                     "note": [None] * len(rows)}, schema=SPAN_SCHEMA)


def _clip(index: int, start_s: float, first_frame: int, recording: str = "rec") -> ClipRecord:
    return ClipRecord(recording=recording, clip_index=index, recording_start_s=start_s,
                      global_first_frame=first_frame)


def _us(seconds: Fraction) -> int:
    return round(seconds * 1_000_000)


def _expected(spans: pa.Table, records, timelines) -> set[tuple]:
    """The half-open rule on the microsecond grid, in exact fractions and frame by frame:
    {(clip, frame, label, first span)}."""
    found = {}
    for span in spans.to_pylist():
        start, end = _us(Fraction(span["start_s"])), _us(Fraction(span["end_s"]))
        for r in records:
            t = timelines.get((r.recording, r.clip_index))
            if r.recording != span["recording"] or t is None:
                continue
            zero = Fraction(str(r.recording_start_s))
            for i, pts in enumerate(t.pts.tolist()):
                if start <= _us(zero + (pts - int(t.pts[0])) * t.time_base) < end:
                    found.setdefault((r.clip_index, i, span["label"]), span["span_id"])
    return {(*key, span_id) for key, span_id in found.items()}


def _got(table: pa.Table) -> set[tuple]:
    return set(zip(*(table[c].to_pylist() for c in ("clip_index", "frame", "label", "span_id"))))


def _frames(table: pa.Table, label: str | None = None) -> list[tuple[int, int]]:
    rows = table.to_pylist()
    return [(r["clip_index"], r["frame"]) for r in rows if label is None or r["label"] == label]


def test_vfr_clip_uses_its_real_timestamps():
    times = synth.vfr_times()  # steps of 1/30 and 1/10 s, and a 2 s gap after frame 9
    timeline = Timeline([int(t * 30) for t in times], Fraction(1, 30))
    records, timelines = [_clip(0, 0.0, 0)], {("rec", 0): timeline}
    spans = _spans(("rec", 0.5, 2.9, "walk"), ("rec", float(times[10]), 3.0, "run"))
    table = frame_labels(spans, records, timelines)
    assert table.schema == FRAME_LABEL_SCHEMA
    # Across the gap: frames 8, 9 (0.533, 0.567 s) and 10-13 (2.667 to 2.833 s).
    walk = [i for i, t in enumerate(times) if Fraction(1, 2) <= t < Fraction(29, 10)]
    assert _frames(table, "walk") == [(0, i) for i in walk] and walk
    assert _frames(table, "run")[0] == (0, 10)  # starts exactly on frame 10's time
    assert np.array_equal(table["time_s"].to_numpy(),
                          [float(timeline.time_s(f)) for f in table["frame"].to_pylist()])
    assert _got(table) == _expected(spans, records, timelines)


def test_gap_between_clips_gets_no_labels():
    tenth = [0, 100, 200, 300, 400]  # ms
    timelines = {("rec", 0): Timeline(tenth, MS), ("rec", 1): Timeline(tenth, MS)}
    records = [_clip(0, 0.0, 0), _clip(1, 10.0, 5)]  # clip 1 starts 9.5 s after clip 0 ends
    spans = _spans(("rec", 0.35, 10.15, "a"), ("rec", 5, 6, "in the gap"))
    table = frame_labels(spans, records, timelines)
    assert _frames(table) == [(0, 4), (1, 0), (1, 1)]
    assert table["global_frame"].to_pylist() == [4, 5, 6]
    assert table["recording_time_s"].to_pylist() == [0.4, 10.0, 10.1]


def test_span_crossing_three_clips_labels_tail_middle_and_head():
    # 25 fps clips whose own timestamps do not start at 0 (the clip's first frame is t0).
    timelines = {("rec", k): Timeline(np.arange(10) * 40 + offset, MS)
                 for k, offset in enumerate((0, 1000, 77))}
    records = [_clip(2, 0.8, 20), _clip(0, 0.0, 0), _clip(1, 0.4, 10)]  # any order
    spans = _spans(("rec", 0.3, 0.9, "cross"))
    table = frame_labels(spans, records, timelines)
    assert _frames(table) == [(0, 8), (0, 9)] + [(1, i) for i in range(10)] + [(2, 0), (2, 1), (2, 2)]
    assert table["global_frame"].to_pylist() == list(range(8, 23))
    assert table["time_s"].to_pylist()[2] == 1.0  # clip 1's own WebM time, not the recording's
    assert _got(table) == _expected(spans, records, timelines)


def test_exact_frame_boundaries_are_half_open():
    timelines = {("rec", 0): Timeline(np.arange(10) * 40, MS),
                 ("rec", 1): Timeline(np.arange(10) * 40, MS)}
    records = [_clip(0, 0.0, 0), _clip(1, 0.4, 10)]
    # 0.4 + 0.04 is 0.44000000000000006 in floats: the microsecond grid makes it 0.44.
    spans = _spans(("rec", 0.12, 0.2, "a"), ("rec", 0.2, 0.24, "b"), ("rec", 0.44, 0.52, "c"))
    table = frame_labels(spans, records, timelines)
    assert _frames(table, "a") == [(0, 3), (0, 4)]  # 0.12 in, 0.2 out
    assert _frames(table, "b") == [(0, 5)]          # back to back: 0.2 belongs to b only
    assert _frames(table, "c") == [(1, 1), (1, 2)]  # 0.44 in, 0.52 out


def test_span_outside_every_clip_gives_no_rows():
    timelines = {("rec", 0): Timeline(np.arange(10) * 40, MS)}
    spans = _spans(("rec", 0.4, 3.0, "after the end"), ("rec", 0.395, 0.399, "between frames"))
    assert frame_labels(spans, [_clip(0, 0.0, 0)], timelines).num_rows == 0


def test_overlapping_spans_give_two_labels_and_same_labels_one_row():
    timelines = {("rec", 0): Timeline(np.arange(10) * 40, MS)}
    spans = _spans(("rec", 0.0, 0.2, "walk"), ("rec", 0.1, 0.3, "talk"),
                   ("rec", 0.15, 0.3, "walk"))
    table = frame_labels(spans, [_clip(0, 0.0, 0)], timelines)
    by_frame = {}
    for row in table.to_pylist():
        by_frame.setdefault(row["frame"], []).append((row["label"], row["span_id"]))
    assert by_frame[3] == [("talk", 2), ("walk", 1)]
    assert by_frame[4] == [("talk", 2), ("walk", 1)]   # both walk spans: the first wins
    assert by_frame[5] == [("talk", 2), ("walk", 3)]
    assert _got(table) == _expected(spans, [_clip(0, 0.0, 0)], timelines)


def test_unconverted_clip_is_skipped_and_unknown_recording_refused():
    timelines = {("rec", 1): Timeline(np.arange(5) * 40, MS)}
    records = [_clip(0, 0.0, 0), _clip(1, 0.2, 5)]  # clip 0 has no WebM (no timeline)
    assert _frames(frame_labels(_spans(("rec", 0, 1, "a")), records, timelines)) == [
        (1, i) for i in range(5)]
    with pytest.raises(SpanError, match=r"row\(s\) 2 name recording\(s\) 'rek'.*known: rec"):
        frame_labels(_spans(("rec", 0, 1, "a"), ("rek", 0, 1, "a")), records, timelines)


def test_random_vfr_clips_match_the_exact_rule():
    rng = random.Random(7)
    for _ in range(20):
        records, timelines, start, first = [], {}, Fraction(0), 0
        base = rng.choice([Fraction(1, 1000), Fraction(1, 90000), Fraction(1001, 30000)])
        for k in range(rng.randint(1, 4)):
            steps = [rng.randint(1, 40) for _ in range(rng.randint(1, 30))]
            pts = np.cumsum([rng.randint(0, 500)] + steps)
            timelines[("r", k)] = Timeline(pts, base)
            records.append(_clip(k, round(float(start), 6), first, "r"))
            gap = rng.choice([0, Fraction(1, 3)])  # clips back to back, or a gap between
            start += (int(pts[-1] - pts[0]) + rng.randint(1, 40)) * base + gap
            first += len(pts)
        # Spans at frame times (exactly on the boundary) and at random times.
        ats = [float(Fraction(str(r.recording_start_s)) + (p - int(t.pts[0])) * t.time_base)
               for r in records for t in [timelines[("r", r.clip_index)]] for p in t.pts.tolist()]
        rows = []
        for n in range(6):
            a, b = sorted(rng.sample(ats, 2) if n % 2 else [rng.uniform(0, ats[-1] + 0.1)
                                                           for _ in range(2)])
            rows.append(("r", a, b + (0.001 if b == a else 0), rng.choice("xy")))
        spans = _spans(*rows)
        table = frame_labels(spans, records, timelines)
        assert _got(table) == _expected(spans, records, timelines)


# --- span files --------------------------------------------------------------------------


def _write(tmp_path, name: str, content) -> str:
    path = tmp_path / name
    if name.endswith(".parquet"):
        pq.write_table(pa.table(content), path)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_csv_parquet_and_json_give_the_same_spans(tmp_path):
    rows = [{"recording": "01", "start_s": 0.5, "end_s": 2, "label": "walk", "note": "n"},
            {"recording": "01", "start_s": 1, "end_s": 3.25, "label": " talk ", "note": None}]
    csv = "recording,start_s,end_s,label,note\n01,0.5,2,walk,n\n01,1,3.25, talk ,\n"
    tables = [load_spans(_write(tmp_path, "s.csv", csv)),
              load_spans(_write(tmp_path, "s.json", rows)),
              load_spans(_write(tmp_path, "s.parquet", {k: [r[k] for r in rows] for k in rows[0]}))]
    assert tables[0].schema == SPAN_SCHEMA
    assert tables[0].to_pylist() == [
        {"span_id": 1, "recording": "01", "start_s": 0.5, "end_s": 2.0, "label": "walk", "note": "n"},
        {"span_id": 2, "recording": "01", "start_s": 1.0, "end_s": 3.25, "label": "talk", "note": None}]
    assert tables[1].equals(tables[0]) and tables[2].equals(tables[0])


H = "recording,start_s,end_s,label\n"
J = {"recording": "r", "start_s": 1, "end_s": 2, "label": "a"}


@pytest.mark.parametrize("name, content, message", [
    ("s.csv", "recording,start_s,label\nr,1,a\n", "missing column.s. end_s"),
    ("s.csv", H + "r,1,2,a\nr,one,2,a\n", "row 2: start_s 'one' is not a time"),
    ("s.csv", H + "r,-1,2,a\n", "row 1: start_s -1 is not a time in seconds >= 0"),
    ("s.csv", H + "r,1,2,a\nr,2,,a\n", "row 2: end_s is empty"),
    ("s.csv", H + "r,1,2,a\nr,3,3,a\n", "row 2: end_s 3.0 is not after start_s 3.0"),
    ("s.csv", H + "r,5,2,a\n", "row 1: end_s 2.0 is not after start_s 5.0"),
    ("s.csv", H + ",1,2,a\n", "row 1: recording is empty"),
    ("s.csv", H + "r,1,2, \n", "row 1: label is empty"),
    ("s.csv", H + "r,1,2,a//b\n", "row 1: label 'a//b' has an empty part"),
    ("s.csv", H + "r,1,2\n", "not a readable CSV"),
    ("s.json", [{**J, "end_s": "inf"}], "row 1: end_s 'inf' is not a time"),
    ("s.json", [{**J, "start_s": True}], "row 1: start_s True is not a time"),
    ("s.json", {"spans": []}, "expected a JSON list of span objects, got dict"),
    ("s.json", [J, [1]], "row 2: expected an object"),
    ("s.json", "[{", "not a readable JSON"),
    ("s.parquet", {"recording": ["r"], "start_s": [float("nan")], "end_s": [1.0], "label": ["a"]},
     "row 1: start_s nan"),
    ("s.txt", "r 1 2 a", "unknown file type 'txt'"),
])
def test_bad_span_files_are_refused_naming_the_row(tmp_path, name, content, message):
    with pytest.raises(SpanError, match=message):
        load_spans(_write(tmp_path, name, content))


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(SpanError, match="cannot read"):
        load_spans(str(tmp_path / "nope.csv"))


TREE = LabelTree(("Task 1", "Task 1/Sub Task 1.1", "Task 1/Sub Task 1.2", "people",
                  "people/walking", "animals", "animals/walking"))


def test_labels_are_paths_of_the_labels_file(tmp_path):
    csv = (H + "r,0,1,Task 1/Sub Task 1.2\nr,0,1,Sub Task 1.1\n"
           "r,0,1,Task 1\nr,0,1, people / walking \n")
    spans = load_spans(_write(tmp_path, "s.csv", csv), TREE)
    assert spans["label"].to_pylist() == ["Task 1/Sub Task 1.2", "Task 1/Sub Task 1.1",
                                          "Task 1", "people/walking"]


@pytest.mark.parametrize("label, message", [
    ("Task 2", r"row 2: label 'Task 2' is not in the labels file \(known: Task 1, "),
    ("walking", "row 2: label 'walking' is ambiguous: people/walking, animals/walking"),
    ("Sub Task 1.2/x", "row 2: label 'Sub Task 1.2/x' is not in the labels file"),
])
def test_unknown_or_ambiguous_labels_are_refused(tmp_path, label, message):
    csv = H + f"r,0,1,Task 1\nr,0,1,{label}\n"
    with pytest.raises(SpanError, match=message):
        load_spans(_write(tmp_path, "s.csv", csv), TREE)


# --- a real converted recording ------------------------------------------------------------


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Recording ``cam``: a B-frame H.264 clip, a VFR clip (2 s gap inside), a 29.97 clip."""
    root = tmp_path_factory.mktemp("spans")
    cam = root / "data" / "cam"
    cam.mkdir(parents=True)
    synth.make_clip(cam / "1.mp4", frames=30, gop=12, bframes=True)
    synth.make_vfr(cam / "2.mp4")
    synth.make_clip(cam / "3.mp4", frames=24, rate=Fraction(30000, 1001))
    summary = run_batch(str(root / "data"), str(root / "out"), parse_recipe({}), "convert")
    assert summary.counts == {"converted": 3}
    labels = root / "labels.yaml"
    labels.write_text("activity:\n  walk: null\n  run: null\nother: null\n")
    return root, labels


def _decoded_times(uri: str) -> list[Fraction]:
    with av.open(uri) as container:
        stream = container.streams.video[0]
        return [frame.pts * stream.time_base for frame in container.decode(stream)]


def test_frame_labels_on_converted_clips_match_decoded_frames(converted, tmp_path):
    root, labels = converted
    out = root / "out"
    items = [ClipRecord.from_dict(r) for r in pq.read_table(out / "items.parquet").to_pylist()]
    decoded = {r.clip_index: _decoded_times(r.output_uri) for r in items}
    starts = {r.clip_index: Fraction(str(r.recording_start_s)) for r in items}
    at = {k: [starts[k] + t - times[0] for t in times] for k, times in decoded.items()}
    # One span from clip 0's frame 25 to clip 2's frame 3 (exact frame times: half-open),
    # one on the VFR clip's far side of its gap, one after the recording's end.
    spans = [("cam", float(at[0][25]), float(at[2][3]), "walk"),
             ("cam", float(at[1][12]), float(at[1][15]) + 0.001, "activity/run"),
             ("cam", float(at[2][-1]) + 5, float(at[2][-1]) + 6, "other")]
    path = tmp_path / "spans.csv"
    path.write_text("recording,start_s,end_s,label\n" +
                    "".join(f"{r},{a!r},{b!r},{label}\n" for r, a, b, label in spans))
    summary = frame_labels_uri(str(out), parse_recipe({}), str(path), str(labels))
    table = pq.read_table(out / "frame_labels.parquet")
    assert pq.read_table(out / "spans.parquet").num_rows == summary["spans"] == 3
    assert summary["frame_labels"] == table.num_rows and summary["spans_without_rows"] == [3]
    rows = table.to_pylist()
    for row in rows:  # every row's time is the WebM's decoded time of that frame
        assert row["time_s"] == float(decoded[row["clip_index"]][row["frame"]])
        assert row["global_frame"] == items[row["clip_index"]].global_first_frame + row["frame"]
    walk = [(r["clip_index"], r["frame"]) for r in rows if r["label"] == "activity/walk"]
    assert walk == ([(0, i) for i in range(25, 30)] + [(1, i) for i in range(len(decoded[1]))]
                    + [(2, 0), (2, 1), (2, 2)])
    run = [(r["clip_index"], r["frame"]) for r in rows if r["label"] == "activity/run"]
    assert run == [(1, 12), (1, 13), (1, 14), (1, 15)]
    # And the same set as the exact rule applied to the decoded times.
    expected = {(k, i, label)
                for _, a, b, label in spans for k in at for i, t in enumerate(at[k])
                if Fraction(repr(a)) <= t < Fraction(repr(b))}
    expected = {(k, i, label.split("/")[-1]) for k, i, label in expected}
    assert {(r["clip_index"], r["frame"], r["label"].split("/")[-1]) for r in rows} == expected
