"""Probing a clip with PyAV: what the header says, and what demuxing counts.

The header's frame count is recorded (`header_frame_count`) but never trusted: the
`frame_count` column is the number of video packets the demuxer delivers for presentation
(packets an edit list hides are flagged discard by FFmpeg and are not counted).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from fractions import Fraction

import av

from tasks.errors import Blocked, Reason


@dataclass(frozen=True)
class StreamProbe:
    """What the container header says about a clip (no frame is decoded for this)."""

    container: str
    video_streams: int
    audio_streams: int
    video_stream_index: int
    video_codec: str
    pix_fmt: str | None
    bit_depth: int | None
    chroma: str | None
    avg_rate: Fraction | None
    real_rate: Fraction | None
    time_base: Fraction
    start_time_s: float | None
    header_duration_s: float | None
    header_frame_count: int | None
    stored_width: int
    stored_height: int
    sar: Fraction
    audio_codec: str | None
    audio_sample_rate: int | None
    audio_channels: int | None


def open_media(reader, size: int) -> av.container.InputContainer:
    """Open a container for reading, turning FFmpeg's refusals into reason codes."""
    if size == 0:
        raise Blocked(Reason.EMPTY_FILE, "the file is empty (0 bytes)")
    try:
        return av.open(reader, mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as e:
        message = str(e).replace(": '<none>'", "")  # PyAV names file objects '<none>'
        if isinstance(e, av.error.EOFError) or _mp4_without_index(reader, size):
            raise Blocked(Reason.TRUNCATED, "an MP4/MOV file whose index (moov) is missing: "
                          "the recording was cut off before it was finalised") from e
        raise Blocked(Reason.UNREADABLE, f"not a readable media file: {message}") from e


def _mp4_without_index(reader, size: int) -> bool:
    """True for an ISO-BMFF file (ftyp first) with no 'moov' box: a recording cut short.

    FFmpeg says "moov atom not found" only in its log, so the top-level boxes are walked
    here (a few small reads at box boundaries).
    """
    boxes, pos = [], 0
    while pos + 8 <= size and len(boxes) < 256:
        reader.seek(pos)
        head = reader.read(16)
        if len(head) < 8:
            break
        length, kind = int.from_bytes(head[:4], "big"), head[4:8]
        if length == 1 and len(head) == 16:
            length = int.from_bytes(head[8:16], "big")
        elif length == 0:
            length = size - pos
        if length < 8 or not kind.isascii():
            break
        boxes.append(kind)
        pos += length
    return bool(boxes) and boxes[0] == b"ftyp" and b"moov" not in boxes


def video_streams(container) -> list:
    """Real video streams: cover art and other attached pictures are not video."""
    return [s for s in container.streams.video
            if not (s.disposition & av.stream.Disposition.attached_pic)]


def choose_video_stream(container, policy: str):
    streams = video_streams(container)
    if not streams:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise Blocked(Reason.NO_VIDEO_STREAM, f"no video stream (streams: {', '.join(kinds)})")
    if len(streams) > 1 and policy == "block":
        raise Blocked(Reason.MULTIPLE_VIDEO_STREAMS,
                      f"{len(streams)} video streams; set ingest.multiple_video_streams: first")
    defaults = [s for s in streams if s.disposition & av.stream.Disposition.default]
    return (defaults or streams)[0]


def probe_streams(container, video) -> StreamProbe:
    cc = video.codec_context
    fmt = cc.format
    bit_depth = max((c.bits for c in fmt.components), default=None) if fmt else None
    audio = container.streams.audio[0] if container.streams.audio else None
    tb = video.time_base or Fraction(1, 90000)
    return StreamProbe(
        container=container.format.name,
        video_streams=len(video_streams(container)),
        audio_streams=len(container.streams.audio),
        video_stream_index=video.index,
        video_codec=cc.name,
        pix_fmt=fmt.name if fmt else None,
        bit_depth=bit_depth,
        chroma=_chroma(fmt),
        avg_rate=_fraction(video.average_rate),
        real_rate=_fraction(video.base_rate),
        time_base=Fraction(tb),
        start_time_s=float(video.start_time * tb) if video.start_time is not None else None,
        header_duration_s=float(video.duration * tb) if video.duration else None,
        header_frame_count=video.frames or None,
        stored_width=cc.width,
        stored_height=cc.height,
        sar=_fraction(video.sample_aspect_ratio) or Fraction(1),
        audio_codec=audio.codec_context.name if audio else None,
        audio_sample_rate=audio.codec_context.sample_rate if audio else None,
        audio_channels=audio.codec_context.channels if audio else None,
    )


def _fraction(value) -> Fraction | None:
    if value is None or value == 0:
        return None
    return Fraction(value)


def _chroma(fmt) -> str | None:
    if fmt is None or not fmt.components or fmt.is_rgb:
        return "rgb" if fmt is not None and fmt.is_rgb else None
    w, h = fmt.chroma_width(64), fmt.chroma_height(64)
    if w == 64:
        return "444"
    if h == 64:
        return "422"
    return "420" if w == 32 else f"{64 // max(w, 1)}x"


@dataclass
class TimestampStats:
    """Streaming statistics over presentation timestamps, in stream time-base ticks.

    Packets arrive in decode order; a small heap puts them back in presentation order
    (B-frame reordering is local), so memory stays bounded whatever the clip's length.
    """

    count: int = 0
    first: int | None = None
    last: int | None = None
    last_duration: int = 0
    min_step: int | None = None
    max_step: int | None = None
    unordered: int = 0
    _heap: list | None = None
    _emitted: int | None = None

    REORDER_WINDOW = 32

    def add(self, pts: int, duration: int = 0) -> None:
        if self._heap is None:
            self._heap = []
        heapq.heappush(self._heap, (pts, duration))
        if len(self._heap) > self.REORDER_WINDOW:
            self._emit(*heapq.heappop(self._heap))

    def finish(self) -> "TimestampStats":
        while self._heap:
            self._emit(*heapq.heappop(self._heap))
        return self

    def _emit(self, pts: int, duration: int) -> None:
        if self._emitted is not None:
            step = pts - self._emitted
            if step <= 0:
                self.unordered += 1
            else:
                self.min_step = step if self.min_step is None else min(self.min_step, step)
                self.max_step = step if self.max_step is None else max(self.max_step, step)
        self._emitted = pts
        self.count += 1
        self.first = pts if self.first is None else min(self.first, pts)
        self.last = pts if self.last is None else max(self.last, pts)
        if pts == self.last:
            self.last_duration = duration or self.last_duration or (self.min_step or 0)

    def is_vfr(self) -> bool:
        """Steps differ by more than 1% (rounding of a fixed rate stays within one tick)."""
        if self.min_step is None or self.max_step is None:
            return False
        return self.max_step - self.min_step > max(1, self.min_step // 100)

    def duration_ticks(self) -> int:
        if self.first is None or self.last is None:
            return 0
        return self.last - self.first + (self.last_duration or self.min_step or 0)


@dataclass(frozen=True)
class DemuxCount:
    frame_count: int
    discarded: int
    corrupt_packets: int
    rotation: int
    stats: TimestampStats


def count_by_demux(container, video) -> DemuxCount:
    """Count presented video packets by demuxing the whole stream.

    Only the first frame is decoded (for the rotation a player applies); the rest is
    demuxed, which is what makes the count cheap and independent of the header.
    """
    stats = TimestampStats()
    discarded = corrupt = 0
    rotation = None
    try:
        for packet in container.demux(video):
            if packet.size == 0 and packet.pts is None:
                continue  # the demuxer's end-of-stream flush packet
            if rotation is None:
                rotation = _rotation_from(packet)
            if packet.is_discard:
                discarded += 1  # hidden by an edit list: needed to decode, never shown
                continue
            corrupt += packet.is_corrupt
            if packet.pts is not None:
                stats.add(packet.pts, packet.duration or 0)
            else:
                stats.count += 1
    except av.error.FFmpegError as e:
        raise Blocked(Reason.TRUNCATED if _looks_truncated(e) else Reason.UNREADABLE,
                      f"demuxing stopped after {stats.count} packets: {e}") from e
    return DemuxCount(frame_count=stats.finish().count, discarded=discarded,
                      corrupt_packets=corrupt, rotation=rotation or 0, stats=stats)


def _rotation_from(packet) -> int | None:
    try:
        frames = packet.decode()
    except av.error.FFmpegError:
        return None
    return clockwise_rotation(frames[0]) if frames else None


def _looks_truncated(error: Exception) -> bool:
    return isinstance(error, av.error.EOFError) or "end of file" in str(error).lower()


def clockwise_rotation(frame) -> int:
    """FFmpeg reports the display matrix angle counter-clockwise; players turn clockwise."""
    return int(round(-frame.rotation)) % 360
