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
import time
from typing import Any

import numpy as np
import pyarrow as pa

from models import registry
from models.boxes import Boxes
from models.contracts import Detector
from tasks.store.record import ClipRecord
from tasks import progress
from tasks.store import merged
from tasks.detect.driver import detect_checked
from tasks.errors import ConfigError, MediaReadError

from tasks.recipe import DETECTOR_VERSION, Recipe
from tasks.detect.shots import write_shots
from tasks.store.storage import Location, write_bytes_atomic
from tasks.store.tables import DETECTION_SCHEMA, concat, read_table, with_global_frame, write_table
from tasks.media.webm import webm_path
from tasks.store.items import is_converted
from tasks.detect.state import STATE_DIR, _MOTION_COLUMNS, detected_before, motion_path, state_paths, webm_identity
from tasks.detect.decode import _Analysis, _Sampled, _batches, _priming_frames

log = logging.getLogger(__name__)
DETECTIONS_FILE = "detections.parquet"


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


def detect_clip(record: ClipRecord, out: Location, recipe: Recipe,
                detector: Detector | None = None) -> dict[str, Any]:
    """Detections of one converted clip, written to the clip's state; returns a summary."""
    skipped = detected_before(record, out, recipe)
    if skipped is not None:
        return skipped
    key = recipe.detect_key()
    summary = {"recording": record.recording, "clip_index": record.clip_index,
               "clip_name": record.clip_name}
    started = time.perf_counter()
    detector = detector or make_detector(recipe)
    mapped = recipe.label_mapper().table(detector.spec.labels)
    columns = _Columns()
    path = webm_path(out, record)
    if callable(getattr(detector, "prime", None)):
        detector.prime(_priming_frames(out, path, recipe))
    frames = 0
    analysis: _Analysis | None = None
    with progress.meter("detect", record.source_uri, record.output_frames) as meter:
        for batch in _batches(out, path, recipe):
            analysis = batch.analysis or analysis
            results = detect_checked(detector, [s.image for s in batch.frames])
            for sampled, boxes in zip(batch.frames, results):
                boxes = _to_webm_pixels(boxes, batch.scale, batch.size)
                keep = boxes.confidence >= recipe.detect.min_score
                columns.add(sampled, boxes[keep], detector.spec.labels, mapped)
            meter.add(batch.decoded - frames)
            frames = batch.decoded
    expected = record.output_frames
    if expected is not None and frames != expected:
        raise MediaReadError(f"{record.output_uri}: decoded {frames} frames, the parity "
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
    log.info("%s: %d detection(s) on %d frame(s)", record.output_uri, table.num_rows, frames)
    return {**summary, **meta, "status": "detected"}


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

    def table(self, record: ClipRecord) -> pa.Table:
        if not self.parts:
            return DETECTION_SCHEMA.empty_table()
        counts = [len(p[2]) for p in self.parts]
        frame = np.repeat([p[0] for p in self.parts], counts).astype(np.int64)
        xyxy = np.concatenate([p[2].xyxy for p in self.parts])
        n = len(frame)
        return pa.table({
            "recording": pa.array([record.recording] * n, pa.string()),
            "clip_index": pa.array(np.full(n, record.clip_index, np.int32)),
            "frame": frame,
            "global_frame": frame + int(record.global_first_frame or 0),
            "time_s": np.repeat([p[1] for p in self.parts], counts).astype(np.float64),
            "label": pa.array(np.concatenate([p[3] for p in self.parts]).tolist(), pa.string()),
            "model_label": pa.array(np.concatenate([p[4] for p in self.parts]).tolist(), pa.string()),
            "score": np.concatenate([p[2].confidence for p in self.parts]),
            "x1": xyxy[:, 0], "y1": xyxy[:, 1], "x2": xyxy[:, 2], "y2": xyxy[:, 3],
        }, schema=DETECTION_SCHEMA)


def write_detections(out: Location, summaries: list[dict[str, Any]],
                     records: list[ClipRecord]) -> str:
    """``OUT/detections.parquet``: every listed clip's detections, in recording order."""
    by_clip = {(r.recording, r.clip_index): r for r in records}
    inputs = []
    for s in sorted(summaries, key=lambda s: (s["recording"], s["clip_index"])):
        if s.get("status") in ("detected", "skipped"):
            record = by_clip[(s["recording"], s["clip_index"])]
            inputs.append((state_paths(out, record)[1], record.global_first_frame or 0))
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


def converted_records(out_uri: str, recipe: Recipe) -> list[ClipRecord]:
    """Rows of the items table this run wrote, all of them (converted or not)."""
    from tasks.store.items import read_records
    from tasks.store.storage import open_location

    return read_records(open_location(out_uri, recipe.storage))


def detect_clip_uri(record: ClipRecord, out_uri: str, recipe: Recipe) -> dict[str, Any]:
    from tasks.store.storage import open_location

    return detect_clip(record, open_location(out_uri, recipe.storage), recipe)


def write_detections_uri(out_uri: str, recipe: Recipe, summaries: list[dict[str, Any]],
                         records: list[ClipRecord]) -> str:
    from tasks.store.storage import open_location

    out = open_location(out_uri, recipe.storage)
    write_shots(out, summaries, records)
    return out.url(write_detections(out, summaries, records))
