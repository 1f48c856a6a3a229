"""Each maker in tests/synth.py writes exactly the property it claims, read back with PyAV.

These assertions also pin the PyAV/FFmpeg behaviour listed in synth's docstring, which the
pipeline's probe and converter rely on: if a PyAV upgrade changes it, a test here fails.
"""

from __future__ import annotations

import pathlib
import struct
from fractions import Fraction

import av
import numpy as np
import pytest

try:  # tests/ as a package (rootdir on sys.path) or as a plain directory (pytest prepends it)
    from tests import synth
except ImportError:
    import synth

INVALIDDATA = 1094995529  # av.error.InvalidDataError().errno: FFERRTAG('I','N','D','A')
MOV = "mov,mp4,m4a,3gp,3g2,mj2"  # the mov demuxer's log component name
I, P, B = 1, 2, 3  # frame.pict_type values (av.video.frame.PictureType)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """``made(kind)``: the file KINDS[kind] writes, made once per module."""
    root = tmp_path_factory.mktemp("synth")
    cache: dict[str, pathlib.Path] = {}

    def get(kind: str) -> pathlib.Path:
        if kind not in cache:
            cache[kind] = synth.KINDS[kind](root / f"{kind}.mp4")
        return cache[kind]

    return get


@pytest.fixture
def ffmpeg_log_off():
    """PyAV 18's default: FFmpeg logging off (level None), whatever ran before."""
    old = av.logging.get_level()
    av.logging.set_level(None)
    yield
    av.logging.set_level(old)


@pytest.fixture
def ffmpeg_log():
    """Turn FFmpeg logging on (it is off by default in PyAV 18) and capture it."""
    old = av.logging.get_level()
    av.logging.set_level(av.logging.WARNING)
    try:
        with av.logging.Capture() as logs:
            yield logs
    finally:
        av.logging.set_level(old)


def decode_packets(path, stream_index=0, thread_type=None):
    """Demux and decode one stream packet by packet, collecting errors instead of stopping.

    Returns (packets, frames, errors); errors are (packet, exception) pairs.
    """
    packets, frames, errors = [], [], []
    with av.open(str(path)) as container:
        stream = container.streams[stream_index]
        if thread_type is not None:
            stream.thread_type = thread_type
        for packet in container.demux(stream):
            packets.append(packet)
            try:
                frames.extend(stream.decode(packet))
            except av.error.InvalidDataError as e:
                errors.append((packet, e))
    real_packets = [p for p in packets if p.size > 0]  # drop the empty packet demux ends with
    return real_packets, frames, errors


def assert_frames_are(frames, indices, *, variant=0, tolerance=4.0):
    """Each decoded frame shows render_frame(indices[k]) (nearest of 0..99, close enough)."""
    assert len(frames) == len(indices)
    for frame, want in zip(frames, indices):
        got, distance = synth.identify_frame(frame, range(100), variant=variant)
        assert (got, distance < tolerance) == (want, True), f"frame pts={frame.pts}: {got} at {distance:.2f}, want {want}"


def elst_entries(data: bytes) -> list[tuple[int, int]]:
    """(segment_duration, media_time) of the first version-0 'elst' box in an mp4."""
    at = data.index(b"elst")
    version, count = data[at + 4], struct.unpack(">I", data[at + 8 : at + 12])[0]
    assert version == 0
    return [struct.unpack(">Ii", data[at + 12 + 8 * k : at + 20 + 8 * k]) for k in range(count)]


def tkhd_matrix(data: bytes) -> tuple[int, ...]:
    """The 3x3 matrix of the first version-0 'tkhd' box, row-major (a, b, u, c, d, v, x, y, w)."""
    at = data.index(b"tkhd")
    assert data[at + 4] == 0
    return struct.unpack(">9i", data[at + 44 : at + 80])


# ---------------------------------------------------------------------------
# every kind
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(synth.KINDS))
def test_every_kind_is_byte_identical_between_runs(made, kind, tmp_path):
    again = synth.KINDS[kind](tmp_path / f"{kind}.mp4")
    assert again.parent == tmp_path and again.exists()
    assert again.read_bytes() == made(kind).read_bytes()


def test_content_makes_every_frame_identifiable():
    thumbs = np.stack([synth.luma_thumb(synth.render_frame(i)) for i in range(100)])
    distance = np.abs(thumbs[:, None] - thumbs[None, :]).mean(axis=(2, 3))
    neighbours = np.diagonal(distance, offset=1)
    np.fill_diagonal(distance, np.inf)
    assert neighbours.min() > 25  # a one-frame shift is glaring
    assert distance.min() > 7  # no two of the first 100 frames look alike
    assert np.array_equal(synth.render_frame(7), synth.render_frame(7))
    other = synth.luma_thumb(synth.render_frame(7, variant=1))
    assert np.abs(other - thumbs[7]).mean() > 20


# ---------------------------------------------------------------------------
# make_clip and its options
# ---------------------------------------------------------------------------


def test_clip_defaults(made):
    path = made("clip")
    with av.open(str(path)) as container:
        assert container.format.name == MOV
        assert [s.type for s in container.streams] == ["video"]
        s = container.streams.video[0]
        assert (s.codec_context.name, s.format.name, s.width, s.height) == ("h264", "yuv420p", 160, 120)
        assert s.average_rate == 25 and isinstance(s.average_rate, Fraction)
        assert s.time_base == Fraction(1, 12800)
        assert (s.start_time, s.duration, s.frames) == (0, 30 * 512, 30)
        assert container.duration == 1_200_000  # microseconds
        packets = [p for p in container.demux(s) if p.size]
    assert (packets[0].pts, packets[0].dts) == (0, -1024)  # B-frames: 2 frames of reorder delay
    assert sum(p.is_keyframe for p in packets) == 1
    _, frames, errors = decode_packets(path)
    assert not errors
    assert [f.pts for f in frames] == [512 * i for i in range(30)]
    assert B in {int(f.pict_type) for f in frames}
    assert [f.rotation for f in frames[:1]] == [0]
    assert_frames_are(frames, range(30))
    assert all(not f.is_corrupt for f in frames)


def test_clip_without_bframes_has_dts_equal_pts(made):
    packets, frames, _ = decode_packets(made("clip_no_bframes"))
    assert all(p.dts == p.pts for p in packets)
    assert B not in {int(f.pict_type) for f in frames}
    assert_frames_are(frames, range(30))


def test_clip_gop_places_keyframes(made):
    packets, frames, _ = decode_packets(made("clip_gop10"))
    assert [k for k, f in enumerate(frames) if f.key_frame] == [0, 10, 20]
    assert sum(p.is_keyframe for p in packets) == 3


def test_clip_audio_matches_video_duration(made):
    with av.open(str(made("clip_audio"))) as container:
        v, a = container.streams.video[0], container.streams.audio[0]
        assert (a.codec_context.name, a.sample_rate, a.layout.name, a.channels) == ("aac", 48000, "stereo", 2)
        assert a.time_base == Fraction(1, 48000)
        assert a.start_time == 0
        assert a.duration * a.time_base == v.duration * v.time_base == Fraction(6, 5)
        packets = [p for p in container.demux(a) if p.size]
    # AAC priming: one 1024-sample packet before 0, marked discard by the demuxer.
    assert (packets[0].pts, packets[0].is_discard) == (-1024, True)
    assert not any(p.is_discard for p in packets[1:])
    with av.open(str(made("clip_audio"))) as container:
        frames = list(container.decode(audio=0))
    assert frames[0].pts == 0
    decoded = sum(f.samples for f in frames)
    assert 57600 <= decoded < 57600 + 1024  # the last AAC frame comes out whole


@pytest.mark.parametrize(("kind", "order"), [("clip_audio", ["ftyp", "free", "mdat", "moov"]), ("clip_faststart", ["ftyp", "moov", "free", "mdat"])])
def test_faststart_puts_moov_first(made, kind, order):
    assert [b[0] for b in synth.mp4_boxes(made(kind).read_bytes())] == order


def test_clip_mkv(made):
    path = made("clip_mkv")
    assert path.suffix == ".mkv"
    with av.open(str(path)) as container:
        assert container.format.name == "matroska,webm"
        v = container.streams.video[0]
        assert (v.time_base, v.frames, v.duration, v.average_rate) == (Fraction(1, 1000), 0, None, 25)
        assert container.duration > 1_200_000 - 1
        assert len(container.streams.audio) == 1
    _, frames, _ = decode_packets(path)
    assert_frames_are(frames, range(30))


def test_2997_rate_is_exact(made):
    path = made("2997")
    with av.open(str(path)) as container:
        s = container.streams.video[0]
        assert s.average_rate == Fraction(30000, 1001)
        assert s.time_base == Fraction(1, 30000)
        assert s.duration == 30 * 1001
        a = container.streams.audio[0]
        assert a.duration * a.time_base == Fraction(30 * 1001, 30000)
    _, frames, _ = decode_packets(path)
    assert [f.pts for f in frames] == [1001 * i for i in range(30)]


def test_odd_size(made):
    _, frames, _ = decode_packets(made("odd_size"))
    assert (frames[0].width, frames[0].height, frames[0].format.name) == (161, 121, "yuv420p")
    assert_frames_are(frames, range(20))


def test_libx264_refuses_odd_420(tmp_path):
    with pytest.raises(av.error.ExternalError):
        synth.make_clip(tmp_path / "odd.mp4", frames=2, size=(161, 121))


def test_10bit(made):
    path = made("10bit")
    with av.open(str(path)) as container:
        s = container.streams.video[0]
        assert (s.codec_context.name, s.format.name, s.profile) == ("hevc", "yuv420p10le", "Main 10")
    _, frames, _ = decode_packets(path)
    assert frames[0].format.name == "yuv420p10le"
    assert_frames_are(frames, range(20))


def test_444(made):
    path = made("444")
    with av.open(str(path)) as container:
        s = container.streams.video[0]
        assert (s.format.name, s.profile) == ("yuv444p", "High 4:4:4 Predictive")
    _, frames, _ = decode_packets(path)
    assert_frames_are(frames, range(20))


def test_anamorphic(made):
    path = made("anamorphic")
    with av.open(str(path)) as container:
        s = container.streams.video[0]
        assert s.sample_aspect_ratio == Fraction(32, 27)
        assert s.display_aspect_ratio == Fraction(16, 9)
    _, frames, _ = decode_packets(path)
    assert (frames[0].width, frames[0].height) == (180, 120)  # stored, not display, size
    assert not hasattr(frames[0], "sample_aspect_ratio")
    assert_frames_are(frames, range(20))


@pytest.mark.parametrize(("degrees", "reads_back"), [(90, 90), (-90, -90), (180, -180), (270, -90), (0, 0)])
def test_rotated(tmp_path, degrees, reads_back):
    path = synth.make_rotated(tmp_path / "r.mp4", degrees, frames=3)
    with av.open(str(path)) as container:
        s = container.streams.video[0]
        assert (s.width, s.height) == (160, 120)
        assert "rotate" not in s.metadata
        assert not hasattr(s, "side_data")
        frame = next(container.decode(s))
    assert frame.rotation == reads_back
    assert ("DISPLAYMATRIX" in {sd.type.name for sd in frame.side_data}) == (degrees != 0)
    assert (frame.width, frame.height) == (160, 120)
    if degrees == 90:
        a, b, _, c, d, *_ = tkhd_matrix(path.read_bytes())
        assert (a, b, c, d) == (0, -65536, 65536, 0)


def test_rotated_kinds_and_mkv(made, tmp_path):
    for kind, want in (("rotated", 90), ("rotated_270", -90)):
        with av.open(str(made(kind))) as container:
            assert next(container.decode(video=0)).rotation == want
    path = synth.make_clip(tmp_path / "r.mkv", frames=3, rotation=90)
    with av.open(str(path)) as container:
        assert next(container.decode(video=0)).rotation == 90


# ---------------------------------------------------------------------------
# timing oddities
# ---------------------------------------------------------------------------


def test_vfr_timestamps_round_trip(made):
    path = made("vfr")
    times = synth.vfr_times()
    gaps = {b - a for a, b in zip(times, times[1:])}
    assert gaps == {Fraction(1, 30), Fraction(1, 10), Fraction(1, 10) + 2}
    _, frames, _ = decode_packets(path)
    assert [f.pts * f.time_base for f in frames] == times
    assert_frames_are(frames, range(20))
    with av.open(str(path)) as container:
        s = container.streams.video[0]
        assert s.time_base == Fraction(1, 15360)
        assert s.average_rate == s.frames / (s.duration * s.time_base) == Fraction(300, 49)
        assert s.base_rate == s.guessed_rate == 30


def test_vfr_rejects_off_grid_times(tmp_path):
    with pytest.raises(ValueError):
        synth.make_vfr(tmp_path / "v.mp4", times=[0, Fraction(1, 60)])


def test_edit_list_trim(made):
    path = made("edit_list_trim")
    (segment, media_time), = elst_entries(path.read_bytes())
    assert media_time == (5 + 2) * 512  # 5 hidden frames + 2 frames of B-frame delay
    with av.open(str(path)) as container:
        s = container.streams.video[0]
        assert (s.frames, s.duration, s.start_time) == (30, 25 * 512, 0)
    packets, frames, errors = decode_packets(path)
    assert not errors
    assert len(packets) == 30
    discarded = [p for p in packets if p.is_discard]
    assert sorted(p.pts for p in discarded) == [-512 * k for k in range(5, 0, -1)]
    assert all(p.is_discard == (p.pts < 0) for p in packets)
    assert any(p.is_keyframe for p in discarded)
    assert [f.pts for f in frames] == [512 * i for i in range(25)]
    assert_frames_are(frames, range(5, 30))
    with av.open(str(path)) as container:  # the high-level API drops them too
        assert len(list(container.decode(video=0))) == 25


# ---------------------------------------------------------------------------
# stream layouts
# ---------------------------------------------------------------------------


def test_two_video_streams(made):
    path = made("two_video_streams")
    with av.open(str(path)) as container:
        sizes = [(s.width, s.height) for s in container.streams.video]
        assert sizes == [(160, 120), (96, 72)] and not container.streams.audio
    for index in (0, 1):
        _, frames, _ = decode_packets(path, index)
        assert_frames_are(frames, range(20), variant=index)


def test_audio_only(made):
    path = made("audio_only")
    with av.open(str(path)) as container:
        assert not container.streams.video
        (a,) = container.streams
        assert (a.type, a.codec_context.name, a.sample_rate, a.channels) == ("audio", "aac", 48000, 2)
        assert a.duration * a.time_base == 1


# ---------------------------------------------------------------------------
# broken files
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["zero_bytes", "text_as_mp4", "truncated_moov_lost"])
def test_unopenable(made, kind, ffmpeg_log_off):
    path = made(kind)
    with pytest.raises(av.error.InvalidDataError) as info:
        av.open(str(path))
    e = info.value
    assert isinstance(e, ValueError)
    assert (e.errno, e.strerror, e.filename) == (INVALIDDATA, "Invalid data found when processing input", str(path))
    assert e.log is None and "last error log" not in str(e)  # logging is off by default


@pytest.mark.parametrize("kind", ["zero_bytes", "text_as_mp4", "truncated_moov_lost"])
def test_unopenable_logs_moov_not_found(made, kind, ffmpeg_log):
    with pytest.raises(av.error.InvalidDataError) as info:
        av.open(str(made(kind)))
    assert info.value.log == (av.logging.ERROR, MOV, "moov atom not found\n")
    assert str(info.value).endswith(f"; last error log: [{MOV}] moov atom not found")
    low_score = any("detected only with low score" in m for _, _, m in ffmpeg_log)
    assert low_score == (kind != "truncated_moov_lost")


def test_truncated_moov_lost_shape(made):
    data = made("truncated_moov_lost").read_bytes()
    boxes = synth.mp4_boxes(data)
    assert [b[0] for b in boxes] == ["ftyp", "free", "mdat"]
    assert boxes[-1][1] + boxes[-1][2] > len(data)  # mdat runs past the end; moov gone


def test_truncated_mdat_cut(made, ffmpeg_log):
    path = made("truncated_mdat_cut")
    data = path.read_bytes()
    boxes = synth.mp4_boxes(data)
    assert [b[0] for b in boxes] == ["ftyp", "moov", "free", "mdat"]
    assert boxes[-1][1] + boxes[-1][2] > len(data)
    with av.open(str(path)) as container:
        s = container.streams.video[0]
        assert (s.frames, s.duration) == (30, 30 * 512)  # the index still claims the full clip
    with av.open(str(path)) as container:
        assert container.streams.video[0].thread_type.name == "SLICE"  # PyAV's default
    packets, frames, errors = decode_packets(path)
    assert 0 < len(packets) < 30
    assert [p.is_corrupt for p in packets] == [False] * (len(packets) - 1) + [True]
    messages = [(level, name, m) for level, name, m in ffmpeg_log]
    assert any(n == MOV and m.startswith("Packet corrupt (stream = 0") for _, n, m in messages)
    assert any(lv == av.logging.ERROR and n == MOV and "partial file" in m for lv, n, m in messages)
    assert [p for p, _ in errors] == [packets[-1]]
    assert errors[0][1].errno == INVALIDDATA and errors[0][1].filename == "avcodec_send_packet()"
    assert "Error splitting the input into NAL units" in str(errors[0][1])
    assert 0 < len(frames) < len(packets)
    assert_frames_are(frames[:10], range(10))
    # Frame threading swallows the error: fewer frames, no exception.
    _, threaded, threaded_errors = decode_packets(path, thread_type="FRAME")
    assert not threaded_errors
    assert 0 < len(threaded) <= len(frames)


def test_corrupted(made, ffmpeg_log):
    path = made("corrupted")
    with av.open(str(path)) as container:
        s = container.streams.video[0]
        assert s.frames == 60
    packets, frames, errors = decode_packets(path)
    # The container is intact: every packet, full size, nothing flagged.
    assert len(packets) == 60 and not any(p.is_corrupt for p in packets)
    assert errors and all(e.errno == INVALIDDATA for _, e in errors)
    assert all("Error splitting the input into NAL units" in str(e) for _, e in errors)
    assert len(frames) < 60
    flagged = [f for f in frames if f.is_corrupt]
    assert 0 < len(flagged) < 60 - len(frames)  # is_corrupt marks concealed frames only
    messages = [m for _, name, m in ffmpeg_log if name == "h264"]
    assert any(m.startswith("Invalid NAL unit size") for m in messages)
    # Damage starts after frame 15's keyframe and the next keyframes (30, 45) are whole.
    gop_of = {}
    for f in frames:
        gop_of.setdefault(f.pts // 512 // 15, []).append(f)
    assert_frames_are(gop_of[0], range(15))
    assert_frames_are(gop_of[3], range(45, 60))
    # The high-level iterator stops at the first error.
    with av.open(str(path)) as container, pytest.raises(av.error.InvalidDataError):
        for _ in container.decode(video=0):
            pass


def test_corrupted_damage_is_inside_mdat(made, tmp_path):
    damaged = made("corrupted").read_bytes()
    clean = synth.make_clip(tmp_path / "clean.mp4", frames=60, gop=15).read_bytes()
    assert len(damaged) == len(clean)
    (_, off, size), = [b for b in synth.mp4_boxes(clean) if b[0] == "mdat"]
    differs = np.flatnonzero(np.frombuffer(damaged, np.uint8) != np.frombuffer(clean, np.uint8))
    assert differs.size and off + 8 <= differs.min() and differs.max() < off + size
