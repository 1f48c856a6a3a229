"""Exact-frame access: frame index <-> presentation timestamp, and a reader that starts anywhere.

Frame ``i`` of a clip is the ``i``-th presented frame in presentation order. Its timestamp
comes from demuxing (no decoding): every video packet with a pts that an edit list does not
hide (``packet.is_discard``), sorted, because packets arrive in decode order (B-frames).
That array is the :class:`Timeline`; times are ``pts * time_base`` (exact ``Fraction``s),
never ``index / fps``, so VFR clips and edit lists need no special case.

:class:`FrameReader` yields ``(index, pts, frame)`` for a range of indices. A read that
starts where the previous one stopped continues decoding (no seek); any other start seeks
back to a keyframe at or before the target, decodes forward and drops frames until the pts
matches the timeline (pytorchvideo's "seek back, then filter by PTS"). Every frame's pts is
checked against the timeline, so a reader can never silently be one frame off.

Seek quirks (PyAV 18.1 / FFmpeg 8), each exercised in ``tests/tasks/media/test_frames.py``:

- ``container.seek(pts, stream=s, backward=True)`` already calls ``avcodec_flush_buffers``
  on every stream's decoder (also ending the draining state after EOF), so nothing decoded
  before the seek comes out after it; only the demux generator has to be started afresh.
- Closed-GOP H.264 in MP4 and Matroska (B-frames, dts < pts), VFR, edit lists (the keyframe
  has a negative, discarded pts) and VP9 WebM land on the target's keyframe at the first try
  for every frame: the seek goes by presentation time.
- A seek can land *after* the target (the first decoded frame has a larger pts). MP4 with
  x264 ``open-gop``: a leading B-frame of a recovery-point I-frame comes before it in
  presentation order; a seek to it lands on that I-frame and the decoder drops the B-frame
  (its references are missing): 1 of 60 frames, 1 retry. MPEG-TS seeks are coarse (a search
  on bytes): every start, frame 0 included, lands a GOP or more late; 1 to 5 retries. The
  reader seeks again to earlier timeline entries (1, 2, 4, ... frames back), and finally to
  far before the first frame, which mov, Matroska, WebM and MPEG-TS all answer with their
  first keyframe.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from tasks.errors import Blocked, FrameError, Reason
from tasks.media.probe import choose_video_stream, open_media

# A seek target well before any first timestamp: "go to the first keyframe" (FFmpeg answers
# a backward seek with no keyframe before the target with the first one, for mov, Matroska,
# WebM and MPEG-TS alike). Far below 0 yet far from int64 overflow when rescaled.
_BEFORE_START = -(2**40)


# ---------------------------------------------------------------------------
# Timeline: index <-> pts, by demuxing
# ---------------------------------------------------------------------------


def frame_timeline(container, stream) -> np.ndarray:
    """Presentation pts of every presented frame of ``stream``, in order (int64 array).

    Demuxes the whole stream (no decoding) and leaves the container at its end; a
    :class:`FrameReader` seeks before its first read anyway. Skipped: the end-of-stream
    flush packets (no pts) and packets an edit list hides (``is_discard``: the decoder
    needs them as references but drops their frames itself).
    """
    pts = []
    try:
        for packet in container.demux(stream):
            if packet.pts is None or packet.is_discard:
                continue
            pts.append(packet.pts)
    except av.error.FFmpegError as e:
        raise Blocked(Reason.UNREADABLE, f"demuxing stopped after {len(pts)} packets: {e}") from e
    timeline = np.sort(np.asarray(pts, dtype=np.int64))
    repeated = np.flatnonzero(np.diff(timeline) == 0)
    if repeated.size:
        # Two frames with one pts: index <-> pts would be ambiguous, and so would matching.
        raise Blocked(Reason.BAD_TIMESTAMPS, f"{repeated.size} video packets repeat a pts "
                      f"(first: {timeline[repeated[0]]} at frame {repeated[0] + 1})")
    return timeline


@dataclass(frozen=True, eq=False)
class Timeline:
    """Presentation timestamps of a clip's frames: frame ``i`` has pts ``pts[i]``.

    ``pts`` is a read-only, strictly increasing int64 array in ticks of ``time_base``.
    """

    pts: np.ndarray
    time_base: Fraction

    def __post_init__(self):
        pts = np.array(self.pts, dtype=np.int64)  # a copy: nobody else can change it
        if pts.ndim != 1:
            raise ValueError(f"expected a 1-D pts array, got shape {pts.shape}")
        if pts.size > 1 and not (np.diff(pts) > 0).all():
            raise ValueError("pts must be strictly increasing")
        pts.flags.writeable = False
        object.__setattr__(self, "pts", pts)
        object.__setattr__(self, "time_base", Fraction(self.time_base))

    @classmethod
    def from_stream(cls, container, stream) -> "Timeline":
        return cls(frame_timeline(container, stream), Fraction(stream.time_base))

    def __len__(self) -> int:
        return len(self.pts)

    def _check(self, index: int) -> int:
        if not 0 <= index < len(self.pts):
            raise IndexError(f"frame index {index} out of range: "
                             f"the clip has {len(self.pts)} frames")
        return int(index)

    def pts_of(self, index: int) -> int:
        return int(self.pts[self._check(index)])

    def time_s(self, index: int) -> Fraction:
        """Presentation time of frame ``index`` in seconds, exact (``float()`` it for display)."""
        return self.pts_of(index) * self.time_base

    def seconds(self, frames: np.ndarray | None = None) -> np.ndarray:
        """Presentation times in seconds (float64) of every frame, or of the indices
        ``frames``: (pts x numerator) / denominator, one correctly rounded division, so the
        same float as ``float(pts * time_base)`` with Fractions (what the tables hold)."""
        pts = self.pts if frames is None else self.pts[frames]
        return (pts.astype(np.float64) * self.time_base.numerator) / self.time_base.denominator

    def index_of(self, pts: int) -> int:
        """Index of the frame with exactly this pts; KeyError when no frame has it."""
        i = int(np.searchsorted(self.pts, pts))
        if i == len(self.pts) or self.pts[i] != pts:
            raise KeyError(f"no frame has pts {pts}")
        return i


# ---------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------


class FrameReader:
    """Reads exact frames by index: ``read(start, count)`` yields ``(index, pts, frame)``.

    Consecutive reads (``read(0, 10)`` then ``read(10, 10)``) decode on without seeking;
    any other start seeks (see the module docstring). ``seeks`` counts ``container.seek``
    calls and ``retries`` the seeks that had to be repeated further back.

    Memory: frames are yielded one at a time and not kept. Between reads the decoder's own
    delay is all that is held (plus, rarely, the rest of the frames one packet produced).
    Only one read is active at a time: starting a new one invalidates the previous generator.
    The reader owns nothing unless made by :func:`open_reader`; ``close()`` closes the
    container it was given in any case.
    """

    def __init__(self, container, stream, timeline: Timeline | None = None, *, _owned=()):
        self.container, self.stream = container, stream
        if timeline is None:
            timeline = Timeline.from_stream(container, stream)
        self.timeline = timeline
        if not stream.codec_context.is_open:
            # Frame threads: PyAV's default (slice threads) barely helps H.264. Must be set
            # before the decoder opens (on the first decode).
            stream.thread_type = "AUTO"
        self.seeks = 0
        self.retries = 0
        self._owned = _owned
        self._frames: Iterator | None = None  # decoded frames, in step with self._next
        self._next: int | None = None  # index of the frame self._frames yields next
        self._generation = 0  # which read() may use self._frames

    def __len__(self) -> int:
        return len(self.timeline)

    @property
    def position(self) -> int | None:
        """Index the decoder yields next without seeking; None when the next read must seek."""
        return self._next

    def read(self, start: int, count: int = 1) -> Iterator[tuple[int, int, av.VideoFrame]]:
        """Yield ``(index, pts, frame)`` for frames ``start .. start + count - 1``.

        ``start`` must be a frame index (``IndexError`` otherwise, raised here, before any
        decoding); a range running past the last frame is cut there, like a slice, so
        ``read(s, 10)`` for chunks of 10 yields fewer frames only in the last chunk. A frame
        whose pts is not the timeline's raises :class:`FrameError`.
        """
        n = len(self.timeline)
        if not 0 <= start < n:
            raise IndexError(f"start frame {start} out of range: the clip has {n} frames")
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        self._generation += 1
        return self._read(int(start), min(int(start) + int(count), n), self._generation)

    def _read(self, start: int, stop: int, generation: int):
        first = None
        for index in range(start, stop):
            if generation != self._generation:
                raise RuntimeError("another read() started on this reader; this one is stale")
            if index == start and self._next != start:
                first = self._seek_to(start)
            self._next = None  # unknown until this frame checks out
            frame = first if first is not None else self._next_frame(index)
            first = None  # (the frame a seek returned always has the target's pts)
            if frame.pts != self.timeline.pts[index]:
                raise FrameError(index, int(self.timeline.pts[index]), frame.pts,
                                 "decoding on from the previous frame")
            self._next = index + 1
            yield index, int(frame.pts), frame
            del frame  # hold nothing while the caller works on the next one

    def _pull(self, index: int):
        """The next decoded frame, or None at the end of the stream."""
        try:
            return next(self._frames, None)
        except av.error.FFmpegError as e:
            self._frames = None
            raise FrameError(index, int(self.timeline.pts[index]), None, f"decoding failed: {e}",
                             Reason.DECODE_ERROR) from e

    def _next_frame(self, index: int):
        frame = self._pull(index)
        if frame is None:
            raise FrameError(index, int(self.timeline.pts[index]), None,
                             "the decoder ran out of frames")
        return frame

    def _seek_to(self, index: int):
        """Seek so that the decoder is at frame ``index``; return that frame (decoded).

        Seeks to the target's own pts first, decoding forward and dropping frames before it.
        If the first frame decoded after the seek is already past the target (or nothing
        comes), the seek landed too late: seek again 1, 2, 4, ... frames earlier and finally
        to before the first frame. A frame that is skipped although decoding started before
        it is a hard error (retrying would not bring it back).
        """
        target = int(self.timeline.pts[index])
        back = 0
        while True:
            at = index - back
            offset = int(self.timeline.pts[at]) if at >= 0 else _BEFORE_START
            self._start_at(offset)
            earlier = 0  # frames decoded (and dropped) before the target
            while (frame := self._pull(index)) is not None:
                if frame.pts is None:
                    raise FrameError(index, target, None, "a decoded frame has no pts")
                if frame.pts >= target:
                    break
                earlier += 1
            if frame is not None and frame.pts == target:
                return frame
            if earlier:
                why = ("the frame was skipped while decoding towards it" if frame is not None
                       else "the decoder ran out of frames before it")
                raise FrameError(index, target, None if frame is None else frame.pts, why)
            if at < 0:
                got = None if frame is None else frame.pts
                raise FrameError(index, target, got,
                                 "not reached even when decoding from the first keyframe")
            # Landed after the target: its keyframe is earlier than where the demuxer put us,
            # or the decoder dropped it as a leading frame of an open GOP. Try further back.
            self.retries += 1
            back = 1 if back == 0 else back * 2

    def _start_at(self, offset: int) -> None:
        self._frames, self._next = None, None
        try:
            # To the keyframe at or before `offset` (stream time base, so `stream=` is
            # required); PyAV then flushes every decoder (avcodec_flush_buffers), so nothing
            # decoded before the seek comes out after it.
            self.container.seek(offset, stream=self.stream, backward=True)
        except av.error.FFmpegError as e:
            raise Blocked(Reason.DECODE_ERROR, f"seeking to pts {offset} failed: {e}") from e
        self.seeks += 1
        self._frames = self._decode_all()

    def _decode_all(self):
        """Every decoded frame from the current demux position, one at a time. At the end
        demux yields empty packets whose decoding drains the decoder's delayed frames."""
        for packet in self.container.demux(self.stream):
            frames = packet.decode()  # usually 0 or 1 frame; several when draining at the end
            frames.reverse()
            while frames:
                yield frames.pop()  # a frame once yielded is no longer referenced here

    def close(self) -> None:
        self._frames, self._next = None, None
        self.container.close()
        for resource in self._owned:
            resource.close()

    def __enter__(self) -> "FrameReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_reader(source, *, policy: str = "first") -> FrameReader:
    """Open a path or a seekable binary file object (e.g. ``fsspec.open(uri, "rb")``'s) for
    exact-frame reading; the timeline is built here (one demux pass).

    Failures to open become ``Blocked`` (as in ``tasks.media.probe``); a clip without frames is
    ``Blocked(no_frames)``. Close the reader (or use it as a context manager): it closes the
    container and a file it opened itself, never a file object it was given.
    """
    owned = []
    if isinstance(source, (str, os.PathLike)):
        source = open(source, "rb")
        owned.append(source)
    try:
        source.seek(0, os.SEEK_END)
        size = source.tell()
        source.seek(0)
        container = open_media(source, size)
        try:
            stream = choose_video_stream(container, policy)
            timeline = Timeline.from_stream(container, stream)
            if not len(timeline):
                raise Blocked(Reason.NO_FRAMES, "the video stream has no frames")
        except BaseException:
            container.close()
            raise
    except BaseException:
        for resource in owned:
            resource.close()
        raise
    return FrameReader(container, stream, timeline, _owned=tuple(owned))
