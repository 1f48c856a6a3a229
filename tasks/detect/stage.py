"""Pre-annotation of one converted clip: its WebM is decoded once and frames stream in
batches from a decoder thread to the detector, so memory is bounded by the batch size
whatever the clip's length.

Frame numbers come from the decoded timestamps: a frame's index is the rank of its pts
(the WebM decodes in timestamp order, which is checked on every frame), and ``time_s`` is
pts x time base. With ``every_nth`` every frame is still decoded (VP9 frames depend on
each other) but only every Nth goes to the model; with ``max_side`` the decoder's scaler
shrinks the frame and boxes are mapped back to WebM pixels.
"""

from __future__ import annotations

import inspect
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from models import registry
from models.boxes import Boxes
from models.contracts import Detector
from tasks import progress
from tasks.store import merged
from tasks.detect.driver import detect_checked
from tasks.errors import ConfigError, MediaReadError, PipelineError
from tasks.store.items import clip_id_for
from tasks.store.ledger import Ledger, Unit

from tasks.media.motion import CameraMotion
from tasks.recipe import DETECTOR_VERSION, Recipe
from tasks.detect.shots import ANALYSIS_SIDE, CutFinder, write_shots
from tasks.store.storage import Location, open_location, write_bytes_atomic
from tasks.convert.geometry import fit_within
from tasks.store.tables import (DETECTION_SCHEMA, concat, read_state_json, read_state_table, read_table,
                          readable_parquet, with_global_frame, write_table)
from tasks.media.webm import webm_path, open_webm_container
from tasks.store.items import is_converted

log = logging.getLogger(__name__)
STATE_DIR = "_state/detect"
DETECTIONS_FILE = "detections.parquet"
_QUEUE_BATCHES = 2  # decoded batches waiting for the model: bounds memory


def make_detector(recipe: Recipe) -> Detector:
    """The recipe's detector; a bad name or option is a `ConfigError` naming the key."""
    name = recipe.detect.backend
    options = dict(recipe.detect.options)
    try:
        create = registry.factory("detector", name)
    except (ValueError, ImportError) as e:
        raise ConfigError(f"{recipe.source}: detect.backend {name!r}: {e}") from e
    try:
        registry.check_options(create, options)
        accepts = inspect.signature(create).parameters
        if "device" in accepts and "device" not in options:
            options["device"] = recipe.detect.device
        return create(**options)
    except (ValueError, TypeError, ImportError, OSError) as e:
        raise ConfigError(f"{recipe.source}: detect.options of backend {name!r}: {e}") from e


def state_paths(out: Location, record: dict[str, Any]) -> tuple[str, str]:
    clip_id = clip_id_for(record["source_uri"])
    return out.path(STATE_DIR, f"{clip_id}.json"), out.path(STATE_DIR, f"{clip_id}.parquet")


def motion_path(out: Location, record: dict[str, Any]) -> str:
    """The clip's camera motion (one affine per frame), when the recipe measures it."""
    return out.path(STATE_DIR, f"{clip_id_for(record['source_uri'])}.motion.parquet")


def read_motion(out: Location, record: dict[str, Any]) -> np.ndarray | None:
    """(frames, 2, 3) affines from `detect_clip`, or None when not measured."""
    table = read_state_table(out, motion_path(out, record))
    if table is None:
        return None
    return np.column_stack([table[c].to_numpy() for c in _MOTION_COLUMNS]).reshape(-1, 2, 3)


_MOTION_COLUMNS = ("a00", "a01", "a02", "a10", "a11", "a12")


def done_before(out: Location, record: dict[str, Any], key: str) -> dict[str, Any] | None:
    meta_path, table_path = state_paths(out, record)
    meta = read_state_json(out, meta_path)
    if (isinstance(meta, dict) and meta.get("key") == key
            and meta.get("webm") == webm_identity(record) and readable_parquet(out, table_path)):
        return meta
    return None


# What the later stages' look-ups read of a clip's record: its place, and its WebM's identity.
# They see only these (`looked_up`), so a ledger keyed by them cannot miss a change that
# matters, and other fields (status, timings) changing between runs do not matter.
LOOK_UP_FIELDS = ("source_uri", "recording", "clip_index", "clip_name", "output_uri",
                  "output_bytes", "convert_key", "fingerprint")


def looked_up(record: dict[str, Any]) -> dict[str, Any]:
    return {name: record.get(name) for name in LOOK_UP_FIELDS}


def detected_before(record: dict[str, Any], out: Location,
                    recipe: Recipe) -> dict[str, Any] | None:
    """The clip's detect summary when its detections are done for these settings, else None."""
    record = looked_up(record)
    previous = done_before(out, record, recipe.detect_key())
    if previous is None:
        return None
    return {"recording": record["recording"], "clip_index": record["clip_index"],
            "clip_name": record["clip_name"], **previous, "status": "skipped"}


def detected_before_uri(record: dict[str, Any], out_uri: str,
                        recipe: Recipe) -> dict[str, Any] | None:
    """`detected_before` as the flow's look-up (no task run for a clip with nothing to do)."""
    return detected_before(record, open_location(out_uri, recipe.storage), recipe)


def detect_ledger(records: list[dict[str, Any]], out_uri: str, recipe: Recipe) -> Ledger:
    """The `detected_before` answers of ``records`` kept from the last run (`tasks.store.ledger`):
    each reads the clip's two detect state files."""
    out = open_location(out_uri, recipe.storage)
    state, key = out.path(STATE_DIR), recipe.detect_key()
    return Ledger(out, "detect", [
        Unit([looked_up(record), key], ((state, state_paths(out, record)[0].removesuffix("json")),))
        for record in records])


def webm_identity(record: dict[str, Any]) -> list:
    """What identifies the WebM a clip's later stages worked on: a clip converted again (new
    source bytes or convert settings) is a new WebM, and their earlier work does not apply."""
    return [record.get("output_uri"), record.get("output_bytes"), record.get("convert_key"),
            record.get("fingerprint")]


@dataclass(frozen=True)
class _Sampled:
    index: int
    seconds: float
    image: np.ndarray


def detect_clip(record: dict[str, Any], out: Location, recipe: Recipe,
                detector: Detector | None = None) -> dict[str, Any]:
    """Detections of one converted clip, written to the clip's state; returns a summary."""
    skipped = detected_before(record, out, recipe)
    if skipped is not None:
        return skipped
    key = recipe.detect_key()
    summary = {"recording": record["recording"], "clip_index": record["clip_index"],
               "clip_name": record["clip_name"]}
    started = time.perf_counter()
    detector = detector or make_detector(recipe)
    mapped = recipe.label_mapper().table(detector.spec.labels)
    columns = _Columns()
    path = webm_path(out, record)
    if callable(getattr(detector, "prime", None)):
        detector.prime(_priming_frames(out, path, recipe))
    frames = 0
    analysis: _Analysis | None = None
    with progress.meter("detect", record["source_uri"], record.get("output_frames")) as meter:
        for batch in _batches(out, path, recipe):
            analysis = batch.analysis or analysis
            results = detect_checked(detector, [s.image for s in batch.frames])
            for sampled, boxes in zip(batch.frames, results):
                boxes = _to_webm_pixels(boxes, batch.scale, batch.size)
                keep = boxes.confidence >= recipe.detect.min_score
                columns.add(sampled, boxes[keep], detector.spec.labels, mapped)
            meter.add(batch.decoded - frames)
            frames = batch.decoded
    expected = record.get("output_frames")
    if expected is not None and frames != expected:
        raise MediaReadError(f"{record['output_uri']}: decoded {frames} frames, the parity "
                             f"proof counted {expected}; the WebM changed since conversion")
    table = columns.table(record)
    meta_path, table_path = state_paths(out, record)
    write_table(out, table_path, table)  # the tables first: the record marks them complete
    shots = analysis.cuts.shots() if analysis and analysis.cuts else []
    if analysis and analysis.motion is not None:
        affines = np.asarray(analysis.affines, np.float64).reshape(-1, 6)
        write_table(out, motion_path(out, record), pa.table(
            {name: affines[:, i] for i, name in enumerate(_MOTION_COLUMNS)}))
    meta = {"key": key, "webm": webm_identity(record), "frames": frames,
            "every_nth": recipe.detect.every_nth, "detections": table.num_rows,
            "shots": shots, "seconds": round(time.perf_counter() - started, 3)}
    write_bytes_atomic(out, meta_path, json.dumps(meta, sort_keys=True).encode())
    log.info("%s: %d detection(s) on %d frame(s)", record["output_uri"], table.num_rows, frames)
    return {**summary, **meta, "status": "detected"}


_PRIME_FRAMES, _PRIME_SPAN_S = 40, 8.0


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


def _to_webm_pixels(boxes: Boxes, scale: tuple[float, float], size: tuple[int, int]) -> Boxes:
    if scale != (1.0, 1.0):
        boxes = boxes.scaled(*scale)
    w, h = size
    xyxy = np.clip(boxes.xyxy, 0, np.array([w, h, w, h], np.float32))
    return Boxes(xyxy, boxes.confidence, boxes.class_id)


class _Columns:
    """Detections gathered per batch as arrays (one list entry per frame with boxes)."""

    def __init__(self) -> None:
        self.parts: list[tuple[int, float, Boxes, np.ndarray, np.ndarray]] = []

    def add(self, sampled: _Sampled, boxes: Boxes, model_labels, mapped) -> None:
        if not len(boxes):
            return
        names = np.array([mapped[c] for c in boxes.class_id.tolist()], dtype=object)
        keep = names != None  # noqa: E711  (unmapped labels are dropped)
        if not keep.any():
            return
        model = np.array([model_labels[c] for c in boxes.class_id.tolist()], dtype=object)
        boxes, names, model = boxes[keep], names[keep], model[keep]
        # One order within a frame whatever order the model's NMS gave: best score first,
        # then position, then label (so reruns write the same bytes).
        xyxy = boxes.xyxy
        order = np.lexsort((names.astype(str), xyxy[:, 3], xyxy[:, 2], xyxy[:, 1], xyxy[:, 0],
                            -boxes.confidence))
        self.parts.append((sampled.index, sampled.seconds, boxes[order], names[order],
                           model[order]))

    def table(self, record: dict[str, Any]) -> pa.Table:
        if not self.parts:
            return DETECTION_SCHEMA.empty_table()
        counts = [len(p[2]) for p in self.parts]
        frame = np.repeat([p[0] for p in self.parts], counts).astype(np.int64)
        xyxy = np.concatenate([p[2].xyxy for p in self.parts])
        n = len(frame)
        return pa.table({
            "recording": pa.array([record["recording"]] * n, pa.string()),
            "clip_index": pa.array(np.full(n, record["clip_index"], np.int32)),
            "frame": frame,
            "global_frame": frame + int(record.get("global_first_frame") or 0),
            "time_s": np.repeat([p[1] for p in self.parts], counts).astype(np.float64),
            "label": pa.array(np.concatenate([p[3] for p in self.parts]).tolist(), pa.string()),
            "model_label": pa.array(np.concatenate([p[4] for p in self.parts]).tolist(), pa.string()),
            "score": np.concatenate([p[2].confidence for p in self.parts]),
            "x1": xyxy[:, 0], "y1": xyxy[:, 1], "x2": xyxy[:, 2], "y2": xyxy[:, 3],
        }, schema=DETECTION_SCHEMA)


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


def write_detections(out: Location, summaries: list[dict[str, Any]],
                     records: list[dict[str, Any]]) -> str:
    """``OUT/detections.parquet``: every listed clip's detections, in recording order."""
    by_clip = {(r["recording"], r["clip_index"]): r for r in records}
    inputs = []
    for s in sorted(summaries, key=lambda s: (s["recording"], s["clip_index"])):
        if s.get("status") in ("detected", "skipped"):
            record = by_clip[(s["recording"], s["clip_index"])]
            inputs.append((state_paths(out, record)[1], record.get("global_first_frame") or 0))
    path = out.path(DETECTIONS_FILE)
    sig = merged.signature(out, [out.path(STATE_DIR)], [DETECTOR_VERSION, inputs])
    if merged.current(out, path, sig):
        return path
    tables = []
    for table_path, first in inputs:
        table = read_table(out, table_path)
        if table is not None:
            tables.append(with_global_frame(table, first))
    write_table(out, path, concat(tables, DETECTION_SCHEMA))
    merged.note(out, path, sig)
    return path


__all__ = ["make_detector", "detect_clip", "write_detections", "is_converted"]


# --- URI entry points (what a Prefect task calls: small, picklable arguments) ----------------


def converted_records(out_uri: str, recipe: Recipe) -> list[dict[str, Any]]:
    """Rows of the items table this run wrote, all of them (converted or not)."""
    from tasks.store.items import read_items
    from tasks.store.storage import open_location

    table = read_items(open_location(out_uri, recipe.storage))
    return [] if table is None else table.to_pylist()


def detect_clip_uri(record: dict[str, Any], out_uri: str, recipe: Recipe) -> dict[str, Any]:
    from tasks.store.storage import open_location

    return detect_clip(record, open_location(out_uri, recipe.storage), recipe)


def write_detections_uri(out_uri: str, recipe: Recipe, summaries: list[dict[str, Any]],
                         records: list[dict[str, Any]]) -> str:
    from tasks.store.storage import open_location

    out = open_location(out_uri, recipe.storage)
    write_shots(out, summaries, records)
    return out.url(write_detections(out, summaries, records))
