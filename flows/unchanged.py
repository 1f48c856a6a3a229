"""A `run` with nothing to do, answered without a flow run.

After a run that completed, its summary is kept in ``OUT/_state/unchanged.json`` with a
*signature* of everything the run's outcome depends on:

- the job (dataset, OUT, every recipe setting, the digest of every file the recipe names,
  the package version);
- the dataset's listing (each clip's URL, size and version token, and the files ignored);
- every stage's look-ahead answer for every clip (`flows.look_ahead`: the ledgers, which
  compare the size and version token of every state file an answer was read from, and the
  review queue's keys);
- the size and version token of every file in OUT outside ``_state/`` (WebMs, tables,
  exports, previews): a deleted or edited output changes it.

The next `preannotate run` computes the signature first, without Prefect (about a second
on the samples, where starting Prefect's temporary server alone takes five). Equal: nothing
can have changed, the kept summary is the answer and no flow run is made. Different, or any
clip with work left: the flow runs as always. A run that failed keeps no summary.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from flows.job import ClipRun, Job
from flows.look_ahead import look_ahead
from tasks.convert.listing import plan_clips
from tasks.store.record import ClipRecord
from tasks.store.storage import (Location, list_files, open_location, read_bytes,
                                 write_bytes_atomic)

UNCHANGED_FILE = ("_state", "unchanged.json")
SIGNATURE_VERSION = 1
# Written by every run whatever it did, or by people: not part of what a run produces.
# (the review queue's own SQLite file is read through the look-ahead's queue query instead).
_SKIPPED = ("_state/", ".tmp/", "review.db", "Snapshots/")


def signature(job: Job) -> str | None:
    """The signature of ``job`` now, or None when some clip has work left."""
    recipe = job.recipe
    src, out = open_location(job.uri, recipe.storage), open_location(job.out, recipe.storage)
    ignored: list[tuple[str, int, str]] = []
    clips = plan_clips(src, recipe, exclude=out.root if src.protocol == out.protocol else None,
                       ignored=ignored)
    runs = [ClipRun(clip, i) for i, clip in enumerate(clips)]
    look_ahead(job, runs)
    if not runs or any(run.needs_work(job) for run in runs):
        return None
    text = json.dumps([
        SIGNATURE_VERSION, _package_version(), _job_identity(job),
        [[c.source_uri, c.size, c.version] for c in clips], sorted(ignored),
        [run.found for run in runs], _outputs(out)], sort_keys=True, default=_plain)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def unchanged_summary(job: Job) -> dict[str, Any] | None:
    """The last run's summary when nothing changed since it (see the module), else None.
    Never raises: any doubt means running the flow."""
    try:
        out = open_location(job.out, job.recipe.storage)
        data = read_bytes(out, out.path(*UNCHANGED_FILE))
        kept = json.loads(data) if data is not None else None
        if not (isinstance(kept, dict) and isinstance(kept.get("summary"), dict)):
            return None
        if kept.get("signature") != signature(job):
            return None
    except Exception:
        return None
    return {**kept["summary"], "unchanged_since": kept.get("at")}


def keep_summary(job: Job, summary: dict[str, Any]) -> None:
    """After a run that completed: keep its summary with the signature of OUT as it left it
    (None: some clip still has work, so nothing is kept and the next run runs)."""
    out = open_location(job.out, job.recipe.storage)
    path = out.path(*UNCHANGED_FILE)
    sig = signature(job)
    if sig is None:
        forget(out)
        return
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    blob = json.dumps({"signature": sig, "at": at, "summary": summary}, default=_plain)
    write_bytes_atomic(out, path, blob.encode())


def forget(out: Location) -> None:
    """Drop the kept summary (before a run that may change OUT)."""
    path = out.path(*UNCHANGED_FILE)
    try:
        if out.fs.exists(path):
            out.fs.rm(path)
    except FileNotFoundError:
        pass


def _job_identity(job: Job) -> list:
    recipe = job.recipe
    settings = recipe.model_dump(mode="json")
    return [job.uri, job.out, job.until, job.mode, job.track_key, job.formats, job.spans,
            job.max_error_px, job.min_iou, os.path.abspath(job.config) if job.config else None,
            settings, _named_files(settings)]


def _named_files(settings: Any) -> list:
    """Digest of every existing file a recipe setting names (models, labels, spans)."""
    from tasks.recipe import _file_digest

    found: list = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and len(value) < 4096 and os.path.isfile(value):
            found.append([value, _file_digest(value)])

    walk(settings)
    return sorted(found)


def _outputs(out: Location) -> list:
    files = list_files(out, out.root)
    root = out.root.rstrip("/") + "/"
    return sorted([path[len(root):] if path.startswith(root) else path, *found]
                  for path, found in files.items()
                  if not path[len(root):].startswith(_SKIPPED))


def _package_version() -> str:
    try:
        return version("preannotate")
    except PackageNotFoundError:
        return "unknown"


def _plain(value: Any) -> Any:
    return value.as_dict() if isinstance(value, ClipRecord) else str(value)
