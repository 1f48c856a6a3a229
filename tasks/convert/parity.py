"""The parity proof: decode the WebM and compare it with what went in.

Checked: frame count (by decoding), every frame's timestamp (within half the WebM's 1 ms
tick), measured rate, the span from first to last frame, size, and content alignment.
Content uses the 16x16 luma signatures spilled while encoding: a frame is misaligned when
it differs from its source by more than the tolerance, or when a neighbouring output frame
matches its source clearly better than its own does (a one-frame shift anywhere shows).

`ConcurrentParity` decodes the WebM file *while it is being written* (reading the bytes on
disk behind the muxer), so the proof costs little wall time; once the file is closed, one
demux pass checks that the finished file holds exactly the packets that were decoded
(a digest of every packet's timestamp and bytes). `verify_webm` does the same on a
finished file in one go.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import av

from tasks.errors import Blocked, Reason
from tasks.convert.priority import PARITY_NICE, lower_thread_priority
from tasks.convert.signature import SignatureSpill, luma_signature, mean_abs_diff

# WebM stores milliseconds: a source PTS lands within half a tick, plus float slack.
TIMESTAMP_TOLERANCE_S = 0.0005 + 1e-9
# Below this mean difference (0-255) a frame counts as matching whatever its neighbours do.
ALIGNMENT_FLOOR = 1.5
PARITY_THREADS = 1


@dataclass(frozen=True)
class ParityReport:
    output_frames: int
    timestamp_max_error_ms: float
    source_fps_measured: str | None
    output_fps_measured: str | None
    source_duration_s: float
    output_duration_s: float
    output_width: int
    output_height: int
    content_mean_diff: float
    content_worst_diff: float
    content_worst_frame: int
    misaligned_frames: int
    packet_digest: str


def measured_rate(count: int, span: Fraction) -> Fraction | None:
    """Average rate from the first to the last timestamp (exact for constant rates)."""
    return Fraction(count - 1) / span if count > 1 and span > 0 else None


class FrameComparer:
    """Compares decoded WebM frames, one at a time, with the source records in order."""

    def __init__(self, source: Iterator, source_time_base: Fraction, expected_width: int,
                 expected_height: int, content_tolerance: float):
        self._source = source
        self._tb = source_time_base
        self._size = (expected_width, expected_height)
        self._tolerance = content_tolerance
        self.n = 0
        self._first_src = self._last_src = self._first_out = self._last_out = None
        self.last_packet_duration = 0  # in output ticks
        self._out_tb: Fraction | None = None
        self._max_ts_error = 0.0
        self._total = self._worst = 0.0
        self._worst_frame = 0
        self._misaligned = 0
        self._first_misaligned: int | None = None
        # Sliding window for the neighbour test.
        self._prev_src = self._prev_out = self._prev_prev_out = None
        self._digest = hashlib.blake2b(digest_size=16)

    def packet(self, packet) -> None:
        if packet.size:
            self._digest.update(packet_key(packet))
            self.last_packet_duration = packet.duration or self.last_packet_duration
            self._out_tb = packet.time_base

    def frame(self, frame) -> None:
        if (frame.width, frame.height) != self._size:
            raise Blocked(Reason.SIZE_MISMATCH, f"output frame {self.n} is {frame.width}x"
                          f"{frame.height}, expected {self._size[0]}x{self._size[1]}")
        record = next(self._source, None)
        if record is None:
            raise Blocked(Reason.FRAME_COUNT_MISMATCH, "the WebM has more frames than the source")
        src_pts, src_sig = record
        src_t, out_t = src_pts * self._tb, frame.pts * frame.time_base
        error = abs(float(out_t - src_t))
        if error > TIMESTAMP_TOLERANCE_S:
            raise Blocked(Reason.TIMESTAMP_MISMATCH, f"frame {self.n}: source at "
                          f"{float(src_t):.6f} s, WebM at {float(out_t):.6f} s")
        self._max_ts_error = max(self._max_ts_error, error)
        if self._first_src is None:
            self._first_src, self._first_out = src_t, out_t
        self._last_src, self._last_out = src_t, out_t
        own = luma_signature(frame)
        if self._prev_src is not None:
            self._judge(self._prev_src, self._prev_out, self._prev_prev_out, own, self.n - 1)
        self._prev_prev_out, self._prev_src, self._prev_out = self._prev_out, src_sig, own
        self.n += 1

    def _judge(self, src_sig, own, before, after, index) -> None:
        d = mean_abs_diff(src_sig, own)
        self._total += d
        if d > self._worst:
            self._worst, self._worst_frame = d, index
        neighbours = [mean_abs_diff(src_sig, o) for o in (before, after) if o is not None]
        shifted = d > ALIGNMENT_FLOOR and neighbours and min(neighbours) * 2 < d
        if d > self._tolerance or shifted:
            self._misaligned += 1
            if self._first_misaligned is None:
                self._first_misaligned = index

    def finish(self, source_count: int, source_duration_ticks: int) -> ParityReport:
        if self._prev_src is not None:
            self._judge(self._prev_src, self._prev_out, self._prev_prev_out, None, self.n - 1)
        n = self.n
        if n != source_count:
            raise Blocked(Reason.FRAME_COUNT_MISMATCH,
                          f"the WebM decodes to {n} frames, the source to {source_count}")
        if self._misaligned:
            raise Blocked(Reason.CONTENT_MISALIGNED,
                          f"{self._misaligned} frame(s) do not match their source, first at "
                          f"frame {self._first_misaligned} (worst mean difference {self._worst:.1f})")
        src_span = (self._last_src - self._first_src) if n else Fraction(0)
        out_span = (self._last_out - self._first_out) if n else Fraction(0)
        src_rate, out_rate = measured_rate(n, src_span), measured_rate(n, out_span)
        if src_rate and out_rate and abs(out_rate / src_rate - 1) > 1e-3:
            raise Blocked(Reason.RATE_MISMATCH, f"measured rate {float(out_rate):.4f} fps, "
                          f"source {float(src_rate):.4f} fps")
        # Duration: the span from first to last frame must match (every timestamp already
        # did); the last frame's own length is what the WebM states for it (its default
        # duration), reported but not judged: WebM stores no per-frame length to compare.
        if abs(float(out_span - src_span)) > 2 * TIMESTAMP_TOLERANCE_S:
            raise Blocked(Reason.DURATION_MISMATCH, f"WebM spans {float(out_span):.4f} s from "
                          f"first to last frame, source {float(src_span):.4f} s")
        source_duration = float(source_duration_ticks * self._tb)
        last = (float(self.last_packet_duration * self._out_tb)
                if self.last_packet_duration and self._out_tb else source_duration - float(src_span))
        return ParityReport(
            output_frames=n, timestamp_max_error_ms=round(self._max_ts_error * 1000, 4),
            source_fps_measured=_rate_text(src_rate), output_fps_measured=_rate_text(out_rate),
            source_duration_s=source_duration, output_duration_s=float(out_span) + last,
            output_width=self._size[0], output_height=self._size[1],
            content_mean_diff=round(self._total / n, 3) if n else 0.0,
            content_worst_diff=round(self._worst, 3), content_worst_frame=int(self._worst_frame),
            misaligned_frames=self._misaligned, packet_digest=self._digest.hexdigest(),
        )


def packet_key(packet) -> bytes:
    return int(packet.pts or 0).to_bytes(8, "little", signed=True) + bytes(packet)


def _decode_into(container, comparer: FrameComparer, threads: int = 0) -> None:
    if not container.streams.video:
        raise Blocked(Reason.FRAME_COUNT_MISMATCH, "the written WebM has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = threads
    try:
        for packet in container.demux(stream):
            comparer.packet(packet)
            for frame in packet.decode():
                comparer.frame(frame)
    except av.error.FFmpegError as e:
        raise Blocked(Reason.FRAME_COUNT_MISMATCH,
                      f"the written WebM fails to decode after {comparer.n} frames: {e}") from e


def verify_webm(path: str, spill: SignatureSpill, *, source_time_base: Fraction,
                source_duration_ticks: int, expected_width: int, expected_height: int,
                content_tolerance: float) -> ParityReport:
    """Decode a finished WebM fully and compare with the spilled source records."""
    comparer = FrameComparer(iter(spill), source_time_base, expected_width, expected_height,
                             content_tolerance)
    try:
        container = av.open(path)
    except av.error.FFmpegError as e:
        raise Blocked(Reason.FRAME_COUNT_MISMATCH, f"the written WebM cannot be opened: {e}") from e
    with container:
        _decode_into(container, comparer)
    return comparer.finish(spill.count, source_duration_ticks)


def packet_digest(path: str) -> tuple[str, int]:
    """Digest of every video packet's timestamp and bytes in a finished WebM (demux only)."""
    digest = hashlib.blake2b(digest_size=16)
    count = 0
    with av.open(path) as container:
        for packet in container.demux(container.streams.video[0]):
            if packet.size:
                digest.update(packet_key(packet))
                count += 1
    return digest.hexdigest(), count


class GrowingFile:
    """A read-only, non-seekable view of a file another thread is still appending to:
    reads wait for more bytes until the writer says it is done."""

    POLL_S = 0.003

    def __init__(self, path: str, done: threading.Event):
        self._path = path
        self._file = None  # the muxer creates the file when it writes its header
        self._done = done

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        while True:
            finished = self._done.is_set()  # read before looking, so no late byte is missed
            if self._file is None and os.path.exists(self._path):
                self._file = open(self._path, "rb")  # noqa: SIM115 (closed in close())
            data = self._file.read(n) if self._file is not None else b""
            if data or finished:
                return data
            time.sleep(self.POLL_S)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class ConcurrentParity:
    """Decodes the WebM on disk behind the muxer, on its own thread, and compares frames
    with the spilled source records as they come."""

    def __init__(self, webm_path: str, spill_path: str, *, source_time_base: Fraction,
                 expected_width: int, expected_height: int, content_tolerance: float):
        self._webm_path, self._spill_path = webm_path, spill_path
        self._writer_done = threading.Event()
        self._spill_file = open(spill_path, "rb")  # noqa: SIM115 (closed when finished)
        self.comparer = FrameComparer(self._records(), source_time_base, expected_width,
                                      expected_height, content_tolerance)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="webm-parity", daemon=True)
        self._thread.start()

    def _records(self):
        from tasks.convert.signature import RECORD, RECORD_SIZE, SIDE

        import numpy as np

        while True:
            record = self._spill_file.read(RECORD_SIZE)
            if len(record) < RECORD_SIZE:
                return  # frames the source never had
            (pts,) = RECORD.unpack_from(record)
            yield pts, np.frombuffer(record, np.uint8, offset=RECORD.size).reshape(SIDE, SIDE)

    def _run(self) -> None:
        lower_thread_priority(PARITY_NICE)
        source = GrowingFile(self._webm_path, self._writer_done)
        try:
            with av.open(source, mode="r", format="webm") as container:
                # One thread: it runs beside the encoder's, on cores that are already busy.
                _decode_into(container, self.comparer, threads=PARITY_THREADS)
        except Blocked as b:
            self.error = b
        except av.error.FFmpegError as e:
            self.error = Blocked(Reason.FRAME_COUNT_MISMATCH, f"the WebM cannot be read: {e}")
        except BaseException as e:  # a bug: handed to the caller
            self.error = e
        finally:
            source.close()

    @property
    def failed(self) -> bool:
        return self.error is not None

    def writer_done(self) -> None:
        self._writer_done.set()

    def abort(self) -> None:
        self._writer_done.set()
        self._thread.join()
        self._spill_file.close()

    def finish(self, source_count: int, source_duration_ticks: int) -> ParityReport:
        """Wait for the decode to reach the end of the closed file, then judge; the
        finished file must hold exactly the packets that were decoded."""
        self._writer_done.set()
        self._thread.join()
        self._spill_file.close()
        if self.error is not None:
            raise self.error
        report = self.comparer.finish(source_count, source_duration_ticks)
        digest, _ = packet_digest(self._webm_path)
        if digest != report.packet_digest:
            raise Blocked(Reason.FRAME_COUNT_MISMATCH,
                          "the finished WebM holds other packets than the ones decoded")
        return report


def _rate_text(rate: Fraction | None) -> str | None:
    if rate is None:
        return None
    rate = rate.limit_denominator(100_000)
    return f"{rate.numerator}/{rate.denominator}"
