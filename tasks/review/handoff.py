"""The pipeline's side of the review queue: review tasks made after export, with a priority
the recipe computes and the URIs reviewers need (`review_tasks`, `enqueue_reviews`), and a
reviewer's result validated, stored, and turned into the clip's review (`submit_result`,
`rebuild_reviews`).

Order matters for "nothing written on bad input, nothing lost on a crash": a result is fully
validated before anything is written; then the queue stores it with the completion, in one
transaction (the queue is the record of results); the clip's review file in ``OUT/reviews/``
is derived from the stored results, so `rebuild_reviews` can always make it again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.errors import ConfigError, FormatError
from tasks.recipe import Recipe
from tasks.track.corrections import Review, diff_review, human_frames, replay_review
from tasks.track.review_store import save_review
from tasks.track.review_read import read_reviewed
from tasks.store.storage import Location, open_location

QUEUE_FILE = "review.db"


def queue_url(recipe: Recipe, out_uri: str, url: str | None = None) -> str:
    """The queue: ``url``, else the recipe's ``review.db``, else ``sqlite:///OUT/review.db``
    (OUT must then be a local folder: SQLite cannot live in an object store)."""
    chosen = url or recipe.review.db
    if chosen:
        return chosen
    out = open_location(out_uri, recipe.storage)
    if not out.is_local:
        raise ConfigError(f"OUT {out_uri} is not a local folder, so the review queue cannot be "
                          "an SQLite file in it: set review.db (e.g. postgresql://...) or --db")
    import os

    return f"sqlite:///{os.path.abspath(os.path.join(out.root, QUEUE_FILE))}"


def open_queue(recipe: Recipe, out_uri: str, url: str | None = None):
    import os

    from tasks.review import ReviewQueue

    chosen = queue_url(recipe, out_uri, url)
    if chosen.startswith("sqlite:///") and not (url or recipe.review.db):
        os.makedirs(os.path.dirname(chosen[len("sqlite:///"):]), exist_ok=True)
    return ReviewQueue(chosen, max_attempts=recipe.review.max_attempts)


def check_queue(recipe: Recipe, out_uri: str) -> str | None:
    """Open the recipe's review queue once before any work, so a queue that cannot work (a
    missing folder, an unreachable server, bad credentials) is refused at the start rather
    than after the whole pipeline ran. Returns why no queue will be used, or None."""
    if not recipe.review.enqueue:
        return None
    out = open_location(out_uri, recipe.storage)
    if not recipe.review.db:
        if not out.is_local:
            return NO_QUEUE_IN_BUCKET
        return None  # OUT/review.db: made with OUT, nothing to check
    from tasks.errors import QueueError

    try:
        queue = open_queue(recipe, out_uri)
        try:
            queue.stats()
        finally:
            queue.close()
    except QueueError as e:
        raise ConfigError(f"review.db: {e}") from None
    return None


NO_QUEUE_IN_BUCKET = ("OUT is not a local folder and review.db is not set, so no review tasks "
                      "are made (SQLite cannot live in a bucket): set review.db to a "
                      "postgresql:// URL or a local sqlite:/// file")


# --- making tasks -------------------------------------------------------------------------------


def task_key(record: dict[str, Any], track_id: int | None = None) -> str:
    """One task per clip (or track) ever: the key a rerun finds again."""
    base = f"clip:{record['recording']}:{int(record['clip_index'])}"
    return base if track_id is None else f"{base}:track:{int(track_id)}"


def measures(tracks: pa.Table, frames: int | None = None, duration_s: float | None = None,
             shot_starts: frozenset[int] = frozenset()) -> dict[str, float]:
    """What the priority is computed from, for the dense rows of one clip or track: mean score
    of the visible machine boxes, tracks lost at least once, longest hidden range (s),
    tracks, visible machine boxes, and breaks per minute: places where a track starts, ends
    or is lost inside a shot (``frames``, ``duration_s`` and the first frames of the clip's
    shots, ``shot_starts``, tell where a shot begins and ends)."""
    if tracks.num_rows == 0:
        return {"mean_score": 1.0, "lost_tracks": 0, "hidden_s": 0.0, "tracks": 0, "boxes": 0,
                "breaks_per_min": 0.0}
    tracks = tracks.sort_by([("track_id", "ascending"), ("frame", "ascending")])
    hidden = tracks["hidden"].to_numpy(zero_copy_only=False)
    machine = pc.is_in(tracks["source"], pa.array(["tracker", "detector"])).to_numpy(
        zero_copy_only=False) & ~hidden
    scores = tracks["score"].to_numpy(zero_copy_only=False)
    mean = float(scores[machine].mean()) if machine.any() else 1.0
    ids = tracks["track_id"].to_numpy()
    times = pc.fill_null(tracks["time_s"], np.nan).to_numpy(zero_copy_only=False)
    longest, lost = 0.0, set()
    # Hidden runs: from the first hidden frame to the next visible one of the same track.
    run_start = None
    for i in range(len(hidden)):
        new_track = i == 0 or ids[i] != ids[i - 1]
        if new_track and run_start is not None:
            longest = max(longest, times[i - 1] - times[run_start])
            run_start = None
        if hidden[i]:
            lost.add(int(ids[i]))
            if run_start is None:
                run_start = i
        elif run_start is not None:
            longest = max(longest, times[i] - times[run_start])
            run_start = None
    if run_start is not None:
        longest = max(longest, times[len(hidden) - 1] - times[run_start])
    frame = tracks["frame"].to_numpy()
    breaks = _breaks(frame, ids, hidden, frames or int(frame.max()) + 1, shot_starts)
    minutes = (duration_s or float(np.nanmax(times) - np.nanmin(times)) or 1.0) / 60
    return {"mean_score": round(mean, 4), "lost_tracks": len(lost),
            "hidden_s": round(float(np.nan_to_num(longest)), 3), "tracks": len(set(ids.tolist())),
            "boxes": int(machine.sum()), "breaks_per_min": round(breaks / max(minutes, 1 / 60), 3)}


def _breaks(frames: np.ndarray, ids: np.ndarray, hidden: np.ndarray, frame_count: int,
            shot_starts: frozenset[int]) -> int:
    """Track starts and ends that are not a shot's edges, plus hidden runs, over all tracks
    (rows sorted by track, then frame)."""
    starts = set(shot_starts) | {0}
    ends = {s - 1 for s in shot_starts} | {frame_count - 1}
    count = 0
    edges = np.flatnonzero(np.diff(ids)) + 1
    for lo, hi in zip(np.concatenate([[0], edges]), np.concatenate([edges, [len(ids)]])):
        visible = np.flatnonzero(~hidden[lo:hi])
        if not len(visible):
            continue
        count += int(frames[lo + visible[0]] not in starts)
        count += int(frames[lo + visible[-1]] not in ends)
        gaps = np.diff(hidden[lo:hi].astype(np.int8))
        count += int((gaps == 1).sum()) - int(hidden[hi - 1])  # hidden runs inside the track
    return count


def priority(recipe: Recipe, measured: dict[str, float]) -> float:
    w = recipe.review.priority
    return round(w.base + w.low_confidence * (1 - measured["mean_score"]) +
                 w.lost_tracks * measured["lost_tracks"] + w.hidden_s * measured["hidden_s"] +
                 w.tracks * measured["tracks"] +
                 w.no_boxes * (measured.get("boxes", 1) == 0) +
                 w.breaks * measured.get("breaks_per_min", 0.0), 6)


def review_keys(recipe: Recipe, record: dict[str, Any], track_ids: list[int]) -> list[str]:
    """The keys of the clip's review tasks: one for the clip, or one per track."""
    if recipe.review.unit == "clip" or not track_ids:
        return [task_key(record)]
    return [task_key(record, tid) for tid in sorted(track_ids)]


def clip_review_tasks(out: Location, recipe: Recipe, record: dict[str, Any], rows: pa.Table,
                      shot_starts: frozenset[int], files: dict[str, list[str]], dataset: str,
                      config: str | None, have: set[str] = frozenset(),
                      ) -> list[tuple[str, float | None, dict[str, Any]]]:
    """(key, priority, payload) per review task of one exported clip: its dense ``rows``,
    the first frames of its shots, its export ``files``. The payload names the WebM, the
    import-ready annotation files and what a result must be applied with (OUT, dataset,
    recipe). A key in ``have`` has a task already and is not measured (a rerun adds
    nothing): its priority is None and its payload only its clip."""
    where = {"recording": record["recording"], "clip_index": int(record["clip_index"])}
    track_ids = sorted(set(rows["track_id"].to_pylist())) if rows.num_rows else []
    made: list[tuple[str, float | None, dict[str, Any]]] = []
    for key in review_keys(recipe, record, track_ids):
        if key in have:
            made.append((key, None, dict(where)))
            continue
        tid = int(key.rsplit(":", 1)[1]) if ":track:" in key else None
        base = {**where, "clip_name": record["clip_name"], "video": record["output_uri"],
                "source": record["source_uri"],
                "annotations": {f: files[f][0] for f in recipe.review.formats if files.get(f)},
                "out": out.url(out.root), "dataset": dataset, "config": config,
                "track_key": recipe.track_key()}
        mine = rows if tid is None else rows.filter(pc.equal(rows["track_id"], tid))
        measured = measures(mine, frames=record.get("output_frames"),
                            duration_s=record.get("output_duration_s"), shot_starts=shot_starts)
        made.append((key, priority(recipe, measured),
                     {**base, "track_ids": None if tid is None else [tid], "measures": measured}))
    return made


def review_tasks(out: Location, recipe: Recipe, records: list[dict[str, Any]],
                 files: dict[tuple[str, int], dict[str, list[str]]], dataset: str,
                 config: str | None, known: Callable[[list[str]], set[str]] = lambda keys: set(),
                 ) -> list[tuple[str, float | None, dict[str, Any]]]:
    """`clip_review_tasks` of every exported clip in ``records``, from the merged tracks and
    shots tables (one `known` query for all of them)."""
    from tasks.detect.shots import SHOTS_FILE
    from tasks.store.tables import clip_slices, read_table
    from tasks.track.state import TRACKS_FILE

    tracks = read_table(out, out.path(TRACKS_FILE))
    shots = read_table(out, out.path(SHOTS_FILE))
    track_rows = clip_slices(tracks, views=True) if tracks is not None else {}
    shot_rows = clip_slices(shots, views=True) if shots is not None else {}
    no_rows = tracks.slice(0, 0) if tracks is not None else pa.table({})
    clips = []
    for record in records:
        where = (record["recording"], int(record["clip_index"]))
        if where in files:
            clips.append((record, where, track_rows.get(where, no_rows)))
    have = known([key for record, _, rows in clips for key in review_keys(
        recipe, record, sorted(set(rows["track_id"].to_pylist())) if rows.num_rows else [])])
    return [task for record, where, rows in clips for task in clip_review_tasks(
        out, recipe, record, rows, _shot_starts(shot_rows.get(where)), files[where], dataset,
        config, have)]


def _shot_starts(mine: pa.Table | None) -> frozenset[int]:
    """The first frames of a clip's shots (its rows of the shots table)."""
    return frozenset(mine["first_frame"].to_pylist()) if mine is not None else frozenset()


def _enqueue(out_uri: str, recipe: Recipe, url: str | None, make) -> dict[str, Any]:
    """Tasks from ``make(queue.known)``, enqueued; what was made and how many are new."""
    out = open_location(out_uri, recipe.storage)
    if not (url or recipe.review.db) and not out.is_local:
        return {"queue": None, "tasks": 0, "new": 0, "unit": recipe.review.unit,
                "skipped": NO_QUEUE_IN_BUCKET}
    queue = open_queue(recipe, out_uri, url)
    try:
        made = make(out, queue.known)
        before = queue.stats()["total"]
        queue.enqueue_many([task for task in made if task[1] is not None])
        after = queue.stats()["total"]
    finally:
        queue.close()
    per_clip: dict[tuple[str, int], int] = {}
    for _, _, payload in made:
        where = (payload["recording"], int(payload["clip_index"]))
        per_clip[where] = per_clip.get(where, 0) + 1
    return {"queue": queue_url(recipe, out_uri, url), "tasks": len(made), "new": after - before,
            "unit": recipe.review.unit,
            "per_clip": [[rec, index, n] for (rec, index), n in sorted(per_clip.items())]}


def enqueue_reviews(out_uri: str, recipe: Recipe, records: list[dict[str, Any]],
                    clips: list[dict[str, Any]], dataset: str, config: str | None,
                    url: str | None = None) -> dict[str, Any]:
    """Enqueue the review tasks of the exported ``clips`` (export summaries). A rerun adds
    nothing: tasks are keyed by clip (or track)."""
    files = {(c["recording"], int(c["clip_index"])): c["files"] for c in clips}
    return _enqueue(out_uri, recipe, url, lambda out, known: review_tasks(
        out, recipe, records, files, dataset, config, known))


def enqueue_clip_reviews(out_uri: str, recipe: Recipe, record: dict[str, Any],
                         files: dict[str, list[str]], shot_starts: list[int], dataset: str,
                         config: str | None, track_key: str) -> dict[str, Any]:
    """Enqueue one clip's review tasks as soon as it is exported (``files``), measured on
    its tracks (with its review applied) and shots. A rerun adds nothing."""
    from tasks.store.tables import with_attributes
    from tasks.track.assemble import clip_tracks

    def make(out: Location, known) -> list:
        rows = clip_tracks(out, record, track_key)
        rows = with_attributes(rows) if rows is not None else pa.table({
            "track_id": pa.array([], pa.int64())})
        keys = review_keys(recipe, record, sorted(set(rows["track_id"].to_pylist())))
        return clip_review_tasks(out, recipe, record, rows, frozenset(shot_starts), files,
                                 dataset, config, known(keys))

    return _enqueue(out_uri, recipe, None, make)


# --- results ------------------------------------------------------------------------------------


def _record_of(out: Location, recording: str, clip_index: int) -> dict[str, Any]:
    from tasks.store.items import read_items

    items = read_items(out)
    if items is not None:
        for record in items.to_pylist():
            if record["recording"] == recording and int(record["clip_index"]) == clip_index:
                return record
    raise ConfigError(f"{out.url(out.root)} has no clip {clip_index} of recording {recording!r}")


def _labels(out: Location, recipe: Recipe, baseline: pa.Table) -> set[str] | None:
    """Labels a result may use: the label tree's when the recipe has one, else any."""
    if not recipe.labels.file:
        return None
    from tasks.labels import load_label_tree

    return set(load_label_tree(recipe.labels.file).paths) | set(baseline["label"].to_pylist())


def current_keyframes(out: Location, record: dict[str, Any]) -> pa.Table:
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
    return diff_review(baseline, reviewed, clip.frames, payload.get("track_ids"))


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
    review = validate_result(task.payload, data, fmt, recipe)
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


def rebuild_reviews(queue, recipe: Recipe, out_uri: str | None = None) -> dict[str, Any]:
    """Write every clip's review file again from the results the queue holds (after a crash
    between completion and the file, or when ``OUT/reviews`` was lost). Results are applied in
    completion order, as they were."""
    started = time.perf_counter()
    done = [t for t in _all(queue, "done")]
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


def _all(queue, state: str):
    offset = 0
    while True:
        page = queue.list(state=state, limit=500, offset=offset)
        yield from page
        if len(page) < 500:
            return
        offset += 500
