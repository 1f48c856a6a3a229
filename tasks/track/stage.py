"""Tracks of one clip: keyframe boxes linked into objects, carried frame by frame by an AI
tracker in resumable chunks of ``frames_per_execution`` frames. Three units of work, each a
plain function a Prefect task wraps through the entry points here:

1. `tasks.track.plan.plan_clip`: the clip's objects and their keyframes (anchors).
2. `tasks.track.chunks.run_object`: one object, chunk after chunk, each persisted.
3. `tasks.track.assemble.assemble_clip`: the clip's tracks table, then its reviewer's
   corrections (`tasks.track.retrack.review_clip`), as one unit (`finish_clip_uri`).

Here too: what the pipeline's look-ahead asks (`tracked_before`, `track_ledger`).
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow.compute as pc

from tasks.store.record import ClipRecord
from tasks.detect.state import look_up_identity, looked_up
from tasks.errors import ReviewStorageError, StorageError
from tasks.store.ledger import Ledger, Unit
from tasks.recipe import Recipe
from tasks.store.storage import Location
from tasks.store.tables import read_state_json, read_state_table, readable_parquet
from tasks.track.state import STATE_DIR, _out, clip_dir
from tasks.track.retrack import review_clip
from tasks.track.plan import load_keyframes, plan_clip
from tasks.track.chunks import run_object
from tasks.track.assemble import _reviewed_path, assemble_clip, write_tracks

log = logging.getLogger(__name__)


# --- URI entry points (what a Prefect task calls) ----------------------------------------


def plan_clip_uri(record, out_uri: str, recipe: Recipe, keyframes_uri: str | None, key: str):
    out = _out(out_uri, recipe)
    table = load_keyframes(keyframes_uri, out)[0] if keyframes_uri else None
    return plan_clip(record, out, recipe, table, key)


def run_object_uri(record, out_uri: str, recipe: Recipe, key: str, track_id: int):
    return run_object(record, _out(out_uri, recipe), recipe, key, track_id)


def tracked_before(record: ClipRecord, out: Location, key: str) -> dict[str, Any] | None:
    """What `finish_clip_uri` would return, when the clip has nothing left to do: planned,
    its tracks table assembled, and its review (if any) applied. None otherwise."""
    from tasks.track.review_store import load_review

    record = looked_up(record)
    base = clip_dir(out, record, key)
    plan = read_state_json(out, f"{base}/plan.json")
    if not (isinstance(plan, dict) and isinstance(plan.get("objects"), list)
            and readable_parquet(out, f"{base}/plan.parquet")
            and readable_parquet(out, f"{base}/timeline.parquet")):
        return None
    tracks = read_state_table(out, f"{base}/tracks.parquet", ["hidden"])
    if tracks is None:
        return None
    where = {"recording": record.recording, "clip_index": record.clip_index}
    review = load_review(out, record)
    reviewed = None
    if review is not None:
        if not readable_parquet(out, _reviewed_path(out, record, key, review.digest)):
            return None
        reviewed = {**where, "review": review.digest, "status": "skipped"}
    summary = {**where, "objects": len(plan["objects"]), "rows": tracks.num_rows,
               "hidden": int(pc.sum(tracks["hidden"]).as_py() or 0), "reused": True}
    return {"tracks": summary, "review": reviewed, "review_error": None}


def track_ledger(records: list[ClipRecord], out_uri: str, recipe: Recipe,
                 key: str) -> Ledger:
    """The `tracked_before` answers of ``records`` kept from the last run (`tasks.store.ledger`):
    each reads the clip's tracking state folder and its review file."""
    from tasks.track.review_store import REVIEW_DIR, review_path

    out = _out(out_uri, recipe)
    state, reviews = out.path(STATE_DIR), out.path(REVIEW_DIR)
    return Ledger(out, "track", [
        Unit([look_up_identity(record), key], ((state, clip_dir(out, record, key) + "/"),
                             (reviews, review_path(out, record))))
        for record in records])


def tracked_before_uri(record: ClipRecord, out_uri: str, recipe: Recipe,
                       key: str) -> dict[str, Any] | None:
    return tracked_before(record, _out(out_uri, recipe), key)


def finish_clip_uri(record, out_uri: str, recipe: Recipe, key: str,
                    objects: list[int]) -> dict[str, Any]:
    """A clip's tracks table from its objects (`assemble_clip`), then its review applied
    (`review_clip`), as one unit: ``{"tracks": summary, "review": summary or None,
    "review_error": None or why}``. A review that cannot be applied is a verdict, not a
    failure of the unit: the clip keeps its machine tracks. A store failure while applying
    it raises `ReviewStorageError` (retried, and it carries the tracks summary)."""
    out = _out(out_uri, recipe)
    tracks = assemble_clip(record, out, key, objects)
    review, error = None, None
    try:
        review = review_clip(record, out, recipe, key)
    except StorageError as e:
        raise ReviewStorageError(f"applying the review of {record.output_uri}: {e}",
                                 tracks) from e
    except Exception as e:  # reported by the flow; the other clips go on
        error = f"{type(e).__name__}: {e}"
    return {"tracks": tracks, "review": review, "review_error": error}


def write_tracks_uri(out_uri: str, recipe: Recipe, summaries, records, key: str) -> str:
    out = _out(out_uri, recipe)
    return out.url(write_tracks(out, summaries, records, key))
