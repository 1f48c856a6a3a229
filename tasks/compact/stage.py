"""The compaction stage: each clip's tracks become its keyframes (`tasks.compact.algorithm`), kept per
clip, then merged into ``OUT/keyframes.parquet`` with global frames.

A clip's keyframes are computed from its own tracks (with its review, if applied) with clip
frames only, so they do not change when an earlier clip of the recording does; the merge
adds each clip's global offset. They are kept under ``_state/compact/<clip id>.<digest>.parquet``,
the digest naming the dense rows, tolerance and algorithm version: a rerun reuses them, and
a changed tolerance or track recomputes only that clip.

`compact_uri` compacts a tracks table given as a file (the `compact` command on a table).
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tasks.store.record import ClipRecord
from tasks.store import merged
from tasks.compact.algorithm import compact_tracks, tolerance, verify
from tasks.detect.state import look_up_identity
from tasks.errors import ConfigError, PipelineError
from tasks.store.items import clip_id_for
from tasks.annotations.keyframes import KEYFRAME_SCHEMA
from tasks.store.ledger import Ledger, Unit
from tasks.recipe import Recipe
from tasks.store.storage import Location, object_version, open_location
from tasks.store.tables import (TRACKS_FILE_SCHEMA, clip_slices, concat, read_state_table, table_digest,
                          with_attributes, with_global_frame, write_table)

KEYFRAMES_FILE = "keyframes.parquet"
CACHE_DIR = "_state/compact"
# Bump when the algorithm's output changes, so kept keyframes are recomputed.
COMPACT_VERSION = 2


def tolerance_of(recipe: Recipe, max_error_px: float | None,
                 min_iou: float | None) -> tuple[float | None, float | None]:
    """The tolerance given, else the recipe's (checked)."""
    if max_error_px is None and min_iou is None:
        max_error_px, min_iou = recipe.compact.max_error_px, recipe.compact.min_iou
    tolerance(max_error_px, min_iou)
    return max_error_px, min_iou


def _dense_rows(out: Location, record: ClipRecord, key: str) -> pa.Table | None:
    """The clip's tracks as the merged tracks table holds them, with clip frames only."""
    from tasks.track.assemble import clip_tracks

    table = clip_tracks(out, record, key)
    if table is None:
        return None
    return concat([with_global_frame(with_attributes(table), 0)], TRACKS_FILE_SCHEMA)


def _name(record: ClipRecord, rows: pa.Table, tol: tuple) -> str:
    digest = table_digest(rows, *tol, COMPACT_VERSION)
    return f"{clip_id_for(record.source_uri)}.{digest}.parquet"


def _summary(record: ClipRecord, name: str, rows: pa.Table, keyframes: pa.Table,
             computed: bool, seconds: float) -> dict[str, Any]:
    """What the export and review of the clip need to know of its keyframes."""
    return {"recording": record.recording, "clip_index": int(record.clip_index),
            "keyframes_file": name, "keyframes": keyframes.num_rows,
            "track_ids": sorted(set(keyframes["track_id"].to_pylist())),
            "labels": sorted(set(keyframes["label"].to_pylist())), "input_rows": rows.num_rows,
            "visible_frames": int(pc.sum(pc.invert(rows["hidden"])).as_py() or 0),
            "computed": computed, "seconds": round(seconds, 3)}


def compact_clip(record: ClipRecord, out: Location, recipe: Recipe, key: str,
                 max_error_px: float | None = None, min_iou: float | None = None) -> dict[str, Any]:
    """The clip's keyframes, computed (and re-checked frame by frame: a failure there is a
    bug and raises) unless kept from an earlier run."""
    tol = tolerance_of(recipe, max_error_px, min_iou)
    rows = _dense_rows(out, record, key)
    if rows is None:
        raise PipelineError(f"{record.output_uri} has no tracks table yet: track it first")
    name = _name(record, rows, tol)
    started = time.perf_counter()
    keyframes, computed = _kept_or_computed(out, name, rows, tol, record.output_uri)
    return _summary(record, name, rows, keyframes, computed, time.perf_counter() - started)


def _kept_or_computed(out: Location, name: str, rows: pa.Table, tol: tuple,
                      what: str) -> tuple[pa.Table, bool]:
    """The keyframes kept under ``name``, else computed from ``rows``, re-checked frame by
    frame (a failure there is a bug and raises) and kept; and whether they were computed."""
    path = out.path(CACHE_DIR, name)
    keyframes = read_state_table(out, path)
    if keyframes is not None:
        return keyframes, False
    keyframes = compact_tracks(rows, max_error_px=tol[0], min_iou=tol[1])
    problems = verify(rows, keyframes, max_error_px=tol[0], min_iou=tol[1])
    if problems:
        raise PipelineError(f"compaction of {what} failed its check: {problems[0]}")
    write_table(out, path, keyframes)
    return keyframes, True


def compacted_before(record: ClipRecord, out: Location, recipe: Recipe, key: str,
                     max_error_px: float | None = None,
                     min_iou: float | None = None) -> dict[str, Any] | None:
    """`compact_clip`'s summary when the clip's keyframes are kept for its current tracks and
    this tolerance, else None (the flow's look-up: no task run for an unchanged clip)."""
    tol = tolerance_of(recipe, max_error_px, min_iou)
    rows = _dense_rows(out, record, key)
    if rows is None:
        return None
    name = _name(record, rows, tol)
    keyframes = read_state_table(out, out.path(CACHE_DIR, name), ["track_id", "label"])
    if keyframes is None:
        return None
    return _summary(record, name, rows, keyframes, False, 0.0)


def compact_ledger(records: list[ClipRecord], out: Location, recipe: Recipe, key: str,
                   max_error_px: float | None = None, min_iou: float | None = None) -> Ledger:
    """The `compacted_before` answers kept from the last run (`tasks.store.ledger`): each reads the
    clip's tracking state, its review and its kept keyframes."""
    from tasks.track.review_store import REVIEW_DIR, review_path
    from tasks.track.state import STATE_DIR, clip_dir

    tol = tolerance_of(recipe, max_error_px, min_iou)
    state, reviews, kept = out.path(STATE_DIR), out.path(REVIEW_DIR), out.path(CACHE_DIR)
    return Ledger(out, "compact", [
        Unit([look_up_identity(record), key, tol, COMPACT_VERSION], (
            (state, clip_dir(out, record, key) + "/"), (reviews, review_path(out, record)),
            (kept, out.path(CACHE_DIR, clip_id_for(record.source_uri) + "."))))
        for record in records])


def merge_keyframes(out: Location, recipe: Recipe, summaries: list[dict[str, Any]],
                    records: list[ClipRecord], max_error_px: float | None = None,
                    min_iou: float | None = None) -> dict[str, Any]:
    """``OUT/keyframes.parquet`` from the clips' kept keyframes (``summaries`` of
    `compact_clip`), in recording order with global frames from the items ``records``;
    rewritten only when they changed. Kept keyframes no clip uses any more are removed."""
    tol = tolerance_of(recipe, max_error_px, min_iou)
    offsets = {(r.recording, int(r.clip_index)): int(r.global_first_frame or 0)
               for r in records}
    ordered = sorted(summaries, key=lambda s: (s["recording"], s["clip_index"]))
    _drop_unused(out, {s["keyframes_file"] for s in ordered})
    target = out.path(KEYFRAMES_FILE)
    sig = merged.signature(out, [out.path(CACHE_DIR)], [COMPACT_VERSION, [
        (s["keyframes_file"], offsets[(s["recording"], s["clip_index"])]) for s in ordered]])
    if not merged.current(out, target, sig):
        parts = []
        for s in ordered:
            path = out.path(CACHE_DIR, s["keyframes_file"])
            table = read_state_table(out, path)
            if table is None:
                raise PipelineError(f"the keyframes of clip {s['clip_index']} of "
                                    f"{s['recording']!r} ({out.url(path)}) are gone or "
                                    "unreadable: run again to recompute them")
            parts.append(with_global_frame(table, offsets[(s["recording"], s["clip_index"])]))
        write_table(out, target, concat(parts, KEYFRAME_SCHEMA))
        merged.note(out, target, sig)
    return _stage_summary(out, ordered, tol)


def _stage_summary(out: Location, clips: list[dict[str, Any]], tol: tuple) -> dict[str, Any]:
    computed = sum(bool(s["computed"]) for s in clips)
    visible = sum(s["visible_frames"] for s in clips)
    keyframes = sum(s["keyframes"] for s in clips)
    return {"clips": len(clips), "computed": computed, "reused": len(clips) - computed,
            "input_rows": sum(s["input_rows"] for s in clips), "visible_frames": visible,
            "keyframes": keyframes,
            "keyframes_per_1000_frames": round(1000 * keyframes / visible, 2) if visible else 0.0,
            "tolerance": {"max_error_px": tol[0], "min_iou": tol[1]},
            "seconds": round(sum(s["seconds"] for s in clips), 3),
            "keyframes_uri": out.url(out.path(KEYFRAMES_FILE))}


def _drop_unused(out: Location, used: set[str]) -> None:
    """Kept keyframes no current track needs (an older tolerance or tracking) are removed,
    so the folder holds one entry per clip."""
    folder = out.path(CACHE_DIR)
    try:
        out.fs.invalidate_cache(folder)
        present = out.fs.ls(folder, detail=False)
    except FileNotFoundError:
        return
    for path in present:
        if path.endswith(".parquet") and path.rsplit("/", 1)[-1] not in used:
            try:
                out.fs.rm(path)
            except FileNotFoundError:  # another listing was stale; nothing to remove
                pass


# --- a tracks table given as a file -----------------------------------------------------------

def compact_uri(tracks_uri: str, out_uri: str, recipe, max_error_px: float | None = None,
                min_iou: float | None = None) -> dict:
    """Compact a tracks table (a Parquet file at any fsspec URL) clip by clip into
    ``OUT/keyframes.parquet``. The summary's ``per_clip`` says where each clip's keyframes
    are kept (what its exports read). An unchanged table and tolerance cost no read."""
    import pyarrow.parquet as pq

    tol = tolerance_of(recipe, max_error_px, min_iou)
    source = open_location(tracks_uri.rsplit("/", 1)[0] if "/" in tracks_uri else ".", recipe.storage)
    name = tracks_uri.rsplit("/", 1)[-1]
    out = open_location(out_uri, recipe.storage)
    target = out.path(KEYFRAMES_FILE)
    sig = merged.signature(out, [out.path(CACHE_DIR)], [
        COMPACT_VERSION, tracks_uri, object_version(source, source.path(name)), *tol])
    before = merged.current(out, target, sig)
    if before and isinstance(before.get("summary"), dict):
        return {**before["summary"], "computed": 0, "reused": before["summary"]["clips"],
                "seconds": 0.0}
    try:
        with source.fs.open(source.path(name), "rb") as f:
            tracks = pq.read_table(f)
    except FileNotFoundError as e:
        raise ConfigError(f"no tracks table at {tracks_uri}") from e
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        raise ConfigError(f"{tracks_uri} is not a readable Parquet tracks table: {e}") from e
    clips, parts = [], []
    slices = clip_slices(tracks) if tracks.num_rows else {}
    for (recording, index), rows in sorted(slices.items()):
        started = time.perf_counter()
        kept = f"{table_digest(rows, *tol, COMPACT_VERSION)}.parquet"
        keyframes, computed = _kept_or_computed(out, kept, rows, tol,
                                                f"{recording} clip {index}")
        where = ClipRecord(recording=recording, clip_index=index, source_uri="")
        clips.append(_summary(where, kept, rows, keyframes, computed,
                              time.perf_counter() - started))
        parts.append(keyframes)
    write_table(out, target, concat(parts, KEYFRAME_SCHEMA))
    _drop_unused(out, {c["keyframes_file"] for c in clips})
    summary = {**_stage_summary(out, clips, tol), "per_clip": clips}
    merged.note(out, target, sig, summary)
    return summary


# --- URI entry points (what a Prefect task calls: small, picklable arguments) ----------------

def compact_clip_uri(record: ClipRecord, out_uri: str, recipe: Recipe, key: str,
                     max_error_px: float | None = None, min_iou: float | None = None):
    return compact_clip(record, open_location(out_uri, recipe.storage), recipe, key,
                        max_error_px, min_iou)


def compacted_before_uri(record: ClipRecord, out_uri: str, recipe: Recipe, key: str,
                         max_error_px: float | None = None, min_iou: float | None = None):
    return compacted_before(record, open_location(out_uri, recipe.storage), recipe, key,
                            max_error_px, min_iou)


def compact_ledger_uri(records: list[ClipRecord], out_uri: str, recipe: Recipe, key: str,
                       max_error_px: float | None = None, min_iou: float | None = None) -> Ledger:
    return compact_ledger(records, open_location(out_uri, recipe.storage), recipe, key,
                          max_error_px, min_iou)


def merge_keyframes_uri(out_uri: str, recipe: Recipe, summaries: list[dict[str, Any]],
                        records: list[ClipRecord], max_error_px: float | None = None,
                        min_iou: float | None = None) -> dict[str, Any]:
    return merge_keyframes(open_location(out_uri, recipe.storage), recipe, summaries, records,
                           max_error_px, min_iou)
