"""The DAG's look-ahead (`flows.run`): before any task runs, every stage's answers for the
clips whose earlier stages are found done, in bulk. Ledgers answer unchanged clips without a
read (`tasks.store.ledger`); the others cost one state read each. A clip whose every stage is
answered runs no task at all. After the run, the ledgers keep every done unit's answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasks.convert.clip import convert_ledger, reused_record_uri
from tasks.compact.stage import compact_ledger_uri, compacted_before_uri
from tasks.detect.state import detect_ledger, detected_before_uri
from tasks.store.items import is_converted
from tasks.export.stage import exported_before_uri
from tasks.store.ledger import fill_missing
from tasks.track.stage import track_ledger, tracked_before_uri

if TYPE_CHECKING:
    from flows.job import ClipRun, Job
    from tasks.store.record import ClipRecord


def look_ahead(job: "Job", runs: list["ClipRun"]) -> None:
    """Fill ``run.found`` stage by stage for the clips whose earlier stages are found done."""
    recipe, out = job.recipe, job.out
    found = _look_up(reused_record_uri, [(r.source, job.uri, out, recipe, job.mode) for r in runs],
                     convert_ledger([r.source for r in runs], out, recipe, job.mode))
    _put(runs, "convert", found)
    ready = [r for r in runs if is_converted(r.found["convert"])]
    for stage, done, ledger, extra in _clip_stages(job):
        if not job.reaches(stage):
            return
        records = [r.found["convert"] for r in ready]
        found = _look_up(done, [(rec, out, recipe, *extra) for rec in records],
                         ledger(records, out, recipe, *extra))
        _put(ready, stage, found)
        ready = [r for r in ready if r.found[stage] is not None]
    if not job.reaches("export"):
        return
    found = exported_before_uri(out, recipe, [r.found["convert"] for r in ready],
                                job.clip_formats(), [r.found["compact"] for r in ready])
    _put(ready, "export", found)
    ready = [r for r in ready if r.found["export"] is not None]
    if recipe.review.enqueue:
        _put(ready, "review", _reviews_known(job, ready))


def _clip_stages(job: "Job") -> list[tuple]:
    """(stage, its look-up, its ledger, the arguments both take after record, OUT, recipe)
    of the stages after conversion whose units are clips."""
    return [("detect", detected_before_uri, detect_ledger, ()),
            ("track", tracked_before_uri, track_ledger, (job.track_key,)),
            ("compact", compacted_before_uri, compact_ledger_uri,
             (job.track_key, job.max_error_px, job.min_iou))]


def _look_up(done, calls: list[tuple], ledger) -> list:
    """``done(*call)`` per call, answered from ``ledger`` where its state is unchanged."""
    return fill_missing(ledger.answers(), lambda i: done(*calls[i]))


def _put(runs: list["ClipRun"], stage: str, found: list) -> None:
    for run, answer in zip(runs, found):
        run.found[stage] = answer


def _reviews_known(job: "Job", runs: list["ClipRun"]) -> list[dict[str, Any] | None]:
    """Each clip's review answer when all its tasks are in the queue (one query for all)."""
    from tasks.review.handoff import NO_QUEUE_IN_BUCKET, open_queue, review_keys
    from tasks.store.storage import open_location

    if not runs:
        return []
    recipe = job.recipe
    if not recipe.review.db and not open_location(job.out, recipe.storage).is_local:
        return [{"tasks": 0, "new": 0, "skipped": NO_QUEUE_IN_BUCKET}] * len(runs)
    keys = [review_keys(recipe, r.found["convert"], r.found["compact"]["track_ids"]) for r in runs]
    try:
        queue = open_queue(recipe, job.out)
    except Exception:  # the chain's task reports what is wrong
        return [None] * len(runs)
    try:
        have = queue.known([k for mine in keys for k in mine])
    finally:
        queue.close()
    return [{"tasks": len(mine), "new": 0} if all(k in have for k in mine) else None
            for mine in keys]


def settle_ledgers(job: "Job", runs: list["ClipRun"], items: list["ClipRecord"]) -> None:
    """Keep every done unit's answer for the next run (`tasks.store.ledger.Ledger.settle`): units
    found done keep theirs, the others are looked up once more."""
    recipe, out = job.recipe, job.out
    calls = [(r.source, job.uri, out, recipe, job.mode) for r in runs]
    convert_ledger([r.source for r in runs], out, recipe, job.mode).settle(
        [r.found.get("convert") for r in runs], lambda i: reused_record_uri(*calls[i]))
    by_uri = {r.uri: r for r in runs}
    ready = [rec for rec in items if is_converted(rec)]
    for stage, done, ledger, extra in _clip_stages(job):
        if not job.reaches(stage):
            return
        ready = [rec for rec in ready if by_uri[rec.source_uri].done(stage)]
        ledger(ready, out, recipe, *extra).settle(
            [by_uri[rec.source_uri].found.get(stage) for rec in ready],
            lambda i, ready=ready, done=done, extra=extra: done(ready[i], out, recipe, *extra))

