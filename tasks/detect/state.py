"""Where a clip's detections are kept (``OUT/_state/detect/<clip id>.json|.parquet``) and
what the pipeline's look-up asks of them: done for these settings and this WebM
(`detected_before`, `detect_ledger`), and the clip fields later stages' look-ups read.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.store.record import ClipRecord
from tasks.store.items import clip_id_for
from tasks.store.ledger import Ledger, Unit

from tasks.recipe import Recipe
from tasks.store.storage import Location, open_location
from tasks.store.tables import read_state_json, read_state_table, readable_parquet


STATE_DIR = "_state/detect"


def state_paths(out: Location, record: ClipRecord) -> tuple[str, str]:
    clip_id = clip_id_for(record.source_uri)
    return out.path(STATE_DIR, f"{clip_id}.json"), out.path(STATE_DIR, f"{clip_id}.parquet")


def motion_path(out: Location, record: ClipRecord) -> str:
    """The clip's camera motion (one affine per frame), when the recipe measures it."""
    return out.path(STATE_DIR, f"{clip_id_for(record.source_uri)}.motion.parquet")


def read_motion(out: Location, record: ClipRecord) -> np.ndarray | None:
    """(frames, 2, 3) affines from `detect_clip`, or None when not measured."""
    table = read_state_table(out, motion_path(out, record))
    if table is None:
        return None
    return np.column_stack([table[c].to_numpy() for c in _MOTION_COLUMNS]).reshape(-1, 2, 3)


_MOTION_COLUMNS = ("a00", "a01", "a02", "a10", "a11", "a12")


def done_before(out: Location, record: ClipRecord, key: str) -> dict[str, Any] | None:
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


def look_up_identity(record: ClipRecord) -> dict[str, Any]:
    """The fields a look-up reads, as a ledger identity (`tasks.store.ledger.Unit`)."""
    return {name: getattr(record, name) for name in LOOK_UP_FIELDS}


def looked_up(record: ClipRecord) -> ClipRecord:
    """The record with only the fields a look-up may read (the others None)."""
    return ClipRecord(**look_up_identity(record))


def detected_before(record: ClipRecord, out: Location,
                    recipe: Recipe) -> dict[str, Any] | None:
    """The clip's detect summary when its detections are done for these settings, else None."""
    record = looked_up(record)
    previous = done_before(out, record, recipe.detect_key())
    if previous is None:
        return None
    return {"recording": record.recording, "clip_index": record.clip_index,
            "clip_name": record.clip_name, **previous, "status": "skipped"}


def detected_before_uri(record: ClipRecord, out_uri: str,
                        recipe: Recipe) -> dict[str, Any] | None:
    """`detected_before` as the flow's look-up (no task run for a clip with nothing to do)."""
    return detected_before(record, open_location(out_uri, recipe.storage), recipe)


def detect_ledger(records: list[ClipRecord], out_uri: str, recipe: Recipe) -> Ledger:
    """The `detected_before` answers of ``records`` kept from the last run (`tasks.store.ledger`):
    each reads the clip's two detect state files."""
    out = open_location(out_uri, recipe.storage)
    state, key = out.path(STATE_DIR), recipe.detect_key()
    return Ledger(out, "detect", [
        Unit([look_up_identity(record), key], ((state, state_paths(out, record)[0].removesuffix("json")),))
        for record in records])


def webm_identity(record: ClipRecord | None) -> list:
    """What identifies the WebM a clip's later stages worked on: a clip converted again (new
    source bytes or convert settings) is a new WebM, and their earlier work does not apply."""
    if record is None:
        return [None] * 4
    return [record.output_uri, record.output_bytes, record.convert_key,
            record.fingerprint]
