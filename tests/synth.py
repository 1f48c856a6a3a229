"""Synthetic test videos, made with PyAV at test time (no ffmpeg CLI, no committed binaries).

Every maker takes the output ``path`` first and returns the path it wrote. The picture
content (:func:`render_frame`) makes each frame identifiable from a 16x12 luma thumbnail
(:func:`identify_frame`), so a one-frame shift in a converted copy is detectable. Files are
byte-identical between runs on one machine and build (single-threaded encoders,
``fflags=+bitexact``); :data:`KINDS` maps a name to each maker for parametrized tests.

Facts about PyAV 18.1 (FFmpeg 8: libavformat 62.12, libavcodec 62.28, x264 core 165), each
checked by an assertion in ``tests/test_synth.py``:

Timestamps
- CFR mp4 from ``make_clip``: the mov muxer picks the track timescale from the codec time
  base 1/rate, doubled until >= 10000 (25 fps -> 1/12800, 30000/1001 -> 1/30000).
  ``stream.start_time == 0``, the first decoded ``frame.pts == 0``. With B-frames (x264
  default, 2 frames of reorder delay) the first packet has pts 0 and dts -1024 (negative);
  with ``bframes=False`` dts == pts. ``stream.frames`` is the sample count from the index.
  ``average_rate`` is exact: Fraction(30000, 1001) for ``make_2997``.
- Matroska: time base 1/1000, ``stream.frames == 0`` and ``stream.duration is None`` (only
  ``container.duration`` is known), so frame counts must come from decoding there.
- VFR (``make_vfr``): decoded ``frame.pts * frame.time_base`` reproduces the written times
  exactly. ``average_rate`` is frames / duration (300/49 for the default times, a rate no
  frame has); ``base_rate`` and ``guessed_rate`` are 30 (the finest spacing). Use the pts.
- AAC in mp4: the encoder's 1024-sample priming packet has pts -1024 and
  ``packet.is_discard`` True; decoding starts at pts 0; ``stream.duration`` is the exact
  sample count, but the decoder outputs the last frame whole (up to 1023 samples more).

Edit list (``make_edit_list_trim``, the shape ``ffmpeg -ss T -c copy`` writes)
- The packets before the cut keep negative pts; the muxer writes 'elst' with media_time =
  (trimmed + reorder delay) * frame duration in the track timescale (3584 = 7 * 512 for
  the defaults). On read: ``stream.frames`` counts ALL samples (30), ``stream.duration`` is
  the edit's length (25 frames), ``stream.start_time == 0``.
- Demux marks exactly the packets with pts < 0 ``packet.is_discard`` True (the keyframe
  among them). The decoder still uses them for reference but drops their frames itself, via
  ``container.decode`` and ``stream.decode(packet)`` alike: decoding yields
  ``frames - trimmed`` frames, the first with pts 0 showing ``render_frame(trimmed)``.

Rotation (``make_rotated``)
- ``stream.set_display_rotation(d)`` calls ``av_display_rotation_set(-d)``; ``d`` is
  counter-clockwise and ``frame.rotation`` reads back ``d`` normalised to [-180, 180]:
  90 -> 90, -90 -> -90, 180 -> -180, 270 -> -90. The coded size is unchanged (160x120).
  Display upright with ``np.rot90(pixels, k=round(frame.rotation / 90))`` (numpy's k > 0
  is counter-clockwise). For 90 the mp4 tkhd matrix is a=0 b=-1 c=1 d=0 (16.16), the mirror
  of an iPhone portrait clip (b=1 c=-1, frame.rotation -90, shown turned clockwise).
- PyAV 18 exposes the matrix only on decoded frames (``frame.rotation``, side data
  DISPLAYMATRIX); the Stream has no side data and no legacy "rotate" metadata tag. No matrix
  is written for rotation 0/None (frame.rotation == 0). Matroska keeps it too.

Aspect ratio (``make_anamorphic``)
- ``stream.sample_aspect_ratio == Fraction(32, 27)``, ``display_aspect_ratio == 16/9``;
  decoded frames keep the coded size (180x120) and carry no aspect ratio attribute.

Formats
- libx264 refuses odd sizes with 4:2:0 (``av.error.ExternalError`` at the first encode,
  "Generic error in an external library"); MPEG-4 Part 2 yuv420p and libx264 yuv444p accept
  them. 10-bit HEVC decodes as yuv420p10le, profile "Main 10"; H.264 yuv444p has profile
  "High 4:4:4 Predictive".

Broken files. All errors are ``av.error.InvalidDataError`` (subclass of FFmpegError and
ValueError), ``errno == 1094995529`` (AVERROR_INVALIDDATA), strerror "Invalid data found
when processing input"; ``e.filename`` is the path for av.open and 'avcodec_send_packet()'
for decode. PyAV's default log level is None: FFmpeg messages are dropped, ``e.log`` is None
and ``av.logging.Capture()`` collects nothing. After ``av.logging.set_level(av.logging.WARNING)``
(process-wide; restore it), ``e.log == (16, component, message)`` and ``str(e)`` ends with
"; last error log: [component] message".
- Zero bytes, text named .mp4, truncated with moov at the end (``make_truncated(faststart=
  False)``): ``av.open`` raises; logged "moov atom not found" (component
  "mov,mp4,m4a,3gp,3g2,mj2"; for the first two also a warning "detected only with low score").
- Truncated with moov first (``faststart=True``): ``av.open`` succeeds and ``stream.frames``
  and ``stream.duration`` describe the whole clip (30 frames). Demux never raises: it stops
  early, and the last packet is partial with ``packet.is_corrupt`` True (warning "Packet
  corrupt (stream = 0, dts = ...)", error "stream 0, offset 0x...: partial file").
  Decoding that packet raises InvalidDataError ("Error splitting the input into NAL
  units") with the default ``stream.thread_type`` (SLICE); with ``thread_type = "FRAME"``
  or "AUTO" it does NOT raise and the frames are silently fewer (observed: 16 vs 14 of 30).
- Corrupted mdat (``make_corrupted``): ``av.open`` and demux are clean (all 60 packets, full
  sizes, no ``is_corrupt``: the index is intact). ``stream.decode(packet)`` raises
  InvalidDataError for each packet whose NAL length prefix became garbage (log: "Invalid NAL
  unit size (...)", "Error splitting the input into NAL units."); the frames of those
  packets are simply absent. A frame that referenced a lost one comes out concealed, and
  such frames are the ones flagged ``frame.is_corrupt`` (log "co located POCs unavailable",
  or "error while decoding MB ..." when a slice itself is damaged). Observed: 7 raising
  packets, 53 of 60 frames, 1 flagged. ``container.decode()``
  re-raises the first error and its generator is then finished, so decode packet by packet
  to go on past it. Detection: any InvalidDataError, or decoded count < ``stream.frames``,
  or any ``frame.is_corrupt``; ``is_corrupt`` alone under-reports.
"""

from __future__ import annotations

import functools
import io
import pathlib
import struct
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction

import av
import cv2
import numpy as np

__all__ = [
    "KINDS",
    "THUMB_SIZE",
    "identify_frame",
    "luma_thumb",
    "make_10bit",
    "make_2997",
    "make_444",
    "make_anamorphic",
    "make_audio_only",
    "make_clip",
    "make_corrupted",
    "make_edit_list_trim",
    "make_odd_size",
    "make_rotated",
    "make_text_as_mp4",
    "make_truncated",
    "make_two_video_streams",
    "make_vfr",
    "make_zero_bytes",
    "mp4_boxes",
    "render_frame",
    "vfr_times",
]

# ---------------------------------------------------------------------------
# Content: every frame distinct and identifiable from a tiny luma thumbnail.
# ---------------------------------------------------------------------------

# The picture is cut into an 8 x 6 grid of cells; each frame paints two blocks into it.
_GRID_COLS, _GRID_ROWS = 8, 6
# The background is three sine waves whose phase advances by 7/37 of a period per frame.
# 37 and 48 are coprime, so (background phase, block cells) repeats only after 1776 frames;
# at 160 x 120 any two of the first 100 frames differ by >= 8 luma levels on average in their
# thumbnails, neighbours by >= 29, while lossy coding leaves a decoded frame ~1-2.5 levels away.
_BG_PERIOD = 37
_BG_STEP = 7
# Thumbnails are 16 x 12 (width, height): at 160 x 120 a block (20 x 20 px) covers 2 x 2
# thumbnail pixels, so a one-frame shift moves the block by a whole cell and is obvious.
THUMB_SIZE = (16, 12)


def render_frame(index: int, size: tuple[int, int] = (160, 120), *, variant: int = 0) -> np.ndarray:
    """Return frame ``index`` of the synthetic content as an RGB ``(h, w, 3)`` uint8 array.

    Pure numpy, so the same ``(index, size, variant)`` always gives the same pixels.
    ``variant=1`` is a visibly different picture (inverted), used for a second video stream.
    """
    w, h = size
    x = np.arange(w, dtype=np.float64)[None, :] / w
    y = np.arange(h, dtype=np.float64)[:, None] / h
    phase = (index * _BG_STEP % _BG_PERIOD) / _BG_PERIOD
    # Smooth gradients (values 60..180), one per channel so chroma carries information too
    # (4:4:4 vs 4:2:0 differ, colour-matrix bugs show). They slide by 7/37 of a period per
    # frame: large enough that neighbouring frames' thumbnails differ by ~30 luma levels.
    r = 120 + 60 * np.sin(2 * np.pi * (x - phase))
    g = 120 + 60 * np.sin(2 * np.pi * (y + 0.5 * x - phase))
    b = 120 + 60 * np.sin(2 * np.pi * (x + y + phase))
    img = np.stack(np.broadcast_arrays(r, g, b), axis=-1).round().astype(np.uint8)
    # Two blocks whose grid cells encode the index: a bright one in cell i % 48 and a dark
    # one in cell (5i + 17) % 48. They never overlap (4i = -17 mod 48 has no solution), and
    # two frames with different i % 48 differ in both blocks.
    cells = _GRID_COLS * _GRID_ROWS
    cw, ch = max(1, w // _GRID_COLS), max(1, h // _GRID_ROWS)
    for cell, value in ((index % cells, 250), ((5 * index + 17) % cells, 5)):
        cx, cy = (cell % _GRID_COLS) * cw, (cell // _GRID_COLS) * ch
        img[cy : cy + ch, cx : cx + cw] = value
    if variant == 1:
        img = 255 - img
    elif variant != 0:
        raise ValueError(f"variant must be 0 or 1, got {variant}")
    return img


@functools.lru_cache(maxsize=4096)
def _expected_thumb(index: int, size: tuple[int, int], variant: int) -> np.ndarray:
    return luma_thumb(render_frame(index, size, variant=variant))


def luma_thumb(image: np.ndarray | av.VideoFrame) -> np.ndarray:
    """Downscale an RGB array (or a decoded ``av.VideoFrame``) to a 16 x 12 float32 luma thumbnail.

    Uses the stored (coded) pixels: no rotation or aspect-ratio correction is applied.
    """
    if isinstance(image, av.VideoFrame):
        image = image.to_ndarray(format="rgb24")
    gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, THUMB_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)


def identify_frame(
    image: np.ndarray | av.VideoFrame,
    candidates: Iterable[int] = range(64),
    *,
    size: tuple[int, int] | None = None,
    variant: int = 0,
) -> tuple[int, float]:
    """Return ``(index, distance)``: the candidate source frame whose thumbnail is nearest.

    ``distance`` is the mean absolute luma difference (0..255) to that candidate; after lossy
    coding it is a few units, while the neighbouring frames are tens of units away.
    ``size`` defaults to the image's own size.
    """
    if isinstance(image, av.VideoFrame):
        image = image.to_ndarray(format="rgb24")
    if size is None:
        size = (image.shape[1], image.shape[0])
    thumb = luma_thumb(image)
    best = min(
        (float(np.abs(thumb - _expected_thumb(i, size, variant)).mean()), i)
        for i in candidates
    )
    return best[1], best[0]


# ---------------------------------------------------------------------------
# Small MP4 reader, used to place the truncation and corruption cuts.
# ---------------------------------------------------------------------------


def mp4_boxes(data: bytes) -> list[tuple[str, int, int]]:
    """Top-level ISO-BMFF boxes as ``(type, offset, size)``; stops at the first malformed box."""
    boxes, off = [], 0
    while off + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[off : off + 8])
        if size == 1:  # 64-bit size follows the type
            if off + 16 > len(data):
                break
            size = struct.unpack(">Q", data[off + 8 : off + 16])[0]
        elif size == 0:  # box runs to the end of the file
            size = len(data) - off
        if size < 8:
            break
        boxes.append((kind.decode("latin-1"), off, size))
        off += size
    return boxes


# ---------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------


def _container_options(path: pathlib.Path, faststart: bool) -> dict[str, str]:
    # fflags=+bitexact keeps the files byte-identical between runs and FFmpeg builds: no
    # "Lavf62.x" encoder string in mp4, no random segment/track UIDs in Matroska.
    opts = {"fflags": "+bitexact"}
    if faststart:
        if path.suffix.lower() not in (".mp4", ".m4v", ".m4a", ".mov"):
            raise ValueError(f"faststart needs an mp4/mov container, got suffix {path.suffix!r}")
        # The mov muxer rewrites the file at close so that moov comes before mdat.
        opts["movflags"] = "+faststart"
    return opts


def _avx512() -> bool:
    try:
        return "avx512" in pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


# x264's AVX-512 code gives different bytes from run to run on some CPUs (seen on an AMD
# EPYC: the same 30 frames, 5 encodes, 4 different files); capped at AVX2 it is repeatable.
# Only where the CPU has AVX-512, so the cap never names instructions a CPU lacks.
X264_REPEATABLE = ["asm=AVX2"] if _avx512() else []


def _add_video_stream(
    container: av.container.OutputContainer,
    *,
    codec: str,
    size: tuple[int, int],
    rate: Fraction,
    pix_fmt: str,
    bframes: bool,
    gop: int | None,
    sar: Fraction | None,
    rotation: float | None,
    time_base: Fraction | None = None,
) -> av.VideoStream:
    options: dict[str, str] = {}
    if codec in ("libx264", "libx265"):
        # Single-threaded encoders give the same bytes on every machine (x264/x265 output
        # depends on the thread count, which otherwise follows the CPU count).
        params = ["log-level=error"] if codec == "libx265" else list(X264_REPEATABLE)
        if codec == "libx265":
            params += ["pools=none", "frame-threads=1"]
        if gop is not None:
            # Exactly one keyframe every `gop` frames: no scene-cut or early IDRs.
            params += [f"keyint={gop}", f"min-keyint={gop}", "scenecut=0"]
        if not bframes:
            params.append("bframes=0")
        if params:
            options[f"{codec[3:]}-params"] = ":".join(params)
    stream = container.add_stream(codec, rate=rate, options=options)
    ctx = stream.codec_context
    ctx.width, ctx.height = size
    ctx.pix_fmt = pix_fmt
    ctx.thread_count = 1
    if time_base is not None:
        ctx.time_base = time_base
    if gop is not None:
        ctx.gop_size = gop
    if not bframes:
        ctx.max_b_frames = 0
    if sar is not None:
        # Written both into the bitstream (H.264 VUI) and into the mp4 'pasp' box.
        ctx.sample_aspect_ratio = Fraction(sar)
    if rotation is not None:
        # PyAV 18: `degrees` is counter-clockwise and is what VideoFrame.rotation reads back
        # (it calls av_display_rotation_set(-degrees) internally). See the module docstring.
        stream.set_display_rotation(rotation)
    return stream


def _encode_video(
    container: av.container.OutputContainer,
    stream: av.VideoStream,
    pts: Sequence[int],
    *,
    size: tuple[int, int],
) -> None:
    """Encode ``render_frame(k)`` with ``pts[k]`` (in the codec time base), then flush."""
    for k, p in enumerate(pts):
        frame = av.VideoFrame.from_ndarray(render_frame(k, size), format="rgb24")
        frame.pts = p
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def _add_audio_stream(container: av.container.OutputContainer, rate: int = 48000) -> av.AudioStream:
    return container.add_stream("aac", rate=rate, layout="stereo")


def _encode_audio(container: av.container.OutputContainer, stream: av.AudioStream, seconds: Fraction) -> None:
    """Encode an AAC stereo sine (440 Hz left, 660 Hz right) lasting ``seconds``."""
    rate = stream.codec_context.sample_rate
    total = round(seconds * rate)
    chunk = stream.codec_context.frame_size or 1024  # AAC: 1024; the last frame may be shorter
    for start in range(0, total, chunk):
        t = np.arange(start, min(start + chunk, total), dtype=np.float64) / rate
        samples = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)])
        frame = av.AudioFrame.from_ndarray(samples.astype(np.float32), format="fltp", layout="stereo")
        frame.sample_rate = rate
        frame.time_base = Fraction(1, rate)
        frame.pts = start
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def make_clip(
    path: pathlib.Path,
    *,
    frames: int = 30,
    size: tuple[int, int] = (160, 120),
    rate: Fraction = Fraction(25),
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    audio: bool = False,
    faststart: bool = False,
    bframes: bool = True,
    gop: int | None = None,
    sar: Fraction | None = None,
    rotation: float | None = None,
) -> pathlib.Path:
    """Write a constant-frame-rate clip: frame i has pts i/rate and shows ``render_frame(i)``.

    The container follows the suffix (.mp4/.mov/.m4v, or .mkv). ``audio=True`` adds an AAC
    stereo 48 kHz sine track of the same duration (written after the video is encoded; the
    muxer interleaves). ``bframes=False`` forbids B-frames (then dts == pts).
    """
    path = pathlib.Path(path)
    rate = Fraction(rate)
    with av.open(str(path), "w", container_options=_container_options(path, faststart)) as container:
        stream = _add_video_stream(
            container, codec=codec, size=size, rate=rate, pix_fmt=pix_fmt,
            bframes=bframes, gop=gop, sar=sar, rotation=rotation,
        )
        # Every stream must exist before the first packet is muxed (the header is written then).
        audio_stream = _add_audio_stream(container) if audio else None
        _encode_video(container, stream, range(frames), size=size)
        if audio_stream is not None:
            # The muxer interleaves by dts, so writing all video then all audio is fine.
            _encode_audio(container, audio_stream, frames / rate)
    return path


def vfr_times(frames: int = 20) -> list[Fraction]:
    """Default presentation times (seconds) for :func:`make_vfr`.

    Intervals alternate 1/30 s and 1/10 s, and the gap after the middle frame is 2 s.
    """
    times, t = [], Fraction(0)
    for k in range(frames):
        times.append(t)
        t += Fraction(1, 30) if k % 2 == 0 else Fraction(1, 10)
        if k == frames // 2 - 1:
            t += Fraction(2)
    return times


def make_vfr(
    path: pathlib.Path,
    *,
    times: Sequence[Fraction] | None = None,
    time_base: Fraction = Fraction(1, 30),
    size: tuple[int, int] = (160, 120),
    codec: str = "libx264",
    bframes: bool = True,
) -> pathlib.Path:
    """Write a variable-frame-rate clip: frame k shows ``render_frame(k)`` at ``times[k]`` seconds.

    ``times`` (default :func:`vfr_times`) must be increasing multiples of ``time_base``.
    """
    path = pathlib.Path(path)
    times = vfr_times() if times is None else [Fraction(t) for t in times]
    ticks = [t / time_base for t in times]
    if any(t.denominator != 1 for t in ticks) or any(b <= a for a, b in zip(ticks, ticks[1:])):
        raise ValueError(f"times must be increasing multiples of {time_base}")
    with av.open(str(path), "w", container_options=_container_options(path, False)) as container:
        stream = _add_video_stream(
            container, codec=codec, size=size, rate=1 / time_base, pix_fmt="yuv420p",
            bframes=bframes, gop=None, sar=None, rotation=None, time_base=time_base,
        )
        _encode_video(container, stream, [int(t) for t in ticks], size=size)
    return path


def make_edit_list_trim(
    path: pathlib.Path, trimmed: int = 5, frames: int = 30, *, rate: Fraction = Fraction(25)
) -> pathlib.Path:
    """Write an MP4 whose edit list hides the first ``trimmed`` of ``frames`` coded frames.

    Made the way ``ffmpeg -ss T -i in.mp4 -c copy out.mp4`` makes it: a normal clip (one
    keyframe, B-frames) is encoded in memory, then its packets are stream-copied with every
    timestamp shifted back by ``trimmed`` frame durations. The packets before the cut keep
    negative pts (they are needed to decode from the keyframe), and the mov muxer writes an
    'elst' edit whose media_time skips them. Frame i of the file still shows
    ``render_frame(i)``, so the first presented frame shows ``render_frame(trimmed)``.
    """
    path = pathlib.Path(path)
    if not 0 < trimmed < frames:
        raise ValueError(f"need 0 < trimmed < frames, got trimmed={trimmed}, frames={frames}")
    source = io.BytesIO()
    with av.open(source, "w", format="mp4", container_options={"fflags": "+bitexact"}) as container:
        stream = _add_video_stream(
            container, codec="libx264", size=(160, 120), rate=Fraction(rate), pix_fmt="yuv420p",
            bframes=True, gop=None, sar=None, rotation=None,
        )
        _encode_video(container, stream, range(frames), size=(160, 120))
    source.seek(0)
    with (
        av.open(source, "r") as src,
        av.open(str(path), "w", container_options=_container_options(path, False)) as dst,
    ):
        in_stream = src.streams.video[0]
        out_stream = dst.add_stream_from_template(in_stream)
        # Frame durations in the source's time base (exact: CFR source).
        shift = round(trimmed / Fraction(rate) / in_stream.time_base)
        for packet in src.demux(in_stream):
            if packet.dts is None:  # the empty packet demux yields at EOF
                continue
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = out_stream
            dst.mux(packet)
    return path


def make_truncated(path: pathlib.Path, faststart: bool, *, keep: float = 0.6, frames: int = 30) -> pathlib.Path:
    """Write a valid clip and keep only its first ``keep`` fraction of bytes (an interrupted copy).

    ``faststart=False``: moov sits after mdat, so the cut loses it (and the end of mdat).
    ``faststart=True``: moov sits before mdat and survives; the media data is cut short, so
    the index points past the end of the file.
    """
    path = pathlib.Path(path)
    make_clip(path, frames=frames, faststart=faststart)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def make_corrupted(path: pathlib.Path, *, frames: int = 60, gop: int = 15) -> pathlib.Path:
    """Write a valid clip (``gop``-frame GOPs), then overwrite media data with noise.

    The bytes from 40% to 50% of the way through the mdat box get seeded random values; the
    ftyp/moov boxes and the first and last GOPs stay intact, so the file opens and demuxes
    cleanly and only decoding fails (see the module docstring for how).
    """
    path = pathlib.Path(path)
    make_clip(path, frames=frames, gop=gop)
    data = bytearray(path.read_bytes())
    (_, mdat_off, mdat_size), = [b for b in mp4_boxes(bytes(data)) if b[0] == "mdat"]
    start = mdat_off + mdat_size * 2 // 5
    n = mdat_size // 10
    data[start : start + n] = np.random.default_rng(1234).integers(0, 256, n, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def make_two_video_streams(
    path: pathlib.Path, *, frames: int = 20, sizes: tuple[tuple[int, int], tuple[int, int]] = ((160, 120), (96, 72))
) -> pathlib.Path:
    """Write one file with two H.264 video streams: #0 shows variant 0, #1 (smaller) variant 1."""
    path = pathlib.Path(path)
    with av.open(str(path), "w", container_options=_container_options(path, False)) as container:
        streams = [
            _add_video_stream(
                container, codec="libx264", size=size, rate=Fraction(25), pix_fmt="yuv420p",
                bframes=True, gop=None, sar=None, rotation=None,
            )
            for size in sizes
        ]
        for i in range(frames):
            for variant, (stream, size) in enumerate(zip(streams, sizes)):
                frame = av.VideoFrame.from_ndarray(render_frame(i, size, variant=variant), format="rgb24")
                frame.pts = i
                for packet in stream.encode(frame):
                    container.mux(packet)
        for stream in streams:
            for packet in stream.encode(None):
                container.mux(packet)
    return path


def make_audio_only(path: pathlib.Path, *, seconds: Fraction = Fraction(1)) -> pathlib.Path:
    """Write an mp4/m4a with a single AAC stereo 48 kHz sine stream and no video."""
    path = pathlib.Path(path)
    with av.open(str(path), "w", container_options=_container_options(path, False)) as container:
        stream = _add_audio_stream(container)
        _encode_audio(container, stream, Fraction(seconds))
    return path


def make_zero_bytes(path: pathlib.Path) -> pathlib.Path:
    """Write an empty file (an upload that never arrived)."""
    path = pathlib.Path(path)
    path.write_bytes(b"")
    return path


def make_text_as_mp4(path: pathlib.Path) -> pathlib.Path:
    """Write plain text under a video name (a mislabelled download)."""
    path = pathlib.Path(path)
    path.write_text("This is not a video.\n" * 50, encoding="ascii")
    return path


def make_10bit(path: pathlib.Path, *, codec: str = "libx265", frames: int = 20) -> pathlib.Path:
    """Write 10-bit 4:2:0 video (yuv420p10le). Default HEVC, as phones record HDR/10-bit."""
    return make_clip(path, frames=frames, codec=codec, pix_fmt="yuv420p10le")


def make_444(path: pathlib.Path, *, frames: int = 20) -> pathlib.Path:
    """Write H.264 4:4:4 (High 4:4:4 Predictive profile, yuv444p)."""
    return make_clip(path, frames=frames, pix_fmt="yuv444p")


def make_odd_size(
    path: pathlib.Path, *, size: tuple[int, int] = (161, 121), codec: str = "mpeg4", pix_fmt: str = "yuv420p", frames: int = 20
) -> pathlib.Path:
    """Write a clip with odd width and height.

    libx264 refuses odd sizes with 4:2:0 (avcodec_open2 raises av.error.ExternalError), so the
    default is MPEG-4 Part 2 in yuv420p: odd luma, chroma planes rounded up (81 x 61), which
    is the awkward case for a converter that must produce even-sized 4:2:0 H.264.
    """
    return make_clip(path, frames=frames, size=size, codec=codec, pix_fmt=pix_fmt)


def make_2997(path: pathlib.Path, *, frames: int = 30, audio: bool = True) -> pathlib.Path:
    """Write NTSC-rate video: exactly 30000/1001 fps (time base 1/30000, each frame 1001 ticks)."""
    return make_clip(path, frames=frames, rate=Fraction(30000, 1001), audio=audio)


def make_anamorphic(
    path: pathlib.Path, *, size: tuple[int, int] = (180, 120), sar: Fraction = Fraction(32, 27), frames: int = 20
) -> pathlib.Path:
    """Write anamorphic video: DVD 16:9 NTSC (720x480, SAR 32/27) scaled by 1/4: DAR 16/9."""
    return make_clip(path, frames=frames, size=size, sar=sar)


def make_rotated(path: pathlib.Path, degrees: float = 90, *, frames: int = 20) -> pathlib.Path:
    """Write a clip whose display matrix says: rotate the stored picture ``degrees`` counter-clockwise."""
    return make_clip(path, frames=frames, rotation=degrees)


def _with_suffix(maker: Callable[..., pathlib.Path], suffix: str, **kwargs) -> Callable[[pathlib.Path], pathlib.Path]:
    def make(path: pathlib.Path) -> pathlib.Path:
        return maker(pathlib.Path(path).with_suffix(suffix), **kwargs)

    return make


# name -> maker(path) -> path actually written. Pass a path ending in ".mp4"; a maker that
# needs another container changes the suffix and returns the new path.
KINDS: dict[str, Callable[[pathlib.Path], pathlib.Path]] = {
    "clip": make_clip,
    "clip_audio": functools.partial(make_clip, audio=True),
    "clip_faststart": functools.partial(make_clip, audio=True, faststart=True),
    "clip_no_bframes": functools.partial(make_clip, bframes=False),
    "clip_gop10": functools.partial(make_clip, gop=10),
    "clip_mkv": _with_suffix(make_clip, ".mkv", audio=True),
    "vfr": make_vfr,
    "edit_list_trim": make_edit_list_trim,
    "two_video_streams": make_two_video_streams,
    "audio_only": make_audio_only,
    "zero_bytes": make_zero_bytes,
    "text_as_mp4": make_text_as_mp4,
    "truncated_moov_lost": functools.partial(make_truncated, faststart=False),
    "truncated_mdat_cut": functools.partial(make_truncated, faststart=True),
    "corrupted": make_corrupted,
    "10bit": make_10bit,
    "444": make_444,
    "odd_size": make_odd_size,
    "2997": make_2997,
    "anamorphic": make_anamorphic,
    "rotated": make_rotated,
    "rotated_270": functools.partial(make_rotated, degrees=270),
}
