"""Flow `detect`: convert what is not converted yet, then one task per converted clip.

Clips that are blocked are skipped; a clip whose detection fails is reported and the batch
goes on (it is redone on the next run, as nothing was recorded for it).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.utilities.annotations import quote

from flows.convert import _io, convert_stage
from flows.runners import (keep_answers, one_writer, run_command, stage_limit,
                           submit_unless_done)
from tasks import progress
from tasks.detect import (converted_records, detect_clip_uri, detect_ledger, detected_before_uri,
                          is_converted, make_detector, write_detections_uri)
from tasks.recipe import Recipe, load_recipe

detect_clip = task(detect_clip_uri, name="detect", task_run_name="detect {record[clip_name]}", **_io)
write_detections = task(write_detections_uri, name="write-detections", **_io)


def detect_stage(uri: str, out: str, recipe: Recipe) -> dict[str, Any]:
    """Convert what is not converted yet, then detections for every converted clip into
    ``out/detections.parquet``: one task per clip, within the current flow."""
    logger = get_run_logger()
    make_detector(recipe)  # a bad backend or option fails here, before any clip
    converted = convert_stage(uri, out, recipe)
    records = converted_records(out, recipe)
    todo = [r for r in records if is_converted(r)]
    watching = progress.current()
    if watching:
        watching.expect("detect", [r["source_uri"] for r in todo])
    calls = [(r, out, recipe) for r in todo]
    ledger = detect_ledger(todo, out, recipe)
    futures = submit_unless_done(detect_clip, calls,
                                 stage_limit(recipe, recipe.run.max_parallel_clips),
                                 detected_before_uri, ledger)
    summaries, failed = [], []
    for record, future in zip(todo, futures):
        try:
            summaries.append(future.result())
        except Exception as e:  # the batch goes on; nothing was recorded, so it is redone
            logger.error("detect %s failed: %s", record["output_uri"], e)
            failed.append({"clip": record["output_uri"], "error": f"{type(e).__name__}: {e}"})
        if watching:
            watching.finish("detect", record["source_uri"])
    keep_answers(ledger, detected_before_uri, calls, futures)
    detections_uri = write_detections(out, recipe, quote(summaries), quote(records))
    return {"convert": converted, "detect": {
        "clips": len(todo), "detected": sum(s["status"] == "detected" for s in summaries),
        "skipped": sum(s["status"] == "skipped" for s in summaries),
        "detections": sum(int(s.get("detections") or 0) for s in summaries),
        "failed": failed, "detections_uri": detections_uri}}


@flow(name="preannotate-detect", log_prints=True)
def detect_flow(uri: str, out: str, config: str | None = None) -> dict[str, Any]:
    """Detections for every converted clip under ``uri`` into ``out/detections.parquet``."""
    recipe = load_recipe(config)
    with one_writer(out, recipe, "preannotate detect"):
        return detect_stage(uri, out, recipe)


def run_detect(uri: str, out: str, config: str | None) -> dict[str, Any]:
    recipe = load_recipe(config)  # a bad recipe or backend fails before Prefect starts
    make_detector(recipe)
    return run_command(detect_flow, recipe, uri=uri, out=out, config=config)
