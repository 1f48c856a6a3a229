"""Tables merged from every clip's state (`detections.parquet`, `tracks.parquet`,
`keyframes.parquet`) are rewritten only when what they are made from changed.

A merge's *signature* hashes its inputs without reading them: the caller's description of
the merge (clips in order, their offsets, settings, versions) and the size and version token
(local mtime and inode, S3 ETag, GCS generation) of every file under its state folders, from
one listing per folder. A merge is current when its record in ``OUT/_state/merged/`` holds
that signature and the merged file still has the size and token it was written with. A
rerun with nothing to do then costs a listing, not a read of every clip's table (at 10,000
clips, the difference between a second and minutes).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from typing import Any

from tasks.store.storage import Location, list_files, object_version, read_bytes, write_bytes_atomic

STATE_DIR = "_state/merged"


def signature(out: Location, folders: list[str], described: Any) -> str:
    """BLAKE2b-128 (hex) of ``described`` and of every file's size and version token under
    ``folders`` (store paths)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(described, sort_keys=True, default=str).encode())
    for folder in folders:
        listing = list_files(out, folder)
        for path in sorted(listing):
            h.update(json.dumps([path, *listing[path]]).encode())
    return h.hexdigest()


def _record_path(out: Location, target: str) -> str:
    return out.path(STATE_DIR, posixpath.basename(target) + ".json")


def current(out: Location, target: str, sig: str) -> dict[str, Any] | None:
    """The record of ``target``'s merge (with the summary noted with it) when the merge is
    current for ``sig``, else None."""
    data = read_bytes(out, _record_path(out, target))
    try:
        record = json.loads(data) if data is not None else None
    except ValueError:
        return None
    if not (isinstance(record, dict) and record.get("signature") == sig):
        return None
    found = object_version(out, target)
    return record if found is not None and list(found) == record.get("target") else None


def note(out: Location, target: str, sig: str, summary: Any = None) -> None:
    """Record that ``target`` was just written from the inputs ``sig`` describes. Written
    after the target, so a crash in between only means merging again."""
    found = object_version(out, target)
    write_bytes_atomic(out, _record_path(out, target), json.dumps(
        {"signature": sig, "target": list(found) if found else None, "summary": summary},
        sort_keys=True).encode())
