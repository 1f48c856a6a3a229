"""The detect stage's frames: the clip's WebM decoded on a thread into batches of sampled frames
at the model's size (a bounded queue keeps memory flat), with shot cuts and camera motion
analysed on the way, and the frames a scene-learning backend is primed with.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import numpy as np

from tasks.errors import MediaReadError, PipelineError

from tasks.media.motion import CameraMotion
from tasks.recipe import Recipe
from tasks.detect.shots import ANALYSIS_SIDE, CutFinder
from tasks.store.storage import Location
from tasks.convert.geometry import fit_within
from tasks.media.webm import open_webm_container


# A scene-learning backend is primed with this many frames spread over the clip's first
# seconds.
_PRIME_FRAMES, _PRIME_SPAN_S = 40, 8.0
_QUEUE_BATCHES = 2  # decoded batches waiting for the model: bounds memory


@dataclass(frozen=True)
class _Sampled:
    index: int
    seconds: float
    image: np.ndarray


def _priming_frames(out: Location, path: str, recipe: Recipe) -> list[np.ndarray]:
    """Frames spread evenly over the clip's first seconds (up to its first shot cut), as
    the model will see them."""
    picked: list[np.ndarray] = []
    cuts = CutFinder(recipe.shots) if recipe.shots.detector else None
    index = 0
    with open_webm_container(out, path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or Fraction(30)
        span = int(float(rate) * _PRIME_SPAN_S)
        step = max(1, span // _PRIME_FRAMES)
        sampled: list[tuple[int, np.ndarray]] = []
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index >= span:
                    break
                size = (frame.width, frame.height)
                if cuts is not None:
                    small = frame.to_ndarray(format="bgr24", width=fit_within(size, ANALYSIS_SIDE)[0],
                                             height=fit_within(size, ANALYSIS_SIDE)[1])
                    cuts.feed(index, 0.0, small)
                if index % step == 0:
                    w, h = fit_within(size, recipe.detect.max_side)
                    sampled.append((index, frame.to_ndarray(format="rgb24", width=w, height=h)))
        except Exception as e:  # FFmpeg error reading a file the parity proof accepted
            raise MediaReadError(f"{out.url(path)}: decoding failed at frame {index}: {e}") from e
    first_cut = cuts.shots()[0]["last"] + 1 if cuts is not None and cuts.shots() else None
    picked = [image for i, image in sampled if first_cut is None or i < first_cut]
    return picked


@dataclass
class _Analysis:
    """What the decoder measures on every frame besides the model's input: shot cuts and,
    when asked, the camera's motion (small copies of each frame, on the decoder thread)."""

    cuts: CutFinder | None
    motion: CameraMotion | None
    affines: list = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.affines = []

    @property
    def wanted(self) -> bool:
        return self.cuts is not None or self.motion is not None

    def feed(self, index: int, seconds: float, frame, webm_size: tuple[int, int]) -> None:
        w, h = fit_within(webm_size, ANALYSIS_SIDE)
        rgb = frame.to_ndarray(format="rgb24", width=w, height=h)
        if self.cuts is not None:
            self.cuts.feed(index, seconds, rgb[..., ::-1])  # PySceneDetect takes BGR
        if self.motion is not None:
            self.affines.append(self.motion.feed(rgb, webm_size))


@dataclass
class _Batch:
    frames: list[_Sampled]
    decoded: int                   # frames decoded so far (all, not only sampled)
    scale: tuple[float, float]     # model pixels -> WebM pixels
    size: tuple[int, int]          # WebM frame (width, height)
    analysis: _Analysis | None = None  # on the last batch


def _batches(out: Location, path: str, recipe: Recipe) -> Iterator[_Batch]:
    """Batches of sampled frames, decoded on a thread while the model works on the last."""
    handoff: queue.Queue = queue.Queue(maxsize=_QUEUE_BATCHES)
    stop = threading.Event()
    failure: list[BaseException] = []

    def put(item) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def decode() -> None:
        try:
            for batch in _decode_batches(out, path, recipe):
                if not put(batch):
                    return
        except BaseException as e:  # noqa: BLE001  (handed to the consumer, re-raised there)
            failure.append(e)
        put(None)

    thread = threading.Thread(target=decode, name="detect-decode", daemon=True)
    thread.start()
    try:
        while True:
            batch = handoff.get()
            if batch is None:
                break
            yield batch
    finally:
        stop.set()
        thread.join()
    if failure:
        raise failure[0]


def _decode_batches(out: Location, path: str, recipe: Recipe) -> Iterator[_Batch]:
    cfg = recipe.detect
    analysis = _Analysis(CutFinder(recipe.shots) if recipe.shots.detector else None,
                         CameraMotion() if recipe.associate.camera_motion else None)
    with open_webm_container(out, path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = Fraction(stream.time_base)
        pending: list[_Sampled] = []
        decoded, last_pts = 0, None
        scale, webm_size, model_size = (1.0, 1.0), None, None
        try:
            for frame in container.decode(stream):
                if frame.pts is None or (last_pts is not None and frame.pts <= last_pts):
                    raise MediaReadError(f"{out.url(path)}: frame {decoded} has pts "
                                         f"{frame.pts} after {last_pts}; not in timestamp order")
                if webm_size is None:
                    webm_size = (frame.width, frame.height)
                    model_size = fit_within(webm_size, cfg.max_side)
                    scale = (webm_size[0] / model_size[0], webm_size[1] / model_size[1])
                if analysis.wanted:
                    analysis.feed(decoded, float(frame.pts * tb), frame, webm_size)
                if decoded % cfg.every_nth == 0:
                    if model_size == webm_size:
                        image = frame.to_ndarray(format="rgb24")
                    else:
                        image = frame.to_ndarray(format="rgb24", width=model_size[0],
                                                 height=model_size[1])
                    pending.append(_Sampled(decoded, float(frame.pts * tb), image))
                decoded += 1
                last_pts = frame.pts
                if len(pending) == cfg.batch_size:
                    yield _Batch(pending, decoded, scale, webm_size)
                    pending = []
        except PipelineError:
            raise
        except Exception as e:  # FFmpeg error reading a file the parity proof accepted
            raise MediaReadError(f"{out.url(path)}: decoding failed at frame {decoded}: {e}") from e
        yield _Batch(pending, decoded, scale, webm_size or (0, 0), analysis)
