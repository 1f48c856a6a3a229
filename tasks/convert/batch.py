"""A batch: list the clips, process each, then write the items table and a summary.

`run_batch` runs it all in-process without Prefect (tests, and anyone embedding us); the
flows in `flows/` wire the same three steps as Prefect tasks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tasks.convert.clip import Mode, clean_work_dir, process_clip
from tasks.convert.listing import ClipSource, plan_clips
from tasks.store.record import ClipRecord
from tasks.store.items import IGNORED_FILE, assign_timeline, read_ignored, write_ignored, write_items
from tasks.recipe import Recipe
from tasks.store.storage import Location, open_location, redact


STATUSES = ("converted", "ingested", "skipped", "blocked", "failed")


@dataclass(frozen=True)
class BatchSummary:
    items_uri: str
    total: int
    counts: dict[str, int]
    reasons: dict[str, int] = field(default_factory=dict)
    ignored: dict[str, int] = field(default_factory=dict)  # files not ingested, by reason

    @property
    def blocked(self) -> int:
        return self.counts.get("blocked", 0)

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0)

    def lines(self) -> list[str]:
        parts = [f"{self.counts.get(s, 0)} {s}" for s in STATUSES if self.counts.get(s)]
        out = [f"{self.total} clip(s): " + (", ".join(parts) or "nothing to do")]
        out += [f"  {status} {n} x {reason}" for (status, reason), n in sorted(
            (tuple(k.split(":", 1)) if ":" in k else ("blocked", k), n)
            for k, n in self.reasons.items())]
        out += ignored_lines(self.ignored, self.items_uri)
        out.append(f"items table: {self.items_uri}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"items_uri": self.items_uri, "total": self.total, "counts": dict(self.counts),
                "reasons": dict(self.reasons), "ignored": dict(self.ignored)}


def ignored_lines(ignored: dict[str, int], items_uri: str) -> list[str]:
    """What was not ingested and why, for people (the files are in ``ignored.parquet``)."""
    if not ignored:
        return []
    where = items_uri.rsplit("/", 1)[0] + "/" + IGNORED_FILE
    return [f"  ignored {n} file(s) x {reason}" for reason, n in sorted(ignored.items())] + [
        f"ignored files: {where}"]


def plan_batch(src_uri: str, out_uri: str, recipe: Recipe) -> list[ClipSource]:
    """List the dataset (skipping our own outputs if OUT lies inside it) and clean temps."""
    src = open_location(src_uri, recipe.storage)
    out = open_location(out_uri, recipe.storage)
    same_store = src.protocol == out.protocol
    ignored: list[tuple[str, int, str]] = []
    clips = plan_clips(src, recipe, exclude=out.root if same_store else None, ignored=ignored)
    write_ignored(out, ignored)
    clean_work_dir(out)
    return clips


def failed_record(clip: ClipSource, error: BaseException) -> ClipRecord:
    """Row for a clip whose task failed for good (storage down, a full disk, a bug): status
    ``failed``, never ``blocked`` (a verdict on the media), and not recorded as done, so the
    next run tries it again."""
    from tasks.errors import StorageError

    reason = "storage_error" if isinstance(error, StorageError) else "internal_error"
    return ClipRecord(source_uri=clip.source_uri, recording=clip.recording,
                      clip_name=clip.clip_name, clip_index=clip.clip_index,
                      source_size=clip.size, source_version=clip.version, status="failed",
                      reason=reason, detail=redact(f"{type(error).__name__}: {error}")[:500])


def finish_batch(out_uri: str, recipe: Recipe, records: list[ClipRecord]) -> BatchSummary:
    out = open_location(out_uri, recipe.storage)
    if any(r.status != "skipped" for r in records):
        clean_work_dir(out)  # what this run's failed clips left (a walk of every file in OUT)
    rows = assign_timeline(records)
    path = write_items(out, rows)
    counts = Counter(r.status for r in rows)
    reasons = Counter(r.reason if r.status == "blocked" else f"failed:{r.reason}"
                      for r in rows if r.status in ("blocked", "failed"))
    ignored = Counter(read_ignored(out))
    return BatchSummary(items_uri=out.url(path), total=len(rows), counts=dict(counts),
                        reasons=dict(reasons), ignored=dict(ignored))


def run_batch(src_uri: str, out_uri: str, recipe: Recipe, mode: Mode) -> BatchSummary:
    """The whole batch in this process, one clip after another (no Prefect)."""
    clips = plan_batch(src_uri, out_uri, recipe)
    src: Location = open_location(src_uri, recipe.storage)
    out: Location = open_location(out_uri, recipe.storage)
    records = [process_clip(clip, src, out, recipe, mode) for clip in clips]
    return finish_batch(out_uri, recipe, records)
