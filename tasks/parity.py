"""The parity proof: decode the written WebM and compare it with what went in.

Checked: frame count (by decoding), every frame's timestamp (within half the WebM's 1 ms
tick), measured rate, duration, size, and content alignment. Content uses the 16x16 luma
signatures spilled while encoding: a frame is misaligned when it differs from its source
by more than the tolerance, or when a neighbouring output frame matches its source
clearly better than its own does (a one-frame shift anywhere shows up there).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av

from tasks.errors import Blocked, Reason
from tasks.signature import SignatureSpill, luma_signature, mean_abs_diff

# WebM stores milliseconds: a source PTS lands within half a tick, plus float slack.
TIMESTAMP_TOLERANCE_S = 0.0005 + 1e-9
# Below this mean difference (0-255) a frame counts as matching whatever its neighbours do.
ALIGNMENT_FLOOR = 1.5


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


def measured_rate(count: int, span: Fraction) -> Fraction | None:
    """Average rate from the first to the last timestamp (exact for constant rates)."""
    return Fraction(count - 1) / span if count > 1 and span > 0 else None


def verify_webm(path: str, spill: SignatureSpill, *, source_time_base: Fraction,
                source_duration_ticks: int, expected_width: int, expected_height: int,
                content_tolerance: float) -> ParityReport:
    """Decode ``path`` fully and compare with the spilled source records; raise `Blocked`."""
    source = iter(spill)
    worst = worst_frame = 0.0
    total_diff = 0.0
    misaligned = 0
    first_misaligned = None
    max_ts_error = 0.0
    n = 0
    first_src = last_src = first_out = last_out = None
    last_out_duration = 0
    # Sliding window for the neighbour test: (source signature, output signature) of the
    # previous frame, and the output signature before that.
    prev_src = prev_out = prev_prev_out = None

    def judge(src_sig, own, before, after, index) -> None:
        nonlocal worst, worst_frame, total_diff, misaligned, first_misaligned
        d = mean_abs_diff(src_sig, own)
        total_diff += d
        if d > worst:
            worst, worst_frame = d, index
        neighbours = [mean_abs_diff(src_sig, o) for o in (before, after) if o is not None]
        shifted = d > ALIGNMENT_FLOOR and neighbours and min(neighbours) * 2 < d
        if d > content_tolerance or shifted:
            misaligned += 1
            if first_misaligned is None:
                first_misaligned = index

    try:
        container = av.open(path)
    except av.error.FFmpegError as e:
        raise Blocked(Reason.FRAME_COUNT_MISMATCH, f"the written WebM cannot be opened: {e}") from e
    with container:
        if not container.streams.video:
            raise Blocked(Reason.FRAME_COUNT_MISMATCH, "the written WebM has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        out_tb = stream.time_base
        try:
            for packet in container.demux(stream):
                if packet.size:
                    last_out_duration = packet.duration or last_out_duration
                for frame in packet.decode():
                    if frame.width != expected_width or frame.height != expected_height:
                        raise Blocked(Reason.SIZE_MISMATCH,
                                      f"output frame {n} is {frame.width}x{frame.height}, "
                                      f"expected {expected_width}x{expected_height}")
                    record = next(source, None)
                    if record is None:
                        raise Blocked(Reason.FRAME_COUNT_MISMATCH,
                                      f"the WebM has more frames than the source's {spill.count}")
                    src_pts, src_sig = record
                    src_t = src_pts * source_time_base
                    out_t = frame.pts * out_tb
                    error = abs(float(out_t - src_t))
                    if error > TIMESTAMP_TOLERANCE_S:
                        raise Blocked(Reason.TIMESTAMP_MISMATCH,
                                      f"frame {n}: source at {float(src_t):.6f} s, "
                                      f"WebM at {float(out_t):.6f} s")
                    max_ts_error = max(max_ts_error, error)
                    first_src = src_t if first_src is None else first_src
                    first_out = out_t if first_out is None else first_out
                    last_src, last_out = src_t, out_t
                    own = luma_signature(frame)
                    if prev_src is not None:
                        judge(prev_src, prev_out, prev_prev_out, own, n - 1)
                    prev_prev_out, prev_src, prev_out = prev_out, src_sig, own
                    n += 1
        except av.error.FFmpegError as e:
            raise Blocked(Reason.FRAME_COUNT_MISMATCH,
                          f"the written WebM fails to decode after {n} frames: {e}") from e
    if prev_src is not None:
        judge(prev_src, prev_out, prev_prev_out, None, n - 1)
    if n != spill.count:
        raise Blocked(Reason.FRAME_COUNT_MISMATCH,
                      f"the WebM decodes to {n} frames, the source to {spill.count}")
    if misaligned:
        raise Blocked(Reason.CONTENT_MISALIGNED,
                      f"{misaligned} frame(s) do not match their source, first at frame "
                      f"{first_misaligned} (worst mean difference {worst:.1f})")
    src_rate = measured_rate(n, (last_src - first_src) if n else Fraction(0))
    out_rate = measured_rate(n, (last_out - first_out) if n else Fraction(0))
    if src_rate and out_rate and abs(out_rate / src_rate - 1) > 1e-3:
        raise Blocked(Reason.RATE_MISMATCH, f"measured rate {float(out_rate):.4f} fps, "
                      f"source {float(src_rate):.4f} fps")
    # Duration: the span from first to last frame must match (every timestamp already
    # did); the last frame's own length is what the WebM states for it (its default
    # duration), reported but not judged: WebM stores no per-frame length to compare.
    source_duration = float(source_duration_ticks * source_time_base)
    src_span = float(last_src - first_src) if n else 0.0
    out_span = float(last_out - first_out) if n else 0.0
    if abs(out_span - src_span) > 2 * TIMESTAMP_TOLERANCE_S:
        raise Blocked(Reason.DURATION_MISMATCH, f"WebM spans {out_span:.4f} s from first to "
                      f"last frame, source {src_span:.4f} s")
    output_duration = out_span + (float(last_out_duration * out_tb) if last_out_duration
                                  else source_duration - src_span)
    return ParityReport(
        output_frames=n, timestamp_max_error_ms=round(max_ts_error * 1000, 4),
        source_fps_measured=_rate_text(src_rate), output_fps_measured=_rate_text(out_rate),
        source_duration_s=source_duration, output_duration_s=output_duration,
        output_width=expected_width, output_height=expected_height,
        content_mean_diff=round(total_diff / n, 3) if n else 0.0,
        content_worst_diff=round(worst, 3), content_worst_frame=int(worst_frame),
        misaligned_frames=misaligned,
    )


def _rate_text(rate: Fraction | None) -> str | None:
    if rate is None:
        return None
    rate = rate.limit_denominator(100_000)
    return f"{rate.numerator}/{rate.denominator}"
