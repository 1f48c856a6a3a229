"""The pipeline's side of the review queue: which queue (`queue_url`, checked before any
work by `check_queue`), and the review tasks of exported clips, with the priority the recipe
computes (`tasks.review.priority`) and the URIs reviewers need: per clip as soon as it is
exported (`enqueue_clip_reviews`), or for a batch (`enqueue_reviews`). A rerun adds none
twice: tasks are keyed by clip (or track). Results come back through
`tasks.review.results`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tasks.store.record import ClipRecord
from tasks.errors import ConfigError
from tasks.recipe import Recipe
from tasks.store.storage import Location, open_location
from tasks.review.priority import measures, priority

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


def task_key(record: ClipRecord, track_id: int | None = None) -> str:
    """One task per clip (or track) ever: the key a rerun finds again."""
    base = f"clip:{record.recording}:{int(record.clip_index)}"
    return base if track_id is None else f"{base}:track:{int(track_id)}"


def review_keys(recipe: Recipe, record: ClipRecord, track_ids: list[int]) -> list[str]:
    """The keys of the clip's review tasks: one for the clip, or one per track."""
    if recipe.review.unit == "clip" or not track_ids:
        return [task_key(record)]
    return [task_key(record, tid) for tid in sorted(track_ids)]


def clip_review_tasks(out: Location, recipe: Recipe, record: ClipRecord, rows: pa.Table,
                      shot_starts: frozenset[int], files: dict[str, list[str]], dataset: str,
                      config: str | None, have: set[str] = frozenset(),
                      ) -> list[tuple[str, float | None, dict[str, Any]]]:
    """(key, priority, payload) per review task of one exported clip: its dense ``rows``,
    the first frames of its shots, its export ``files``. The payload names the WebM, the
    import-ready annotation files and what a result must be applied with (OUT, dataset,
    recipe). A key in ``have`` has a task already and is not measured (a rerun adds
    nothing): its priority is None and its payload only its clip."""
    where = {"recording": record.recording, "clip_index": int(record.clip_index)}
    track_ids = sorted(set(rows["track_id"].to_pylist())) if rows.num_rows else []
    made: list[tuple[str, float | None, dict[str, Any]]] = []
    for key in review_keys(recipe, record, track_ids):
        if key in have:
            made.append((key, None, dict(where)))
            continue
        tid = int(key.rsplit(":", 1)[1]) if ":track:" in key else None
        base = {**where, "clip_name": record.clip_name, "video": record.output_uri,
                "source": record.source_uri,
                "annotations": {f: files[f][0] for f in recipe.review.formats if files.get(f)},
                "out": out.url(out.root), "dataset": dataset, "config": config,
                "track_key": recipe.track_key()}
        mine = rows if tid is None else rows.filter(pc.equal(rows["track_id"], tid))
        measured = measures(mine, frames=record.output_frames,
                            duration_s=record.output_duration_s, shot_starts=shot_starts)
        made.append((key, priority(recipe, measured),
                     {**base, "track_ids": None if tid is None else [tid], "measures": measured}))
    return made


def review_tasks(out: Location, recipe: Recipe, records: list[ClipRecord],
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
        where = (record.recording, int(record.clip_index))
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


def enqueue_reviews(out_uri: str, recipe: Recipe, records: list[ClipRecord],
                    clips: list[dict[str, Any]], dataset: str, config: str | None,
                    url: str | None = None) -> dict[str, Any]:
    """Enqueue the review tasks of the exported ``clips`` (export summaries). A rerun adds
    nothing: tasks are keyed by clip (or track)."""
    files = {(c["recording"], int(c["clip_index"])): c["files"] for c in clips}
    return _enqueue(out_uri, recipe, url, lambda out, known: review_tasks(
        out, recipe, records, files, dataset, config, known))


def enqueue_clip_reviews(out_uri: str, recipe: Recipe, record: ClipRecord,
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
