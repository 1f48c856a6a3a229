"""Frame snapshots: the PNG holds exactly the frame decoded at that index, reruns replace
their row, and every refusal says why."""

from __future__ import annotations

import hashlib

import av
import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from tasks.store.record import ClipRecord
from tasks.convert.batch import run_batch
from tasks.store.items import clip_id_for
from tasks.recipe import parse_recipe
from tasks.media.snapshot import SNAPSHOT_SCHEMA, resolve_clip, snapshot_uri
from tasks.errors import SnapshotError
from tests import synth

RECIPE = parse_recipe({})


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """``cam``: a B-frame H.264 clip with short GOPs and a VFR one; ``other``: a clip that
    shares a name with one in ``cam``, and a truncated clip (blocked)."""
    root = tmp_path_factory.mktemp("snap")
    data = root / "data"
    (data / "cam").mkdir(parents=True)
    (data / "other").mkdir()
    synth.make_clip(data / "cam" / "a.mp4", frames=40, gop=12, bframes=True)
    synth.make_vfr(data / "cam" / "b clip.mp4", bframes=True)
    synth.make_clip(data / "other" / "a.mp4", frames=10)
    synth.make_truncated(data / "other" / "cut.mp4", faststart=False)
    summary = run_batch(str(data), str(root / "out"), RECIPE, "convert")
    assert summary.counts == {"converted": 3, "blocked": 1}
    items = {r.label: r for r in (ClipRecord.from_dict(row) for row in
                                  pq.read_table(root / "out" / "items.parquet").to_pylist())}
    return root / "out", items


def _decode_all(uri: str) -> tuple[list[np.ndarray], list[float]]:
    """Every frame of the WebM, decoded from the start with no seeking."""
    with av.open(uri) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return ([f.to_ndarray(format="bgr24") for f in frames],
                [float(f.pts * stream.time_base) for f in frames])


@pytest.mark.parametrize("clip", ["cam/a.mp4", "cam/b clip.mp4"])
def test_png_is_exactly_the_decoded_frame(converted, clip):
    out, items = converted
    record = items[clip]
    images, times = _decode_all(record.output_uri)
    assert len(images) == record.output_frames
    last = len(images) - 1
    # First, last, then mid-GOP frames out of order (each snapshot seeks afresh).
    for frame in (0, last, 17, 5, last - 1):
        row = snapshot_uri(str(out), RECIPE, clip, frame)
        png = cv2.imread(row["image_uri"], cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint8 and png.shape == images[frame].shape
        assert np.array_equal(png, images[frame]), f"{clip} frame {frame}"
        assert not np.array_equal(png, images[frame - 1 if frame else 1])  # frames do differ
        assert row["time_s"] == times[frame] and row["frame"] == frame
        assert row["global_frame"] == record.global_first_frame + frame
        assert (row["width"], row["height"]) == (png.shape[1], png.shape[0])
        assert row["webm_uri"] == record.output_uri
        assert row["source_uri"] == record.source_uri
        name = row["image_uri"].split("/")[-1]
        assert name.endswith(f"_frame{frame:06d}.png") and "/Snapshots/cam/" in row["image_uri"]


def test_rerun_replaces_its_row(converted):
    out, items = converted
    first = snapshot_uri(str(out), RECIPE, "cam/a.mp4", 30)
    path = out / "Snapshots" / "cam" / "a_frame000030.png"
    assert first["image_uri"] == str(path)
    before = path.read_bytes()
    again = snapshot_uri(str(out), RECIPE, "cam/a.mp4", 30)
    other = snapshot_uri(str(out), RECIPE, "cam/a.mp4", 31)
    assert again == first and path.read_bytes() == before
    table = pq.read_table(out / "Snapshots" / "snapshots.parquet")
    assert table.schema == SNAPSHOT_SCHEMA
    uris = table["image_uri"].to_pylist()
    assert len(uris) == len(set(uris))  # one row per image, however often it was taken
    rows = {r["image_uri"]: r for r in table.to_pylist()}
    assert rows[first["image_uri"]] == {k: first[k] for k in SNAPSHOT_SCHEMA.names}
    assert rows[other["image_uri"]]["frame"] == 31
    assert first["png_blake2b"] == hashlib.blake2b(before, digest_size=16).hexdigest()
    keys = [(r["recording"], r["clip_index"], r["frame"]) for r in table.to_pylist()]
    assert keys == sorted(keys)


def test_clip_names_resolve_by_path_name_stem_or_id(converted):
    _, items = converted
    records = list(items.values())
    vfr = items["cam/b clip.mp4"]
    assert resolve_clip(records, "cam/b clip.mp4") is vfr
    assert resolve_clip(records, "b clip.mp4") is vfr
    assert resolve_clip(records, "b clip") is vfr
    assert resolve_clip(records, clip_id_for(vfr.source_uri)) is vfr
    assert resolve_clip(records, "other/a") is items["other/a.mp4"]


def test_ambiguous_clip_is_refused_listing_candidates(converted):
    out, items = converted
    with pytest.raises(SnapshotError, match=r"'a.mp4' is ambiguous: it could be cam/a.mp4 "
                       r"\(id \w+\), other/a.mp4 \(id \w+\)"):
        snapshot_uri(str(out), RECIPE, "a.mp4", 0)


def test_unknown_clip_is_refused_with_suggestions(converted):
    out, _ = converted
    with pytest.raises(SnapshotError, match=r"no clip 'cam/c.mp4' .*did you mean cam/a.mp4"):
        snapshot_uri(str(out), RECIPE, "cam/c.mp4", 0)
    with pytest.raises(SnapshotError, match="known clips: cam/a.mp4, cam/b clip.mp4, "
                       "other/a.mp4, other/cut.mp4"):
        snapshot_uri(str(out), RECIPE, "zzzzzzzz", 0)


@pytest.mark.parametrize("frame", [-1, 40, 1000])
def test_frame_out_of_range_is_refused(converted, frame):
    out, _ = converted
    with pytest.raises(SnapshotError, match=rf"frame {frame} out of range: clip cam/a.mp4 has "
                       r"40 frames \(0 to 39\)"):
        snapshot_uri(str(out), RECIPE, "cam/a.mp4", frame)


@pytest.mark.parametrize("frame", [2.0, True, "3"])
def test_frame_that_is_not_an_index_is_refused(converted, frame):
    out, _ = converted
    with pytest.raises(SnapshotError, match="frame must be a whole number"):
        snapshot_uri(str(out), RECIPE, "cam/a.mp4", frame)


def test_blocked_clip_is_refused_with_its_reason(converted):
    out, items = converted
    assert items["other/cut.mp4"].status == "blocked"
    with pytest.raises(SnapshotError, match=r"other/cut.mp4 has no converted WebM \(status "
                       r"blocked: truncated; .*moov"):
        snapshot_uri(str(out), RECIPE, "other/cut.mp4", 0)
    assert not (out / "Snapshots" / "other").exists()


def test_output_without_items_table_is_refused(tmp_path):
    with pytest.raises(SnapshotError, match="items.parquet not found"):
        snapshot_uri(str(tmp_path), RECIPE, "a.mp4", 0)
