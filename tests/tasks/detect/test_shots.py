import numpy as np
import pyarrow.parquet as pq

from tasks.store.record import ClipRecord
from tasks.recipe import ShotsConfig
from tasks.detect.shots import CutFinder, cuts_of, next_cut, shots_table, write_shots
from tasks.store.storage import open_location


def _frames(rng, count, seed_image):
    base = seed_image.astype(np.int16)
    for _ in range(count):
        yield np.clip(base + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)


def _views(rng):
    a = rng.integers(0, 255, (9, 16, 3)).repeat(10, 0).repeat(10, 1).astype(np.uint8)
    b = 255 - a
    return a, b


def test_cuts_are_found_in_decoded_frames_with_their_times():
    rng = np.random.default_rng(1)
    a, b = _views(rng)
    finder = CutFinder(ShotsConfig())
    frames = list(_frames(rng, 40, a)) + list(_frames(rng, 35, b)) + list(_frames(rng, 30, a))
    for i, frame in enumerate(frames):
        finder.feed(i, i / 25, frame)
    shots = finder.shots()
    assert [(s["first"], s["last"]) for s in shots] == [(0, 39), (40, 74), (75, 104)]
    assert shots[1]["start_s"] == 40 / 25 and shots[2]["last_s"] == 104 / 25
    assert cuts_of(shots) == [40, 75]
    assert next_cut([40, 75], 10) == 40 and next_cut([40, 75], 40) == 75 and next_cut([40], 41) is None


def test_content_detector_and_short_shots():
    rng = np.random.default_rng(2)
    a, b = _views(rng)
    finder = CutFinder(ShotsConfig(detector="content", min_frames=20))
    frames = list(_frames(rng, 30, a)) + list(_frames(rng, 10, b)) + list(_frames(rng, 30, a))
    for i, frame in enumerate(frames):
        finder.feed(i, i / 25, frame)
    firsts = [s["first"] for s in finder.shots()]
    assert firsts[0] == 0 and all(b - a >= 20 for a, b in zip(firsts, firsts[1:]))


def test_frames_out_of_order_are_refused():
    finder = CutFinder(ShotsConfig())
    import pytest

    with pytest.raises(ValueError, match="in order"):
        finder.feed(3, 0.0, np.zeros((8, 8, 3), np.uint8))


def test_the_shots_table_places_shots_in_the_recording(tmp_path):
    record = ClipRecord(recording="cam", clip_index=2, global_first_frame=500,
                        recording_start_s=20.0)
    shots = [{"first": 0, "last": 39, "start_s": 0.5, "last_s": 2.06},
             {"first": 40, "last": 99, "start_s": 2.1, "last_s": 4.46}]
    table = shots_table(record, shots)
    assert table["global_first_frame"].to_pylist() == [500, 540]
    assert table["global_last_frame"].to_pylist() == [539, 599]
    assert np.allclose(table["recording_start_s"].to_pylist(), [20.0, 21.6])
    assert table["cut"].to_pylist() == [False, True]
    out = open_location(str(tmp_path))
    summaries = [{"recording": "cam", "clip_index": 2, "shots": shots},
                 {"recording": "cam", "clip_index": 3, "shots": []}]
    path = write_shots(out, summaries, [record.replace(output_duration_s=4.0),
                                        record.replace(clip_index=3)])
    assert pq.read_table(path).num_rows == 2
    lines = (tmp_path / "exports" / "spans" / "shots.csv").read_text().splitlines()
    assert lines == ["recording,start_s,end_s,label,note",
                     "cam,20.000000,21.600000,,clip 2 shot 0: frames 0-39",
                     "cam,21.600000,24.000000,,clip 2 shot 1: frames 40-99"]
