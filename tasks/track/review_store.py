"""A clip's review as kept in OUT: ``OUT/reviews/<clip id>.parquet``, written under a lock
from the results the queue stores (`save_review`), read by the track stage (`load_review`).
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from tasks.store.record import ClipRecord
from tasks.annotations.keyframes import KEYFRAME_SCHEMA, sort_tracks
from tasks.store.storage import Location
from tasks.store.tables import write_table
from tasks.track.corrections import Review


REVIEW_DIR = "reviews"


def review_path(out: Location, record: ClipRecord) -> str:
    from tasks.store.items import clip_id_for

    return out.path(REVIEW_DIR, f"{clip_id_for(record.source_uri)}.parquet")


@dataclass(frozen=True)
class StoredReview:
    keyframes: pa.Table
    scope: tuple[int, ...]
    digest: str  # of the file: what the applied result is kept by
    tasks: tuple[int, ...]  # the queue tasks whose results it holds
    track_key: str | None  # the tracking settings whose track ids it refers to


def load_review(out: Location, record: ClipRecord) -> StoredReview | None:
    """The clip's review, or None when nobody reviewed it."""
    from tasks.store.storage import read_bytes

    data = read_bytes(out, review_path(out, record))
    if data is None:
        return None
    import pyarrow.parquet as pq

    table = pq.read_table(pa.BufferReader(data))
    meta = table.schema.metadata
    key = meta.get(b"track_key")
    return StoredReview(table.replace_schema_metadata(None), tuple(json.loads(meta[b"scope"])),
                        hashlib.sha256(data).hexdigest()[:16],
                        tuple(json.loads(meta.get(b"tasks", b"[]"))),
                        key.decode() if key else None)


def save_review(out: Location, record: ClipRecord, review: Review, task_id: int | None,
                track_key: str | None = None) -> str:
    """Merge a review into the clip's review file (tracks of its scope and its new tracks are
    replaced, earlier reviews of other tracks kept) and write it atomically. Reviews of one
    clip are merged one at a time (`review_lock`), so two finishing at once both stay."""
    with review_lock(out):
        existing = load_review(out, record)
        table, scope = review.keyframes, set(review.scope)
        tasks: list[int] = []
        if existing is not None:
            old = existing.keyframes
            replaced = scope | set(table["track_id"].to_pylist())
            keep = old.filter(pc.invert(pc.is_in(old["track_id"], pa.array(sorted(replaced), pa.int32()))))
            table = pa.concat_tables([keep.cast(KEYFRAME_SCHEMA), table.cast(KEYFRAME_SCHEMA)])
            scope |= set(existing.scope)
            tasks = list(existing.tasks)
            track_key = track_key or existing.track_key
        if task_id is not None and task_id not in tasks:
            tasks.append(task_id)
        meta = {"scope": json.dumps(sorted(scope)), "tasks": json.dumps(tasks)}
        if track_key:
            meta["track_key"] = track_key
        table = sort_tracks(table.cast(KEYFRAME_SCHEMA)).replace_schema_metadata(meta)
        return write_table(out, review_path(out, record), table)


@contextmanager
def review_lock(out: Location):
    """One writer of reviews (and one pipeline run applying them) per OUT at a time: an OS
    lock on ``OUT/reviews/.lock`` where OUT is a local folder. (An object store has no such
    lock: with OUT in a bucket, apply reviews from one process.)"""
    if not out.is_local:
        yield
        return
    import fcntl
    import os

    folder = os.path.join(out.root, REVIEW_DIR)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
