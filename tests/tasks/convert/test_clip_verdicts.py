"""One test per kind of input, with its expected verdict, through the real per-clip work.

Inputs are made with PyAV at test time (tests/synth.py); each conversion is checked by
decoding the WebM ourselves, independently of the parity proof.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tasks.convert.clip import process_clip
from tasks.convert.listing import plan_clips
from tasks.recipe import parse_recipe
from tasks.store.storage import open_location
from tests import synth


def run_one(tmp_path: Path, kind: str, mode: str = "convert", **recipe) -> dict:
    src_dir = tmp_path / "src" / "rec"
    src_dir.mkdir(parents=True)
    synth.KINDS[kind](src_dir / f"{kind}.mp4")
    src, out = open_location(str(tmp_path / "src")), open_location(str(tmp_path / "out"))
    rec = parse_recipe(recipe)
    (clip,) = plan_clips(src, rec)
    return process_clip(clip, src, out, rec, mode)


def decoded(path: str) -> list[av.VideoFrame]:
    with av.open(path) as c:
        return list(c.decode(c.streams.video[0]))


def assert_blocked(row: dict, reason: str) -> None:
    assert row.status == "blocked", row
    assert row.reason == reason, (row.reason, row.detail)
    assert row.detail
    assert row.output_uri is None


def assert_converted(row: dict) -> list[av.VideoFrame]:
    assert row.status == "converted", (row.reason, row.detail)
    assert row.parity_ok is True
    assert os.path.getsize(row.output_uri) == row.output_bytes
    frames = decoded(row.output_uri)
    assert len(frames) == row.frame_count == row.output_frames
    assert all(f.format.name == "yuv420p" for f in frames)
    assert row.fingerprint.startswith("b2:")
    return frames


# --- refused, each with its reason ---------------------------------------------------------

def test_zero_bytes(tmp_path):
    assert_blocked(run_one(tmp_path, "zero_bytes"), "empty_file")


def test_text_renamed_mp4(tmp_path):
    assert_blocked(run_one(tmp_path, "text_as_mp4"), "unreadable")


def test_audio_only(tmp_path):
    row = run_one(tmp_path, "audio_only")
    assert_blocked(row, "no_video_stream")
    assert "audio" in row.detail


def test_truncated_moov_at_end(tmp_path):
    assert_blocked(run_one(tmp_path, "truncated_moov_lost"), "truncated")


def test_truncated_faststart(tmp_path):
    row = run_one(tmp_path, "truncated_mdat_cut")
    assert_blocked(row, "truncated")
    assert row.header_frame_count == 30 and row.frame_count < 30


def test_corrupted_mid_stream_is_never_converted_to_fewer_frames(tmp_path):
    row = run_one(tmp_path, "corrupted")
    assert_blocked(row, "decode_error")
    assert row.frame_count == 60  # every packet is there: the damage is in the payload
    assert not list((tmp_path / "out").rglob("*.webm"))


def test_two_video_streams_blocked_when_asked(tmp_path):
    row = run_one(tmp_path, "two_video_streams", ingest={"multiple_video_streams": "block"})
    assert_blocked(row, "multiple_video_streams")


def test_ingest_blocks_the_same_inputs(tmp_path):
    row = run_one(tmp_path, "truncated_mdat_cut", mode="ingest")
    assert_blocked(row, "truncated")


# --- accepted, converted exactly ------------------------------------------------------------

def test_plain_clip_keeps_every_frame_and_timestamp(tmp_path):
    row = run_one(tmp_path, "clip")
    frames = assert_converted(row)
    assert row.fps == "25/1" and row.frame_count == 30 and row.vfr is False
    assert [f.pts for f in frames] == [i * 40 for i in range(30)]  # ms in WebM
    for i, frame in enumerate(frames):  # content: frame i is source frame i
        assert synth.identify_frame(frame, range(30))[0] == i


def test_clip_with_audio_gets_opus(tmp_path):
    row = run_one(tmp_path, "clip_audio")
    assert_converted(row)
    with av.open(row.output_uri) as c:
        assert [s.codec_context.name for s in c.streams.audio] == ["opus"]
        samples = sum(f.samples for f in c.decode(c.streams.audio[0]))
    assert abs(samples / 48000 - 30 / 25) < 0.05


def test_matroska_source_without_header_count(tmp_path):
    row = run_one(tmp_path, "clip_mkv")
    assert row.header_frame_count is None
    assert_converted(row)


def test_vfr_stays_variable(tmp_path):
    row = run_one(tmp_path, "vfr")
    frames = assert_converted(row)
    assert row.vfr is True
    expected = [round(float(t) * 1000) for t in synth.vfr_times()]
    assert [f.pts for f in frames] == expected


def test_edit_list_hidden_frames_stay_hidden(tmp_path):
    row = run_one(tmp_path, "edit_list_trim")
    frames = assert_converted(row)
    assert row.header_frame_count == 30 and row.discarded_frames == 5
    assert row.frame_count == 25 and frames[0].pts == 0
    assert synth.identify_frame(frames[0], range(30))[0] == 5


def test_two_video_streams_converts_the_first(tmp_path):
    row = run_one(tmp_path, "two_video_streams")
    assert row.video_streams == 2
    assert_converted(row)


@pytest.mark.parametrize("kind,depth,chroma", [("10bit", 10, "420"), ("444", 8, "444")])
def test_high_depth_and_chroma_become_8bit_420(tmp_path, kind, depth, chroma):
    row = run_one(tmp_path, kind)
    assert (row.bit_depth, row.chroma) == (depth, chroma)
    assert_converted(row)


def test_odd_size_is_kept(tmp_path):
    row = run_one(tmp_path, "odd_size")
    frames = assert_converted(row)
    assert (frames[0].width, frames[0].height) == (row.stored_width, row.stored_height)
    assert frames[0].width % 2 == 1 and frames[0].height % 2 == 1


def test_2997_fps_is_an_exact_fraction(tmp_path):
    row = run_one(tmp_path, "2997")
    frames = assert_converted(row)
    assert row.fps == "30000/1001" and row.measured_fps == "30000/1001"
    assert [f.pts for f in frames] == [int(i * 1001 / 30 + 0.5) for i in range(30)]  # FFmpeg rounds half up
    assert row.timestamp_max_error_ms <= 0.5


def test_anamorphic_pixels_become_square(tmp_path):
    row = run_one(tmp_path, "anamorphic")
    frames = assert_converted(row)
    assert Fraction(row.sar) != 1
    expected_w = round(row.stored_width * Fraction(row.sar))
    assert (frames[0].width, frames[0].height) == (expected_w, row.stored_height)
    assert (row.width, row.height) == (expected_w, row.stored_height)


@pytest.mark.parametrize("kind,k", [("rotated", 1), ("rotated_270", -1)])
def test_rotation_is_applied_to_pixels(tmp_path, kind, k):
    row = run_one(tmp_path, kind)
    frames = assert_converted(row)
    h, w = row.stored_height, row.stored_width
    assert (frames[0].width, frames[0].height) == (h, w) == (row.width, row.height)
    with av.open(row.output_uri) as c:
        assert next(c.decode(video=0)).rotation == 0  # nothing left for a player to turn
    for i, frame in enumerate(frames[:5]):
        upright = np.rot90(synth.render_frame(i, (w, h)), k=k)
        got = synth.luma_thumb(frame)
        assert np.abs(got - synth.luma_thumb(upright)).mean() < 6


# --- recipe options -------------------------------------------------------------------------

def test_vp8_option(tmp_path):
    row = run_one(tmp_path, "clip_audio", convert={"codec": "vp8"})
    assert_converted(row)
    with av.open(row.output_uri) as c:
        assert c.streams.video[0].codec_context.name == "vp8"
    assert row.output_codec == "vp8"


def test_max_height_caps_size_keeping_aspect(tmp_path):
    row = run_one(tmp_path, "anamorphic", convert={"max_height": 60, "crf": 40, "speed": 6})
    frames = assert_converted(row)
    assert frames[0].height == 60 == row.output_height
    assert frames[0].width == round(row.width * 60 / row.height) == row.output_width
    assert (row.width, row.height) != (row.output_width, row.output_height)


@pytest.mark.parametrize("kind,expected", [
    ("rotated", {"rotation": 270, "width": 120, "height": 160}),
    ("vfr", {"vfr": True, "frame_count": 20}),
    ("2997", {"fps": "30000/1001", "real_fps": "30000/1001", "time_base": "1/30000"}),
    ("edit_list_trim", {"frame_count": 25, "discarded_frames": 5, "header_frame_count": 30}),
    ("10bit", {"bit_depth": 10, "pix_fmt": "yuv420p10le", "video_codec": "hevc"}),
    ("clip_audio", {"audio_codec": "aac", "audio_channels": 2, "audio_sample_rate": 48000}),
])
def test_ingest_probe_fields(tmp_path, kind, expected):
    row = run_one(tmp_path, kind, mode="ingest")
    assert row.status == "ingested", row.detail
    assert {k: getattr(row, k) for k in expected} == expected
    assert row.fingerprint.startswith("b2:") and row.container.startswith("mov")
