"""A reviewer's result taken back: validated against the task's clip before anything is written,
stored by the queue with the completion in one transaction (the queue is the record of
results), then turned into the clip's review file, which `rebuild_reviews` can always make
again from the stored results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Any

import pyarrow as pa

from tasks.store.record import ClipRecord
from tasks.errors import ConfigError, FormatError, NotReviewedError
from tasks.recipe import Recipe
from tasks.track.corrections import Review, diff_review, human_frames, replay_review
from tasks.track.review_store import save_review
from tasks.track.review_read import read_reviewed
from tasks.store.storage import Location, open_location


def _record_of(out: Location, recording: str, clip_index: int) -> ClipRecord:
    from tasks.store.items import read_records

    for record in read_records(out):
        if record.recording == recording and int(record.clip_index) == clip_index:
            return record
    raise ConfigError(f"{out.url(out.root)} has no clip {clip_index} of recording {recording!r}")


def _labels(out: Location, recipe: Recipe, baseline: pa.Table) -> set[str] | None:
    """Labels a result may use: the label tree's when the recipe has one, else any."""
    if not recipe.labels.file:
        return None
    from tasks.labels import load_label_tree

    return set(load_label_tree(recipe.labels.file).paths) | set(baseline["label"].to_pylist())


def current_keyframes(out: Location, record: ClipRecord) -> pa.Table:
    from tasks.compact.stage import KEYFRAMES_FILE
    from tasks.export.stage import clip_keyframes
    from tasks.annotations.keyframes import KEYFRAME_SCHEMA
    from tasks.store.tables import read_table

    keyframes = read_table(out, out.path(KEYFRAMES_FILE))
    if keyframes is None:
        raise ConfigError(f"no keyframes in {out.url(out.root)}: export the clip before review")
    return clip_keyframes(keyframes.cast(KEYFRAME_SCHEMA), record)


def validate_result(payload: dict[str, Any], data: bytes, fmt: str, recipe: Recipe) -> Review:
    """The result read, checked against its clip and compared with what the reviewer was
    given; `FormatError` naming what is wrong (nothing is written)."""
    from tasks.export.stage import clip_info

    out = open_location(payload["out"], recipe.storage)
    record = _record_of(out, payload["recording"], int(payload["clip_index"]))
    baseline = current_keyframes(out, record)
    # Tracks a tool added get ids above every id the clip has had, so none takes the id of
    # a track the reviewer deleted.
    from tasks.track.review_store import load_review

    stored = load_review(out, record)
    ids = baseline["track_id"].to_pylist() + (stored.keyframes["track_id"].to_pylist() if stored else [])
    clip = dataclasses.replace(clip_info(out, record), new_track_ids_from=max(ids, default=0) + 1)
    reviewed = read_reviewed(data, fmt, clip, _labels(out, recipe, baseline), recipe.review.limits)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"the result is not UTF-8 text: {e}") from e
    return diff_review(baseline, reviewed, clip.frames, payload.get("track_ids"),
                       names_clip=_names_clip(data, fmt, clip))


def _names_clip(data: bytes, fmt: str, clip) -> bool:
    """Whether the result file names its clip by the clip's stable id (Label Studio tasks)."""
    if fmt != "labelstudio":
        return False
    from tasks.formats.labelstudio import names_clip

    return names_clip(data, clip)


def submit_result(queue, task_id: int, worker: str, data: bytes, fmt: str,
                  recipe: Recipe) -> dict[str, Any]:
    """Validate a reviewer's result, complete the task with it (the queue refuses a worker
    whose lease is gone), record what changed, and write the clip's review file."""
    from tasks.errors import LeaseLost

    task = queue.get(task_id)
    if task.state != "leased" or task.worker != worker:
        raise LeaseLost(f"task {task_id} is {task.state}"
                        f"{' by ' + task.worker if task.worker and task.state == 'leased' else ''}; "
                        f"worker {worker!r} holds no lease on it")
    try:
        review = validate_result(task.payload, data, fmt, recipe)
    except NotReviewedError as e:
        if not e.skipped:
            raise
        return skipped_result(queue, task, worker, str(e), recipe)
    result = {"format": fmt, "sha256": hashlib.sha256(data).hexdigest(),
              "data": data.decode("utf-8"), "scope": list(review.scope),
              "human": human_frames(review), "changes": review.changes}
    queue.complete(task_id, worker, result)
    queue.record(task_id, "changes", review.changes)
    out = open_location(task.payload["out"], recipe.storage)
    record = _record_of(out, task.payload["recording"], int(task.payload["clip_index"]))
    save_review(out, record, review, task_id, task.payload.get("track_key"))
    return {"task": task_id, "clip": task.payload["clip_name"], "recording": task.payload["recording"],
            "changes": review.changes}


def skipped_result(queue, task, worker: str, reason: str, recipe: Recipe) -> dict[str, Any]:
    """A task its reviewer skipped: released for another reviewer or failed with the reason
    (``review.on_skipped``); nothing is applied to the clip."""
    if recipe.review.on_skipped == "fail":
        queue.fail(task.id, worker, reason)
    else:
        queue.release(task.id, worker)
    queue.record(task.id, "skipped", {"reason": reason, "queue": recipe.review.on_skipped})
    return {"task": task.id, "clip": task.payload["clip_name"],
            "recording": task.payload["recording"], "skipped": reason,
            "queue": "released" if recipe.review.on_skipped == "release" else "failed"}


def rebuild_reviews(queue, recipe: Recipe, out_uri: str | None = None) -> dict[str, Any]:
    """Write every clip's review file again from the results the queue holds (after a crash
    between completion and the file, or when ``OUT/reviews`` was lost). Results are applied in
    completion order, as they were."""
    started = time.perf_counter()
    done = list(tasks_in_state(queue, "done"))
    done.sort(key=lambda t: (_completed_at(queue, t.id), t.id))
    applied = 0
    for task in done:
        if out_uri and task.payload["out"].rstrip("/") != out_uri.rstrip("/"):
            continue
        result = queue.result(task.id)
        if not result or "data" not in result:
            continue
        out = open_location(task.payload["out"], recipe.storage)
        record = _record_of(out, task.payload["recording"], int(task.payload["clip_index"]))
        from tasks.export.stage import clip_info

        reviewed = read_reviewed(result["data"].encode("utf-8"), result["format"],
                                 clip_info(out, record))
        review = replay_review(reviewed, result["human"], result["scope"], result["changes"])
        save_review(out, record, review, task.id, task.payload.get("track_key"))
        applied += 1
    return {"results": applied, "seconds": round(time.perf_counter() - started, 3)}


def _completed_at(queue, task_id: int):
    return max((h["at"] for h in queue.history(task_id) if h["event"] == "completed"), default=None)


def tasks_in_state(queue, state: str):
    """Every task in ``state``, a page at a time."""
    offset = 0
    while True:
        page = queue.list(state=state, limit=500, offset=offset)
        yield from page
        if len(page) < 500:
            return
        offset += 500
