"""Stream-transcoding one clip to WebM (VP9/VP8 + Opus) with PyAV, in bounded memory.

Every presented source frame becomes exactly one output frame with the same timestamp:
the encoder's time base is the source stream's, each frame keeps its decoded PTS, so
variable frame rate stays variable and edit-list-hidden frames (dropped by FFmpeg's
decoder) stay hidden. Rotation and anamorphic pixels are applied to the pixels; the
output is always 8-bit 4:2:0. While encoding, each frame's luma signature is spilled to
disk for the parity proof (`tasks/convert/parity.py`).

Three threads share the work: this one demuxes, decodes and shapes; `EncodeWorker` encodes
and muxes; `ConcurrentParity` decodes the file behind the muxer. Queues are short, so
memory does not grow with the clip.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import av

from tasks.convert.encoding import ENCODERS, EncodeWorker, FrameShaper, OpusAudio, video_encoder
from tasks.errors import Blocked, BlockedWithProbe, Reason, StorageError
from tasks.convert.geometry import Geometry, plan_geometry
from tasks.convert.parity import ConcurrentParity
from tasks.convert.priority import DECODE_NICE, run_in_thread
from tasks.media.probe import (StreamProbe, TimestampStats, choose_video_stream, clockwise_rotation,
                         open_media, probe_streams)
from tasks.recipe import ConvertConfig
from tasks.store.storage import redact
from tasks.progress import Meter
from tasks.convert.signature import SignatureSpill, luma_signature

__all__ = ["ENCODERS", "TranscodeResult", "transcode"]


@dataclass
class TranscodeResult:
    probe: StreamProbe
    geometry: Geometry | None = None
    frame_count: int = 0             # presented packets counted by demuxing
    discarded: int = 0               # packets an edit list hides
    decoded: int = 0                 # frames the decoder delivered (and we encoded)
    stats: TimestampStats = field(default_factory=TimestampStats)  # over decoded PTS
    first_pts: int | None = None
    audio_frames_out: int = 0
    encode_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    parity: ConcurrentParity | None = None  # decoding the WebM behind the muxer


def transcode(reader, size: int, config: ConvertConfig, multiple_video_streams: str,
              output_path: str, spill: SignatureSpill, content_tolerance: float = 12.0,
              meter: Meter | None = None) -> TranscodeResult:
    """Decode ``reader`` once and write the WebM at ``output_path``.

    Raises `Blocked` for sources that cannot be trusted; a decode error never yields a
    shorter output: the clip is blocked and the remaining packets are only counted.
    The caller finishes the proof with ``result.parity.finish(...)``.
    """
    container = open_media(reader, size)
    try:
        video = choose_video_stream(container, multiple_video_streams)
        probe = probe_streams(container, video)
        job = _Transcoder(container, video, probe, config, output_path, spill, content_tolerance)
        if meter is not None:  # the header's count: an estimate, for progress bars only
            meter.total = probe.header_frame_count
            job.meter = meter
        try:
            return job.run()
        except Blocked as b:
            raise BlockedWithProbe(b, probe, job.result) from b
    finally:
        container.close()


class _Transcoder:
    """One pass over the source: count, decode, shape, sign and hand frames to the encoder."""

    def __init__(self, container, video, probe: StreamProbe, config: ConvertConfig,
                 output_path: str, spill: SignatureSpill, tolerance: float):
        self.container, self.video, self.probe, self.config = container, video, probe, config
        self.output_path, self.spill, self.tolerance = output_path, spill, tolerance
        self.result = TranscodeResult(probe=probe)
        video.thread_type = "AUTO"  # frame threads: PyAV's default (slice) barely helps H.264
        has_audio = config.audio and container.streams.audio
        self.audio_in = container.streams.audio[0] if has_audio else None
        self.output = self.shaper = self.audio = self.worker = self.parity = None
        # Audio that arrives before the first video frame waits (compressed, a few packets):
        # streams must all exist before the muxer writes its header, and the video's size
        # is known only from the first decoded frame (rotation).
        self.early_audio: list = []
        self.last_pts: int | None = None
        self.failed = False  # after the first error we only count packets (and hash bytes)
        self.meter = Meter(None, "convert", "", None)

    def run(self) -> TranscodeResult:
        # The parity reader waits for this file to appear: never let it see an older one.
        if os.path.exists(self.output_path):
            os.unlink(self.output_path)
        # bitexact: no random segment/track UIDs, so a rerun writes the very same bytes.
        # Clusters of at most 1 s: the parity reader trails the muxer by one cluster, so
        # the decode left to do once the file is closed is short.
        self.output = av.open(self.output_path, mode="w", format="webm",
                              options={"fflags": "+bitexact", "cluster_time_limit": "1000"})
        started = time.perf_counter()
        # The encoder thread is created here, at the caller's priority; demuxing and
        # decoding run on a thread of lower priority (see tasks/convert/priority.py).
        self.worker = EncodeWorker(self.output)
        try:
            run_in_thread(self._pump, name="source-decoder", nice=DECODE_NICE)
            if self.audio is not None and not self.failed:
                self.worker.packets(self.audio.flush())
                self.result.audio_frames_out = self.audio.frames_out
            self.worker.finish(flush=not self.failed)
            self.worker = None
        except BaseException as e:
            self._close(error=True)
            if isinstance(e, OSError):  # a full disk, a lost mount: not the media's fault
                raise StorageError(f"writing {redact(self.output_path)} failed: {e}") from e
            if isinstance(e, av.error.FFmpegError):
                raise Blocked(Reason.ENCODE_ERROR, f"encoding failed: {e}") from e
            raise
        finally:
            self.result.encode_seconds = time.perf_counter() - started
        self._close(error=False)
        self.result.stats.finish()
        try:
            _judge(self.result)
        except Blocked:
            if self.parity is not None:
                self.parity.abort()
            raise
        return self.result

    def _pump(self) -> None:
        streams = [self.video] + ([self.audio_in] if self.audio_in is not None else [])
        try:
            for packet in self.container.demux(*streams):
                if packet.stream is self.video:
                    self._video_packet(packet)
                elif not self.failed:
                    self._audio_packet(packet)
        except av.error.FFmpegError as e:
            # The demuxer itself gave up: the file ends early or is damaged.
            self._fail(f"demuxing stopped after {self.result.frame_count} frames: {e}")

    def _video_packet(self, packet) -> None:
        result = self.result
        if packet.size or packet.pts is not None:  # not the end-of-stream flush packet
            if packet.is_discard:
                result.discarded += 1
            else:
                result.frame_count += 1
        if self.failed:
            return
        try:
            frames = packet.decode()
        except av.error.FFmpegError as e:
            self._fail(f"video packet at pts {packet.pts}: {e}")
            return
        for frame in frames:
            if frame.is_corrupt:
                self._fail(f"video frame at pts {frame.pts} decoded with errors")
                return
            self._video_frame(frame)

    def _video_frame(self, frame) -> None:
        result = self.result
        if frame.pts is None or (self.last_pts is not None and frame.pts <= self.last_pts):
            raise Blocked(Reason.BAD_TIMESTAMPS,
                          f"frame {result.decoded} has pts {frame.pts} after {self.last_pts}")
        if self.shaper is None:
            self._start_output(frame)
        shaped = self.shaper.shape(frame)
        self.spill.append(frame.pts, luma_signature(shaped))
        result.stats.add(frame.pts, frame.duration or 0)
        self.last_pts = frame.pts
        result.decoded += 1
        self.meter.add()
        self.worker.frame(shaped)
        if self.parity.failed:  # no use encoding further: the clip is blocked
            raise self.parity.error

    def _start_output(self, first_frame) -> None:
        """Streams, encoder thread and parity reader, once the first frame tells the size."""
        probe, result = self.probe, self.result
        result.geometry = plan_geometry(probe.stored_width, probe.stored_height, probe.sar,
                                        clockwise_rotation(first_frame), self.config.max_height)
        # The rate hint becomes WebM's DefaultDuration (the length players give a frame):
        # the average for a steady source, the base rate (finest spacing) for a variable
        # one, whose average no frame has.
        rate = probe.avg_rate if probe.avg_rate == probe.real_rate else probe.real_rate
        encoder = video_encoder(self.output, self.config, result.geometry, probe.time_base, rate)
        self.shaper = FrameShaper(result.geometry, probe.time_base)
        result.first_pts = first_frame.pts
        if self.audio_in is not None:
            self.audio = OpusAudio(self.output, self.audio_in, self.config.audio_bitrate_kbps)
        self.worker.use(encoder)
        self.parity = result.parity = ConcurrentParity(
            self.output_path, self.spill.path, source_time_base=probe.time_base,
            expected_width=result.geometry.width, expected_height=result.geometry.height,
            content_tolerance=self.tolerance)
        for waiting in self.early_audio:
            self._audio_packet(waiting)
        self.early_audio.clear()

    def _audio_packet(self, packet) -> None:
        if self.audio is None:
            if self.shaper is None:  # no video frame yet: the streams do not exist
                self.early_audio.append(packet)
            return
        try:
            frames = packet.decode()
        except av.error.FFmpegError as e:
            self._fail(f"audio packet at pts {packet.pts}: {e}")
            return
        for frame in frames:
            self.worker.packets(self.audio.encode(frame))

    def _fail(self, message: str) -> None:
        self.result.errors.append(message)
        self.failed = True

    def _close(self, error: bool) -> None:
        """Stop the threads and close the files, whether the pass ended well or not."""
        if self.worker is not None:  # still running only after an exception
            try:
                self.worker.finish(flush=False)
            except BaseException:
                pass  # the exception already on its way says what went wrong
        # Every file is closed and the parity reader stopped whatever fails on the way: an
        # open handle on a deleted temp file would keep a full disk full.
        problems: list[BaseException] = []
        try:
            self.output.close()
        except OSError as e:  # the muxer could not write its trailer (a full disk)
            problems.append(e)
        except av.error.FFmpegError:
            pass  # nothing was written (no frame decoded): the clip is blocked anyway
        try:
            self.spill.close()
        except OSError as e:
            problems.append(e)
        if self.parity is not None:
            self.parity.writer_done()
            if error or problems:  # nobody will wait for the proof: stop its reader now
                self.parity.abort()
        if problems and not error:
            raise StorageError(f"writing {redact(self.output_path)} failed: {problems[0]}") \
                from problems[0]


def _judge(result: TranscodeResult) -> None:
    """Turn what happened while decoding into a verdict (raises `Blocked`)."""
    probe = result.probe
    demuxed = result.frame_count + result.discarded
    header = probe.header_frame_count
    if header and demuxed < header:
        raise Blocked(Reason.TRUNCATED,
                      f"the header lists {header} video frames but only {demuxed} are in the file"
                      + (f"; {result.errors[0]}" if result.errors else ""))
    if result.errors:
        raise Blocked(Reason.DECODE_ERROR, f"{len(result.errors)} decode error(s), first: "
                      f"{result.errors[0]}; not converted to fewer frames")
    if result.frame_count == 0:
        raise Blocked(Reason.NO_FRAMES, "the video stream has no frames")
    if result.decoded != result.frame_count:
        raise Blocked(Reason.DECODE_ERROR,
                      f"decoded {result.decoded} frames but the stream has {result.frame_count}")
