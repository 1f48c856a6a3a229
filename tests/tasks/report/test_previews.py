"""Clip previews: contact sheets of real converted WebMs with boxes where the keyframes put
them, timelines that agree with `expand`, files skipped on an unchanged digest, and markdown
whose inline images are the exact bytes."""

from __future__ import annotations

import base64
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tasks.store.record import ClipRecord
from tasks.report import sheet
from tasks.convert.batch import run_batch
from tasks.store.items import clip_id_for
from tasks.annotations.keyframes import KEYFRAME_SCHEMA, expand
from tasks.report.previews import clip_digest, clip_markdown, preview_paths, write_previews
from tasks.report.sheet import CAPTION_HEIGHT, GAP, choose_frames, contact_sheet, sheet_size
from tasks.report.timeline import timeline_plot, track_color, track_segments
from tasks.recipe import parse_recipe
from tasks.store.storage import open_location
from tests import synth


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Two real converted clips: ``cam/a.mp4`` (40 frames, 160x120, 25 fps) and
    ``site/cam 1/odd clip.mp4`` (12 frames, 161x121: odd size, unsafe names)."""
    root = tmp_path_factory.mktemp("previews")
    data = root / "data"
    (data / "cam").mkdir(parents=True)
    (data / "site" / "cam 1").mkdir(parents=True)
    synth.make_clip(data / "cam" / "a.mp4", frames=40, size=(160, 120))
    synth.make_odd_size(data / "site" / "cam 1" / "odd clip.mp4", frames=12)
    summary = run_batch(str(data), str(root / "out"), parse_recipe({}), "convert")
    assert summary.counts == {"converted": 2}
    records = {r.clip_name: r for r in (ClipRecord.from_dict(row) for row in
                                        pq.read_table(root / "out" / "items.parquet").to_pylist())}
    return open_location(str(root / "out")), records


def _kf(*rows, recording: str = "cam", clip_index: int = 0) -> pa.Table:
    """Keyframes from (track_id, frame, (x1, y1, x2, y2), hidden, kind, end_frame, label)."""
    return pa.Table.from_pylist([
        {"recording": recording, "clip_index": clip_index, "track_id": t, "frame": f,
         "global_frame": f, "time_s": f / 25, "label": label, "x1": box[0], "y1": box[1],
         "x2": box[2], "y2": box[3], "hidden": hidden, "kind": kind, "mode": "linear",
         "end_frame": end, "attributes": "{}", "source": "tracker", "score": 1.0}
        for t, f, box, hidden, kind, end, label in rows], schema=KEYFRAME_SCHEMA)


# Track 1: still, visible on every frame. Track 2: visible 5-14 (moving right), hidden
# 15-24, visible again 25-30 (a person's box at 25), ends at 30.
CAR = (40, 30, 120, 90)
KEYFRAMES = _kf(
    (1, 0, CAR, False, "start", 39, "car"), (1, 39, CAR, False, "end", 39, "car"),
    (2, 5, (10, 10, 50, 40), False, "start", 30, "person"),
    (2, 15, (20, 10, 60, 40), True, "hidden", 30, "person"),
    (2, 25, (30, 20, 70, 50), False, "human", 30, "person"),
    (2, 30, (30, 20, 70, 50), False, "end", 30, "person"))


def _decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def _tile_origin(i: int, tile_h: int, thumb_width: int = 320) -> tuple[int, int]:
    r, c = divmod(i, sheet.COLUMNS)
    return GAP + c * (thumb_width + GAP), GAP + r * (tile_h + CAPTION_HEIGHT + GAP)


def _edge_colour(sheet: np.ndarray, tile: int, tile_h: int, x: int, y0: int, y1: int) -> np.ndarray:
    """Mean RGB of a box's left edge (x, rows y0..y1) in tile coordinates."""
    ox, oy = _tile_origin(tile, tile_h)
    return sheet[oy + y0:oy + y1, ox + x].astype(float).mean(axis=0)[::-1]


def test_frames_are_spread_evenly_and_prefer_visible_ones():
    assert choose_frames(40, 8) == [2, 7, 12, 17, 22, 27, 32, 37]
    assert choose_frames(5, 8) == [0, 1, 2, 3, 4]  # a short clip: every frame, once
    assert choose_frames(0, 8) == []
    # Bins of 25: the middles 12, 37, 62, 87 unless a visible frame lies in the bin.
    assert choose_frames(100, 4, [(60, 70)]) == [12, 37, 62, 87]
    assert choose_frames(100, 4, [(30, 33), (90, 95)]) == [12, 32, 62, 90]
    assert choose_frames(100, 4, [(0, 3), (40, 45)]) == [2, 40, 62, 87]


def test_segments_agree_with_expand_frame_by_frame():
    # Track 3 has no end frame: it lasts to the clip's end (frame 39).
    table = pa.concat_tables([KEYFRAMES, _kf((3, 8, (1, 1, 9, 9), False, "start", None, "dog"),
                                             (3, 20, (1, 1, 9, 9), True, "hidden", None, "dog"),
                                             (3, 33, (5, 5, 9, 9), False, "shown", None, "dog"))])
    dense = expand(table, {("cam", 0): 40})
    for track in track_segments(table, 40):
        rows = dense.filter(pc.equal(dense["track_id"], track["track_id"]))
        expected = dict(zip(rows["frame"].to_pylist(), rows["hidden"].to_pylist()))
        got = {f: hidden for s, e, hidden in track["segments"] for f in range(s, e)}
        assert got == expected
    assert track_segments(table, 40)[1]["segments"] == [(5, 15, False), (15, 25, True),
                                                        (25, 31, False)]


def test_contact_sheet_grid_and_boxes_in_their_track_colour(converted):
    out, records = converted
    record = records["a.mp4"]
    data = contact_sheet(out, record, KEYFRAMES)
    sheet = _decode(data)
    assert sheet.shape == (*sheet_size(8, 160, 120)[::-1], 3) == (528, 1300, 3)
    assert contact_sheet(out, record, KEYFRAMES) == data  # deterministic
    tile_h = 240  # 120 * 320 / 160; boxes scale by 2
    car, person = np.array(track_color(1)), np.array(track_color(2))
    # Frames 2, 7, ..., 37: the car's left edge (x = 40 -> 80) is drawn in every tile.
    for tile in range(8):
        assert np.abs(_edge_colour(sheet, tile, tile_h, 80, 70, 170) - car).max() < 30
    # The person at frame 7 is (12, 10, 52, 40) (interpolated 5 -> 15), at 12 (17, 10, 57, 40),
    # hidden at 17 and 22, at 27 (30, 20, 70, 50) (held after the human keyframe).
    for tile, x1, y1, y2 in ((1, 12, 10, 40), (2, 17, 10, 40), (5, 30, 20, 50)):
        colour = _edge_colour(sheet, tile, tile_h, 2 * x1, 2 * y1 + 8, 2 * y2 - 8)
        assert np.abs(colour - person).max() < 30, (tile, colour)
    # Where the person is hidden (frames 17, 22) the tiles are exactly those of a sheet
    # without it; where it is visible they are not.
    car_only = _decode(contact_sheet(out, record, KEYFRAMES.filter(
        pc.equal(KEYFRAMES["track_id"], 1))))
    for tile in range(8):
        ox, oy = _tile_origin(tile, tile_h)
        window = (slice(oy, oy + tile_h), slice(ox, ox + 320))
        same = np.array_equal(sheet[window], car_only[window])
        assert same == (tile in (0, 3, 4, 6, 7)), tile


def test_contact_sheet_of_an_odd_sized_clip_without_tracks(converted):
    out, records = converted
    record = records["odd clip.mp4"]
    empty = KEYFRAME_SCHEMA.empty_table()
    sheet = _decode(contact_sheet(out, record, empty, count=3, thumb_width=101))
    # 3 tiles in one row, each 101 x round(121 * 101 / 161) = 76 px.
    assert sheet.shape == (*sheet_size(3, 161, 121, 101)[::-1], 3) == (76 + 18 + 8, 3 * 101 + 16, 3)
    with pytest.raises(ValueError, match="count"):
        contact_sheet(out, record, empty, count=0)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = _decode(data)
    return image.shape[1], image.shape[0]


def _many_tracks(n: int) -> pa.Table:
    return _kf(*[(t, 0, (0, 0, 5, 5), False, "start", 39, "x") for t in range(1, n + 1)])


def test_timeline_png_size_grows_with_tracks_up_to_a_cap():
    empty = timeline_plot(KEYFRAME_SCHEMA.empty_table(), 40)
    two = timeline_plot(KEYFRAMES, 40, fps=25.0)
    ten, forty, hundred = (timeline_plot(_many_tracks(n), 40) for n in (10, 40, 100))
    width, base = _png_size(empty)
    assert width == 1000 and _png_size(two)[1] == base + 28
    assert _png_size(ten)[1] == base + 9 * 28
    assert _png_size(forty)[1] == base + 39 * 28
    assert _png_size(forty)[1] < _png_size(hundred)[1] <= _png_size(forty)[1] + 30  # "+60 more"
    # Bars are drawn in the track's colour (PNG is lossless), hidden ranges in grey.
    image = _decode(two)[:, :, ::-1].reshape(-1, 3)
    colours = {tuple(c) for c in np.unique(image, axis=0)}
    assert track_color(1) in colours and track_color(2) in colours
    assert (0xD9, 0xD9, 0xD9) in colours
    assert track_color(1)[::-1] not in {tuple(c) for c in np.unique(_decode(empty).reshape(-1, 3),
                                                                     axis=0)}


def test_timeline_is_deterministic_across_threads():
    tables = [KEYFRAMES, _many_tracks(7), KEYFRAME_SCHEMA.empty_table()] * 2
    alone = [timeline_plot(t, 40, 25.0) for t in tables]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda t: timeline_plot(t, 40, 25.0), tables))
    assert together == alone


def test_digest_depends_on_content_not_row_order(converted):
    _, records = converted
    record = records["a.mp4"]
    digest = clip_digest(KEYFRAMES, record)
    shuffled = KEYFRAMES.take(np.random.default_rng(1).permutation(KEYFRAMES.num_rows))
    chunked = pa.concat_tables([KEYFRAMES.slice(0, 2), KEYFRAMES.slice(2)])
    assert clip_digest(shuffled, record) == clip_digest(chunked, record) == digest
    moved = KEYFRAMES.set_column(KEYFRAMES.schema.get_field_index("x2"), "x2",
                                 pa.array([121.0] + KEYFRAMES["x2"].to_pylist()[1:], pa.float32()))
    assert clip_digest(moved, record) != digest
    assert clip_digest(KEYFRAMES, record.replace(output_bytes=1)) != digest
    assert clip_digest(KEYFRAME_SCHEMA.empty_table(), record) != digest


def test_write_previews_writes_once_per_digest(converted):
    out, records = converted
    record = records["odd clip.mp4"]
    rows = _kf((1, 2, (10, 10, 60, 50), False, "start", 11, "car"),
               (1, 11, (90, 60, 150, 110), False, "end", 11, "car"),
               recording=record.recording, clip_index=record.clip_index)
    digest = clip_digest(rows, record)
    urls = write_previews(out, record, rows, digest)
    paths = preview_paths(out, record)
    assert urls == {k: out.url(p) for k, p in paths.items()}
    for path in paths.values():  # unsafe names made safe, under OUT/previews/<recording>/
        assert re.fullmatch(re.escape(out.root) + r"/previews/site/cam_1-\w{8}/odd_clip-\w{8}"
                            r"\.(contact\.jpg|timeline\.png)", path), path
    assert _decode(open(paths["contact_sheet"], "rb").read()).shape[1] == sheet_size(8, 161, 121)[0]
    assert _png_size(open(paths["timeline"], "rb").read())[0] == 1000
    state = json.loads(open(os.path.join(out.root, "_state", "previews",
                                         f"{clip_id_for(record.source_uri)}.json")).read())
    assert state["digest"] == digest

    def age_files() -> None:
        for path in paths.values():
            os.utime(path, ns=(10**9, 10**9))

    def mtimes() -> list[int]:
        return [os.stat(p).st_mtime_ns for p in paths.values()]

    age_files()
    assert write_previews(out, record, rows, digest) == urls
    assert mtimes() == [10**9, 10**9]  # same digest: nothing written
    assert write_previews(out, record, rows, "another") == urls
    assert 10**9 not in mtimes()  # a new digest: both rewritten
    age_files()
    os.unlink(paths["timeline"])
    write_previews(out, record, rows, "another")
    assert 10**9 not in mtimes()  # a missing file: made again


def test_markdown_embeds_the_exact_images(converted):
    _, records = converted
    record = records["a.mp4"].replace(clip_name="a|b*.mp4")
    jpeg = contact_sheet(converted[0], records["a.mp4"], KEYFRAMES, count=4)
    png = timeline_plot(KEYFRAMES, 40, 25.0)
    summary = {"tracks": 2, "status": "converted", "frames": 40, "review_tasks": 1}
    text = clip_markdown(record, summary, {"contact_sheet": jpeg, "timeline": png},
                         links={"timeline": "s3://bucket/out/previews/cam/a.timeline.png"})
    assert text.startswith("### cam/a\\|b\\*.mp4 (clip 0)")
    found = dict(re.findall(r"!\[([^\]]+)\]\(data:image/\w+;base64,([A-Za-z0-9+/=]+)\)", text))
    assert base64.b64decode(found["contact sheet"]) == jpeg
    assert base64.b64decode(found["timeline"]) == png
    assert "data:image/jpeg;base64," in text and "data:image/png;base64," in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[2:] == ["| status | converted |", "| frames | 40 |", "| tracks | 2 |",
                         "| review tasks | 1 |"]
    assert "`s3://bucket/out/previews/cam/a.timeline.png`" in text
    with pytest.raises(ValueError, match="JPEG or PNG"):
        clip_markdown(record, {}, {"x": b"GIF89a"})


def test_timeline_draws_shot_cuts_and_they_change_the_digest():
    plain = timeline_plot(KEYFRAMES, 40, 25.0)
    cut = timeline_plot(KEYFRAMES, 40, 25.0, cuts=[20])
    assert plain != cut
    image = cv2.imdecode(np.frombuffer(cut, np.uint8), cv2.IMREAD_COLOR)[..., ::-1].astype(int)
    red = (image[..., 0] > 180) & (image[..., 1] < 90) & (image[..., 2] < 90)
    assert red.sum() > 20  # the dashed line (and its note)
    record = ClipRecord(output_uri="x.webm", output_bytes=10, convert_key="k", fingerprint="f")
    assert clip_digest(KEYFRAMES, record) != clip_digest(KEYFRAMES, record, [20])
