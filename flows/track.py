"""Flow `track`: detect what is not detected yet, then plan each clip's objects and run one
task per object (its chunks run in order inside it, each persisted), concurrently across
objects and clips through the task runner."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.utilities.annotations import quote

from flows.convert import _io
from flows.detect import detect_stage
from flows.runners import (Done, keep_answers, look_up, one_writer, run_command, stage_limit,
                           submit_bounded)
from tasks import progress
from tasks.detect import converted_records, is_converted, make_detector
from tasks.recipe import Recipe, load_recipe
from tasks.storage import open_location
from tasks.track import (finish_clip_uri, load_keyframes, plan_clip_uri, run_object_uri, track_key,
                         track_ledger, tracked_before_uri, write_tracks_uri)
from tasks.errors import ReviewStorageError

plan_clip = task(plan_clip_uri, name="plan-objects", task_run_name="plan {record[clip_name]}", **_io)
run_object = task(run_object_uri, name="track-object",
                  task_run_name="track {record[clip_name]} #{track_id}", **_io)
# The clip's tracks table, then its reviewer's corrections (a no-op without a review).
finish_clip = task(finish_clip_uri, name="clip-tracks",
                   task_run_name="tracks table + review {record[clip_name]}", **_io)
write_tracks = task(write_tracks_uri, name="write-tracks", **_io)


def track_stage(uri: str, out: str, recipe: Recipe, keyframes: str | None = None) -> dict[str, Any]:
    """Detect what is not detected yet, plan each clip's objects and run one task per object
    (``track.max_parallel`` at once; its chunks run in order inside it, each persisted),
    within the current flow."""
    logger = get_run_logger()
    digest = load_keyframes(keyframes, open_location(out, recipe.storage))[1] if keyframes else None
    key = track_key(recipe, digest)
    detected = detect_stage(uri, out, recipe)
    broken = {f["clip"] for f in detected["detect"]["failed"]}
    records = converted_records(out, recipe)
    todo = [r for r in records if is_converted(r) and r["output_uri"] not in broken]
    failed: list[dict[str, str]] = []
    watching = progress.current()
    if watching:
        watching.expect("track", [r["source_uri"] for r in todo])

    def settle_error(e: BaseException, what: str, record: dict[str, Any]) -> None:
        logger.error("%s failed: %s", what, e)  # reported; the other objects and clips go on
        failed.append({"unit": what, "clip": record["output_uri"],
                       "error": f"{type(e).__name__}: {e}"})

    def settle(future, what: str, record: dict[str, Any]):
        try:
            return future.result()
        except Exception as e:
            settle_error(e, what, record)
            return None

    clips_at_once = stage_limit(recipe, recipe.run.max_parallel_clips)
    # A clip with nothing left to do (planned, assembled, its review applied) runs no task.
    calls = [(r, out, recipe, key) for r in todo]
    ledger = track_ledger(todo, out, recipe, key)
    found = look_up(tracked_before_uri, calls, ledger=ledger)
    done = {r["output_uri"]: Done(f) for r, f in zip(todo, found) if f is not None}
    fresh = [r for r in todo if r["output_uri"] not in done]
    planned = submit_bounded(plan_clip, [(r, out, recipe, keyframes, key) for r in fresh],
                             clips_at_once)
    plans = [settle(f, f"plan {r['output_uri']}", r) for r, f in zip(fresh, planned)]
    units = [(r, tid) for r, p in zip(fresh, plans) if p for tid in p["objects"]]
    futures = submit_bounded(run_object, [(r, out, recipe, key, tid) for r, tid in units],
                             stage_limit(recipe, recipe.track.max_parallel))
    broken_clips: set[str] = set()
    for (record, tid), future in zip(units, futures):
        if settle(future, f"track {record['output_uri']} #{tid}", record) is None:
            broken_clips.add(record["output_uri"])
    ready = [(r, p) for r, p in zip(fresh, plans) if p and r["output_uri"] not in broken_clips]
    futures = submit_bounded(finish_clip, [(r, out, recipe, key, p["objects"]) for r, p in ready],
                             clips_at_once)
    done.update((r["output_uri"], f) for (r, _), f in zip(ready, futures))
    summaries, applied = [], []
    for record, future in ((r, done[r["output_uri"]]) for r in todo if r["output_uri"] in done):
        try:
            finished = future.result()
        except ReviewStorageError as e:  # its table is assembled: the machine's tracks stand
            finished = {"tracks": e.tracks, "review": None, "review_error": f"StorageError: {e}"}
        except Exception as e:
            settle_error(e, f"assemble {record['output_uri']}", record)
            continue
        summary, reviewed = finished["tracks"], finished["review"]
        if finished["review_error"]:  # reported; the clip keeps its machine tracks
            what = f"apply review {record['output_uri']}"
            logger.error("%s failed: %s", what, finished["review_error"])
            failed.append({"unit": what, "clip": record["output_uri"],
                           "error": finished["review_error"]})
        if reviewed is not None and reviewed["status"] == "applied":
            applied.append(reviewed)
        summaries.append(summary)
        if watching:
            watching.finish("track", record["source_uri"])
    keep_answers(ledger, tracked_before_uri, calls, [
        Done(f) if f is not None else None for f in found])
    tracks_uri = write_tracks(out, recipe, quote(summaries), quote(records), key)
    return {**detected, "track": {
        "clips": len(summaries), "reused": sum(bool(s.get("reused")) for s in summaries),
        "objects": sum(s["objects"] for s in summaries),
        "rows": sum(s["rows"] for s in summaries), "failed": failed, "tracks_uri": tracks_uri,
        "reviews_applied": applied}}


@flow(name="preannotate-track", log_prints=True)
def track_flow(uri: str, out: str, config: str | None = None,
               keyframes: str | None = None) -> dict[str, Any]:
    recipe = load_recipe(config)
    with one_writer(out, recipe, "preannotate track"):
        return track_stage(uri, out, recipe, keyframes)


def _check_tracker(recipe) -> None:
    from models import registry
    from tasks.errors import ConfigError

    name = recipe.track.tracker
    try:
        create = registry.factory("tracker", name)
    except (ValueError, ImportError) as e:
        raise ConfigError(f"{recipe.source}: track.tracker {name!r}: {e}") from e
    try:
        registry.check_options(create, recipe.track.options)
        create(**recipe.track.options)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{recipe.source}: track.options of tracker {name!r}: {e}") from e


def check_before_start(recipe, out: str, keyframes: str | None) -> None:
    """Bad recipes, backends and keyframes fail before Prefect starts."""
    make_detector(recipe)
    if recipe.track.tracker is not None:
        _check_tracker(recipe)
    if keyframes:
        load_keyframes(keyframes, open_location(out, recipe.storage))


def run_track(uri: str, out: str, config: str | None, keyframes: str | None) -> dict[str, Any]:
    recipe = load_recipe(config)
    check_before_start(recipe, out, keyframes)
    return run_command(track_flow, recipe, uri=uri, out=out, config=config, keyframes=keyframes)
