"""Encoding pieces of the converter: frame shaping, Opus audio, the encoder thread.

Kept apart from `tasks/convert/transcode.py`, which decides what to do with each packet; these only
know how to turn frames into WebM packets.
"""

from __future__ import annotations

import queue
import threading
from fractions import Fraction

import av

from tasks.errors import Blocked, Reason
from tasks.convert.geometry import Geometry
from tasks.recipe import ConvertConfig

ENCODERS = {"vp9": "libvpx-vp9", "vp8": "libvpx"}
OUTPUT_PIX_FMT = "yuv420p"


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
    is short, so memory stays bounded; the output container is written by this thread only.
    Create it from a full-priority thread: libvpx's threads inherit this one's priority.
    """

    DEPTH = 6

    def __init__(self, output):
        self._output = output
        self._encoder = None  # set by `use` once the first frame tells the size
        self._queue: queue.Queue = queue.Queue(maxsize=self.DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="webm-encoder", daemon=True)
        self._thread.start()

    def use(self, encoder) -> None:
        self._put(("encoder", encoder))

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
                elif kind == "encoder":
                    self._encoder = item
                elif kind == "flush":
                    if self._encoder is not None:
                        self._output.mux(self._encoder.encode(None))
                    return
                else:
                    return
        except av.error.FFmpegError as e:  # handed to the producer, which raises it
            # An OS error (no space left, I/O) is the store's fault, retried; anything else
            # the encoder refused is a verdict on the clip.
            self._error = e if isinstance(e, OSError) else Blocked(
                Reason.ENCODE_ERROR, f"encoding failed: {e}")
        except BaseException as e:
            self._error = e


def video_encoder(output, config: ConvertConfig, geometry: Geometry, time_base: Fraction,
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
