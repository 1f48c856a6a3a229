"""A recording's review video: its converted clips (a B-frame H.264 clip, a VFR clip with a
2 s gap, a 29.97 clip; and a 260-frame clip with keyframes inside) joined into parts, checked
by decoding every frame against the clip frame the map names; time spans given on it (Label
Studio timeline ranges, Prodigy seconds) land on the right frames of the clips."""

from __future__ import annotations

import json
from fractions import Fraction

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from tasks.annotations.spans import frame_labels_uri, recording_micros
from tasks.convert.batch import run_batch
from tasks.errors import MediaReadError, SpanError
from tasks.media.webm import webm_timeline
from tasks.recipe import parse_recipe
from tasks.annotations import review_frames, review_video
from tasks.store.items import read_records
from tasks.store.storage import open_location
from tests import synth


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("review-video")
    cam, long = root / "data" / "cam", root / "data" / "long"
    cam.mkdir(parents=True)
    long.mkdir(parents=True)
    synth.make_clip(cam / "1.mp4", frames=30, gop=12, bframes=True)
    synth.make_vfr(cam / "2.mp4")
    synth.make_clip(cam / "3.mp4", frames=24, rate=Fraction(30000, 1001))
    synth.make_clip(long / "1.mp4", frames=260, size=(64, 48))
    (root / "data" / "mixed").mkdir()
    synth.make_clip(root / "data" / "mixed" / "1.mp4", frames=5, size=(64, 48))
    synth.make_clip(root / "data" / "mixed" / "2.mp4", frames=5, size=(96, 64))
    summary = run_batch(str(root / "data"), str(root / "out"), parse_recipe({}), "convert")
    assert summary.counts == {"converted": 6}
    return root


def _decoded(path) -> tuple[list[np.ndarray], list[Fraction]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return ([f.to_ndarray(format="yuv420p") for f in frames],
                [f.pts * stream.time_base for f in frames])


def _build(root, cap: int):
    out = open_location(str(root / "out"))
    return out, review_video.build_all(out.root, parse_recipe(
        {"review": {"recording_video": {"max_part_bytes": cap}}}))


def test_one_part_holds_every_clip_frame_bit_exact_in_recording_time(converted):
    out, made = _build(converted, 1 << 30)
    (cam,) = [v for v in made["videos"] if v["recording"] == "cam"]
    assert cam["made"] and cam["frames"] == 30 + 20 + 24 and len(cam["parts"]) == 1
    records = [r for r in read_records(out) if r.recording == "cam"]
    table = pq.read_table(converted / "out" / "review_video" / "cam.frames.parquet")
    pixels, times = _decoded(converted / "out" / "review_video" / "cam.part-001.webm")
    assert len(pixels) == table.num_rows == 74
    clips = {r.clip_index: _decoded(r.output_uri)[0] for r in records}
    at = {r.clip_index: recording_micros(r, webm_timeline(out, r)) for r in records}
    for row, image, t in zip(table.to_pylist(), pixels, times):
        # The same decoded pixels as the clip's frame: remuxed, nothing re-encoded.
        assert np.array_equal(image, clips[row["clip_index"]][row["frame"]])
        assert row["part_time_s"] == float(t)
        assert round(row["recording_time_s"] * 1e6) == at[row["clip_index"]][row["frame"]]
        assert abs(float(t) - row["recording_time_s"]) < 0.0006  # its clock is the recording's
    # The VFR clip's 2 s gap is still a gap.
    assert max(np.diff([float(t) for t in times])) > 2.0
    _, again = _build(converted, 1 << 30)
    assert again["videos"][0]["made"] is False  # same WebMs, same cap: not joined again


def test_a_cap_splits_at_clip_starts_and_keyframes_and_a_new_cap_rejoins(converted):
    out, made = _build(converted, 40_000)
    cam, long, _ = sorted(made["videos"], key=lambda v: v["recording"])
    # 22 + 16 kB of packets and the container's share are over 40 kB; 16 + 19 kB are not
    assert [p["frames"] for p in cam["parts"]] == [30, 20 + 24]
    assert all(p["bytes"] <= 40_000 for p in cam["parts"])
    # 260 frames, keyframes at 0, 128 and 256, about 28 kB a GOP: a part per 40 kB.
    assert [p["frames"] for p in long["parts"]] == [128, 132]
    assert all(p["bytes"] <= 40_000 for p in long["parts"])
    _, small = _build(converted, 20_000)  # a GOP over the cap is a part alone
    assert [p["frames"] for p in small["videos"][1]["parts"]] == [128, 128, 4]
    table = pq.read_table(converted / "out" / "review_video" / "long.frames.parquet")
    assert table["frame"].to_pylist() == list(range(260))  # none dropped or repeated
    for part in small["videos"][1]["parts"]:
        pixels, _ = _decoded(converted / "out" / "review_video" / part["file"])
        assert len(pixels) == part["frames"]  # each part decodes alone: it starts on a keyframe
    rejoined = review_video.build_all(out.root, parse_recipe({}), ["long"])
    assert [p["frames"] for p in rejoined["videos"][0]["parts"]] == [260]
    assert not (converted / "out" / "review_video" / "long.part-002.webm").exists()


def _ls_task(part: str, fps: float, ranges: list[tuple[int, int]], label: str = "walk") -> list:
    result = [{"id": f"r{k}", "type": "timelinelabels", "from_name": "activity",
               "to_name": "video", "value": {"ranges": [{"start": a, "end": b}],
                                             "timelinelabels": [label]}}
              for k, (a, b) in enumerate(ranges)]
    return [{"id": 1, "data": {"video": f"/data/upload/1/0123abcd-{part}.webm", "fps": fps,
                               "review_video": part},
             "annotations": [{"id": 1, "result": result, "was_cancelled": False}]}]


def test_a_clip_of_another_size_starts_a_part(converted):
    _, made = _build(converted, 1 << 30)
    (mixed,) = [v for v in made["videos"] if v["recording"] == "mixed"]
    assert [(p["frames"], p["width"], p["height"]) for p in mixed["parts"]] == [
        (5, 64, 48), (5, 96, 64)]


def test_timeline_ranges_on_the_review_video_land_on_the_clips_frames(converted, tmp_path):
    out, _ = _build(converted, 1 << 30)
    table = pq.read_table(converted / "out" / "review_video" / "cam.frames.parquet").to_pylist()
    _, times = _decoded(converted / "out" / "review_video" / "cam.part-001.webm")
    # Slots 26..40 at 25 fps cross from clip 0 into the VFR clip, 60..62 are inside its 2 s
    # gap (no frame), 100..102 after it.
    ranges = [(26, 40), (60, 62), (100, 102)]
    spans = tmp_path / "timeline.json"
    spans.write_text(json.dumps(_ls_task("cam.part-001", 25.0, ranges)))
    summary = frame_labels_uri(str(out.root), parse_recipe({}), str(spans))
    assert summary["spans"] == 3 and summary["spans_without_rows"] == [2]
    rows = pq.read_table(converted / "out" / "frame_labels.parquet").to_pylist()
    slot = [round(float(t) * 25) + 1 for t in times]  # each decoded frame's nearest slot
    expected = [(table[k]["clip_index"], table[k]["frame"]) for k in range(len(times))
                if any(a <= slot[k] <= b for a, b in ranges)]
    assert [(r["clip_index"], r["frame"]) for r in rows] == expected
    assert {c for c, _ in expected} == {0, 1}  # both clips, VFR included
    assert max(f for c, f in expected if c == 1) >= 10  # beyond the gap
    # Shown back as a Label Studio prediction (`review push --timeline`), the ranges label
    # the same frames again.
    from tasks.review.ls_timeline import _prediction

    info = review_frames.read_info(out, "cam")
    labelled = pq.read_table(converted / "out" / "frame_labels.parquet")
    predicted = _prediction(info, info["parts"][0], review_frames.read_frame_map(out, "cam"),
                            labelled)
    again = [(r["value"]["ranges"][0]["start"], r["value"]["ranges"][0]["end"]) for r in predicted]
    assert len(again) == 2 and again[0][0] == 26
    spans.write_text(json.dumps(_ls_task("cam.part-001", 25.0, again)))
    frame_labels_uri(str(out.root), parse_recipe({}), str(spans))
    assert pq.read_table(converted / "out" / "frame_labels.parquet").to_pylist() == [
        {**r, "span_id": 1 if r["span_id"] == 1 else 2} for r in rows]
    written = pq.read_table(converted / "out" / "spans.parquet").to_pylist()
    first = next(r for r in table if slot[table.index(r)] >= 26)
    assert written[0]["recording"] == "cam" and written[0]["start_s"] == first["recording_time_s"]


def test_prodigy_seconds_on_the_review_video_are_recording_time(converted, tmp_path):
    out, _ = _build(converted, 1 << 30)
    table = pq.read_table(converted / "out" / "review_video" / "cam.frames.parquet").to_pylist()
    after_gap = next(r for r in table if r["clip_index"] == 1 and r["frame"] == 10)
    spans = tmp_path / "prodigy.jsonl"
    spans.write_text(json.dumps({"video": "cam.part-001.webm", "answer": "accept", "audio_spans": [
        {"start": after_gap["part_time_s"], "end": after_gap["part_time_s"] + 0.05,
         "label": "run"}]}) + "\n")
    frame_labels_uri(str(out.root), parse_recipe({}), str(spans))
    (span,) = pq.read_table(converted / "out" / "spans.parquet").to_pylist()
    assert span["recording"] == "cam" and span["start_s"] == after_gap["recording_time_s"]
    rows = pq.read_table(converted / "out" / "frame_labels.parquet").to_pylist()
    assert (rows[0]["clip_index"], rows[0]["frame"]) == (1, 10)


@pytest.mark.parametrize("task, message", [
    (_ls_task("cam.part-009", 25.0, [(1, 2)]), "review video 'cam.part-009' is not in"),
    (_ls_task("cam.part-001", 30.0, [(1, 2)]), "is not the review video's rate 25"),
    (_ls_task("cam.part-001", 25.0, [(500, 510)]), r"frames 500\.\.510 are after the last "
     "frame of cam part 1"),
    (_ls_task("cam.part-001", 25.0, [(20, 10)]), r"region 'r0' ranges\[0\].*not a 1-based "
     r"frame range \(start <= end\)"),
])
def test_a_range_on_an_unknown_part_or_at_another_rate_is_refused(converted, tmp_path, task,
                                                                   message):
    out, _ = _build(converted, 1 << 30)
    spans = tmp_path / "timeline.json"
    spans.write_text(json.dumps(task))
    with pytest.raises(SpanError, match=message):
        frame_labels_uri(str(out.root), parse_recipe({}), str(spans))


def test_a_review_video_range_without_its_out_is_refused(tmp_path):
    from tasks.annotations.spans import load_spans

    spans = tmp_path / "timeline.json"
    spans.write_text(json.dumps(_ls_task("cam.part-001", 25.0, [(1, 2)])))
    with pytest.raises(SpanError, match="give the spans file with the OUT"):
        load_spans(str(spans))


def test_no_converted_clip_or_unknown_recording_is_said(converted):
    out, _ = _build(converted, 1 << 30)
    with pytest.raises(SpanError, match="no recording 'nope'"):
        review_video.build_all(out.root, parse_recipe({}), ["nope"])
    with pytest.raises(SpanError, match="convert the dataset first"):
        review_video.build_all(str(converted / "empty"), parse_recipe({}))


def test_the_cli_makes_them_and_says_what_it_made(converted, capsys):
    from flows.cli import main

    assert main(["review", "video", "--out", str(converted / "out"), "--recording", "long"]) == 0
    printed = json.loads(capsys.readouterr().out)
    (long,) = printed["videos"]
    assert long["recording"] == "long" and long["frames"] == 260 and long["clips_left_out"] == 0
    assert main(["review", "video", "--out", str(converted / "out"), "--recording", "nope"]) == 2
    assert "no recording 'nope'" in capsys.readouterr().err


def test_a_join_that_stops_midway_is_not_read_and_a_rerun_makes_the_same_files(
        converted, monkeypatch):
    folder = converted / "out" / "review_video"
    _build(converted, 20_000)
    before = {p.name: p.read_bytes() for p in folder.glob("long.*")}
    assert len([n for n in before if n.endswith(".webm")]) == 3
    checked = []

    def stop_at_the_second_part(self, part):
        checked.append(part.number)
        if part.number == 2:
            raise OSError("no space left on device")

    monkeypatch.setattr(review_video._Joiner, "_check", stop_at_the_second_part)
    with pytest.raises(OSError):
        review_video.build_all(str(converted / "out"), parse_recipe(
            {"review": {"recording_video": {"max_part_bytes": 40_000}}}), ["long"])
    assert checked == [1, 2] and not (folder / "long.json").exists()
    out = open_location(str(converted / "out"))
    with pytest.raises(SpanError, match="make it again"):
        review_frames.ReviewVideos(out).part("long.part-001", "spans")
    monkeypatch.undo()
    _, made = _build(converted, 20_000)
    assert [v["made"] for v in made["videos"] if v["recording"] == "long"] == [True]
    assert {p.name: p.read_bytes() for p in folder.glob("long.*")} == before
    assert not list(folder.parent.glob("**/*.tmp-*"))


def test_a_submitted_task_with_nothing_labelled_gives_no_spans(converted, tmp_path):
    out, _ = _build(converted, 1 << 30)
    spans = tmp_path / "timeline.json"
    spans.write_text(json.dumps(_ls_task("cam.part-001", 25.0, [])))  # "no activity here"
    summary = frame_labels_uri(str(out.root), parse_recipe({}), str(spans))
    assert summary["spans"] == 0 and summary["frame_labels"] == 0


def test_a_clip_starting_before_the_previous_one_ends_is_refused(converted):
    out = open_location(str(converted / "out"))
    clips = [r for r in read_records(out) if r.recording == "cam"]
    wrong = [r.replace(recording_start_s=0.5) if r.clip_index == 1 else r for r in clips]
    with pytest.raises(MediaReadError, match="cam clip 1 starts at 0.5 s of the recording, not "
                       "after the previous clip's last frame"):
        review_video.build(out, wrong, 1 << 30)


def test_an_average_rate_becomes_the_rate_a_person_names():
    from tasks.store.record import ClipRecord

    record = ClipRecord(fps="2000000000/66733333")
    assert review_video._nominal_rate([record]) == Fraction(30000, 1001)
    # Slots stay exact at hours: frame at 40 min 0.033 s is slot 71,930 at 29.97 fps
    at = np.array([(40 * 60 + 0.033) * 1_000_000], dtype=np.int64)
    assert review_frames.frame_slots(at, Fraction(30000, 1001)).tolist() == [71_930]


@pytest.mark.parametrize("media, name", [
    ("/data/upload/3/0123abcd-cam.part-002.webm", "cam.part-002"),
    ("/data/local-files/?d=out/review_video/cam.part-002.webm", "cam.part-002"),
    ("cam.part-002.webm", "cam.part-002"),
    ("/videos/cam.webm", None),
    ("/videos/cam.part-2.webm", None),
])
def test_a_part_is_known_by_its_media_name(media, name):
    assert review_frames.part_of_media(media) == name
