"""Stream-transcoding one clip to WebM (VP9/VP8 + Opus) with PyAV, in bounded memory.

Every presented source frame becomes exactly one output frame with the same timestamp:
the encoder's time base is the source stream's, each frame keeps its decoded PTS, so
variable frame rate stays variable and edit-list-hidden frames (dropped by FFmpeg's
decoder) stay hidden. Rotation and anamorphic pixels are applied to the pixels; the
output is always 8-bit 4:2:0. While encoding, each frame's luma signature is spilled to
disk for the parity proof (`tasks/parity.py`).

Three threads share the work: this one demuxes, decodes and shapes; `EncodeWorker` encodes
and muxes; `ConcurrentParity` decodes the file behind the muxer. Queues are short, so
memory does not grow with the clip.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction

import av

from tasks.errors import Blocked, Reason
from tasks.geometry import Geometry, plan_geometry
from tasks.probe import (StreamProbe, TimestampStats, choose_video_stream, clockwise_rotation,
                         open_media, probe_streams)
from tasks.recipe import ConvertConfig
from tasks.parity import ConcurrentParity
from tasks.signature import SignatureSpill, luma_signature

ENCODERS = {"vp9": "libvpx-vp9", "vp8": "libvpx"}
OUTPUT_PIX_FMT = "yuv420p"


@dataclass
class TranscodeResult:
    probe: StreamProbe
    geometry: Geometry
    frame_count: int                 # presented packets counted by demuxing
    discarded: int                   # packets an edit list hides
    decoded: int                     # frames the decoder delivered (and we encoded)
    stats: TimestampStats            # over the decoded frames' PTS
    first_pts: int | None
    audio_frames_out: int
    encode_seconds: float
    errors: list[str] = field(default_factory=list)
    parity: ConcurrentParity | None = None  # decoding the WebM behind the muxer


class FrameShaper:
    """Rotate, square the pixels, cap the size and convert to 8-bit 4:2:0, frame by frame.

    Without rotation `VideoFrame.reformat` (swscale) does it all; with rotation a small
    libavfilter graph (transpose/flip, scale, format) does, which keeps PTS untouched.
    """

    def __init__(self, geometry: Geometry, time_base: Fraction):
        self.geometry = geometry
        self.time_base = time_base
        self._graph = None
        self._graph_key = None

    def shape(self, frame: av.VideoFrame) -> av.VideoFrame:
        g = self.geometry
        if g.rotation == 0:
            if frame.width == g.width and frame.height == g.height and frame.format.name == OUTPUT_PIX_FMT:
                out = frame
            else:
                out = frame.reformat(width=g.width, height=g.height, format=OUTPUT_PIX_FMT,
                                     interpolation="BICUBIC")
        else:
            key = (frame.width, frame.height, frame.format.name)
            if self._graph is None or self._graph_key != key:  # a graph serves one input shape
                self._graph, self._graph_key = self._build_graph(frame), key
            self._graph.push(frame)
            out = self._graph.pull()
        out.pts = frame.pts
        # The source's picture types would force VP9 keyframes where the source had them.
        out.pict_type = av.video.frame.PictureType.NONE
        out.duration = frame.duration  # lets the muxer store the last frame's length
        out.time_base = self.time_base
        return out

    def _build_graph(self, frame):
        graph = av.filter.Graph()
        nodes = [graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                                  time_base=self.time_base)]
        turn = {90: [("transpose", "clock")], 270: [("transpose", "cclock")],
                180: [("hflip", None), ("vflip", None)]}[self.geometry.rotation]
        for name, args in turn:
            nodes.append(graph.add(name, args))
        nodes.append(graph.add("scale", f"{self.geometry.width}:{self.geometry.height}:flags=bicubic"))
        nodes.append(graph.add("format", OUTPUT_PIX_FMT))
        nodes.append(graph.add("buffersink"))
        graph.link_nodes(*nodes).configure()
        return graph


class OpusAudio:
    """Source audio -> 48 kHz Opus in fixed 20 ms frames (mono or stereo; more is downmixed)."""

    def __init__(self, output, source_stream, bitrate_kbps: int):
        channels = source_stream.codec_context.channels or 2
        layout = "mono" if channels == 1 else "stereo"
        self.stream = output.add_stream("libopus", rate=48000)
        self.stream.layout = layout
        self.stream.format = "flt"
        self.stream.bit_rate = bitrate_kbps * 1000
        self._resampler = av.AudioResampler(format="flt", layout=layout, rate=48000,
                                            frame_size=960)
        self.frames_out = 0

    def encode(self, frame) -> list:
        packets = []
        for chunk in self._resampler.resample(frame):
            chunk.pts = None  # let the encoder count samples from the first one
            packets.extend(self.stream.encode(chunk))
            self.frames_out += 1
        return packets

    def flush(self) -> list:
        return self.encode(None) + list(self.stream.encode(None))


class EncodeWorker:
    """Encodes video frames and muxes every packet on its own thread.

    Decoding the next source frames then overlaps with encoding (PyAV releases the GIL
    inside codec calls), which is where a one-loop converter leaves a core idle. The queue
    is short, so memory stays bounded; the output container is touched by this thread only.
    """

    DEPTH = 6

    def __init__(self, output, encoder):
        self._output, self._encoder = output, encoder
        self._queue: queue.Queue = queue.Queue(maxsize=self.DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="webm-encoder", daemon=True)
        self._thread.start()

    def frame(self, frame) -> None:
        self._put(("frame", frame))

    def packets(self, packets: list) -> None:
        if packets:
            self._put(("packets", packets))

    def finish(self, flush: bool) -> None:
        """Flush the encoder (or just stop, after a failure) and wait for the thread."""
        if self._thread.is_alive():
            self._put(("flush" if flush else "stop", None))
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _put(self, item) -> None:
        while True:
            if self._error is not None:
                raise self._error
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            while True:
                kind, item = self._queue.get()
                if kind == "frame":
                    self._output.mux(self._encoder.encode(item))
                elif kind == "packets":
                    self._output.mux(item)
                elif kind == "flush":
                    self._output.mux(self._encoder.encode(None))
                    return
                else:
                    return
        except av.error.FFmpegError as e:  # handed to the producer, which raises it
            self._error = Blocked(Reason.ENCODE_ERROR, f"encoding failed: {e}")
        except BaseException as e:
            self._error = e


def _video_encoder(output, config: ConvertConfig, geometry: Geometry, time_base: Fraction,
                   rate: Fraction | None):
    stream = output.add_stream(ENCODERS[config.codec], rate=rate)
    cc = stream.codec_context
    cc.width, cc.height = geometry.width, geometry.height
    cc.pix_fmt = OUTPUT_PIX_FMT
    cc.time_base = time_base  # source ticks: every PTS survives exactly
    cc.sample_aspect_ratio = Fraction(1, 1)
    cc.thread_count = config.threads
    # VP8 with a positive cpu-used adapts its speed to measured encode time, so its output
    # changes run to run; a negative value is the same speed, fixed (and deterministic).
    speed = config.speed if config.codec == "vp9" else -config.speed
    options = {"deadline": config.deadline, "cpu-used": str(speed),
               "crf": str(config.crf), "auto-alt-ref": "0", "lag-in-frames": "0"}
    if config.codec == "vp9":
        options["row-mt"] = "1"
    if config.bitrate_kbps:
        cc.bit_rate = config.bitrate_kbps * 1000
    elif config.codec == "vp9":
        cc.bit_rate = 0  # pure constant quality
    else:
        cc.bit_rate = 20_000_000  # VP8's CRF needs a cap; a high one leaves quality to CRF
    cc.options = options
    return stream


def transcode(reader, size: int, config: ConvertConfig, multiple_video_streams: str,
              output_path: str, spill: SignatureSpill, content_tolerance: float = 12.0
              ) -> TranscodeResult:
    """Decode ``reader`` once and write the WebM at ``output_path``.

    Raises `Blocked` for sources that cannot be trusted; a decode error never yields a
    shorter output: the clip is blocked and the remaining packets are only counted.
    """
    container = open_media(reader, size)
    try:
        return _transcode_open(container, config, multiple_video_streams, output_path, spill,
                               content_tolerance)
    finally:
        container.close()


class BlockedWithProbe(Blocked):
    """`Blocked` after the header was read: carries the probe so the row still shows it."""

    def __init__(self, blocked: Blocked, probe: StreamProbe, result: "TranscodeResult | None"):
        super().__init__(blocked.reason, blocked.detail)
        self.probe = probe
        self.result = result


def _transcode_open(container, config, policy, output_path, spill, tolerance) -> TranscodeResult:
    video = choose_video_stream(container, policy)
    probe = probe_streams(container, video)
    try:
        return _transcode_stream(container, video, probe, config, output_path, spill, tolerance)
    except Blocked as b:
        raise BlockedWithProbe(b, probe, getattr(b, "result", None)) from b


def _transcode_stream(container, video, probe, config, output_path, spill, tolerance
                      ) -> TranscodeResult:
    time_base = probe.time_base
    video.thread_type = "AUTO"
    audio_in = container.streams.audio[0] if (config.audio and container.streams.audio) else None

    # The parity reader waits for this file to appear: never let it see an older one.
    if os.path.exists(output_path):
        os.unlink(output_path)
    # bitexact: no random segment/track UIDs, so a rerun writes the very same bytes.
    # Clusters of at most 1 s: the parity reader trails the muxer by one cluster, so the
    # decode left to do after the file is closed is short.
    output = av.open(output_path, mode="w", format="webm",
                     options={"fflags": "+bitexact", "cluster_time_limit": "1000"})
    started = time.perf_counter()
    stats = TimestampStats()
    result = TranscodeResult(probe=probe, geometry=None, frame_count=0, discarded=0,  # type: ignore[arg-type]
                             decoded=0, stats=stats, first_pts=None, audio_frames_out=0,
                             encode_seconds=0.0)
    encoder = shaper = audio = worker = parity = None
    # Audio that arrives before the first video frame waits (compressed, a few packets):
    # streams must all exist before the muxer writes its header, and video's size is only
    # known from the first decoded frame (rotation).
    early_audio: list = []
    last_pts = None
    failed = False  # after the first error we only count packets (and hash bytes)

    def encode_audio(packet) -> None:
        nonlocal failed
        try:
            frames = packet.decode()
        except av.error.FFmpegError as e:
            failed = _fail(result, f"audio packet at pts {packet.pts}: {e}")
            return
        for frame in frames:
            worker.packets(audio.encode(frame))

    try:
        streams = [video] + ([audio_in] if audio_in is not None else [])
        try:
            for packet in container.demux(*streams):
                if packet.stream is video:
                    if packet.size or packet.pts is not None:
                        if packet.is_discard:
                            result.discarded += 1
                        else:
                            result.frame_count += 1
                    if failed:
                        continue
                    try:
                        frames = packet.decode()
                    except av.error.FFmpegError as e:
                        failed = _fail(result, f"video packet at pts {packet.pts}: {e}")
                        continue
                    for frame in frames:
                        if frame.is_corrupt:
                            failed = _fail(result, f"video frame at pts {frame.pts} decoded with errors")
                            break
                        if frame.pts is None or (last_pts is not None and frame.pts <= last_pts):
                            raise Blocked(Reason.BAD_TIMESTAMPS,
                                          f"frame {result.decoded} has pts {frame.pts} after {last_pts}")
                        if encoder is None:
                            result.geometry = plan_geometry(
                                probe.stored_width, probe.stored_height, probe.sar,
                                clockwise_rotation(frame), config.max_height)
                            # The rate hint becomes WebM's DefaultDuration (the length players
                            # give a frame): the average for a steady source, the base rate
                            # (finest spacing) for a variable one, whose average no frame has.
                            encoder = _video_encoder(output, config, result.geometry, time_base,
                                                     probe.avg_rate if probe.avg_rate == probe.real_rate
                                                     else probe.real_rate)
                            shaper = FrameShaper(result.geometry, time_base)
                            result.first_pts = frame.pts
                            if audio_in is not None:
                                audio = OpusAudio(output, audio_in, config.audio_bitrate_kbps)
                            worker = EncodeWorker(output, encoder)
                            parity = result.parity = ConcurrentParity(
                                output_path, spill.path, source_time_base=time_base,
                                expected_width=result.geometry.width,
                                expected_height=result.geometry.height,
                                content_tolerance=tolerance)
                            if audio is not None:
                                for waiting in early_audio:
                                    encode_audio(waiting)
                                early_audio.clear()
                        shaped = shaper.shape(frame)
                        spill.append(frame.pts, luma_signature(shaped))
                        stats.add(frame.pts, frame.duration or 0)
                        last_pts = frame.pts
                        result.decoded += 1
                        worker.frame(shaped)
                        if parity.failed:  # no use encoding further: the clip is blocked
                            raise parity.error
                elif not failed:
                    if audio is None:
                        early_audio.append(packet)
                    else:
                        encode_audio(packet)
        except av.error.FFmpegError as e:
            # The demuxer itself gave up: the file ends early or is damaged.
            failed = _fail(result, f"demuxing stopped after {result.frame_count} frames: {e}")
        if worker is not None:
            if audio is not None and not failed:
                worker.packets(audio.flush())
                result.audio_frames_out = audio.frames_out
            worker.finish(flush=not failed)
            worker = None
    except av.error.FFmpegError as e:
        raise Blocked(Reason.ENCODE_ERROR, f"encoding failed: {e}") from e
    finally:
        if worker is not None:  # an exception above: stop the thread before closing
            try:
                worker.finish(flush=False)
            except BaseException:
                pass
        try:
            output.close()
        except av.error.FFmpegError:
            pass  # nothing was written (no frame decoded): the clip is blocked anyway
        spill.close()
        if parity is not None:
            parity.writer_done()
            if sys.exc_info()[0] is not None:  # leaving with an error: stop the reader too
                parity.abort()
        result.encode_seconds = time.perf_counter() - started
    stats.finish()
    try:
        _judge(result)
    except Blocked as b:
        if parity is not None:
            parity.abort()
        b.result = result  # type: ignore[attr-defined]
        raise
    return result


def _fail(result: TranscodeResult, message: str) -> bool:
    result.errors.append(message)
    return True


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
