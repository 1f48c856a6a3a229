"""The recording-level finish of the DAG (`flows.run`): what needs every clip, in clip order.

The items table (each clip's place and global first frame), the merged detections and
tracks with global frames, the keyframes, the exports of every clip with their combined
files (Label Studio's task list and config), and the review tasks. Each part is a task that
rewrites its output only when its inputs changed.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from prefect import get_run_logger
from prefect.utilities.annotations import quote

from flows import units
from flows.runners import stage_limit, submit_unless_found
from tasks import progress
from tasks.detect import converted_records, is_converted
from tasks.export import exported_before_uri, parse_formats

if TYPE_CHECKING:
    from flows.run import ClipRun, Job


def finish_recording(job: "Job", runs: list["ClipRun"]) -> dict[str, Any]:
    from flows.lanes import settle_ledgers

    logger = get_run_logger()
    watching = progress.current()
    converted = units.write_items(job.out, job.recipe, quote([r.record for r in runs]))
    for line in converted.lines():
        logger.info(line)
    items = converted_records(job.out, job.recipe)
    settle_ledgers(job, runs, items)
    if not job.reaches("detect"):
        return converted.to_dict()
    summary: dict[str, Any] = {"convert": converted.to_dict()}
    by_uri = {r.uri: r for r in runs}
    ready = [rec for rec in items if is_converted(rec)]
    if watching:
        watching.expect("detect", [])
    detected = [by_uri[rec["source_uri"]].detected for rec in ready]
    summaries = [d for d in detected if d is not None]
    summary["detect"] = {
        "clips": len(ready), "detected": sum(s["status"] == "detected" for s in summaries),
        "skipped": sum(s["status"] == "skipped" for s in summaries),
        "detections": sum(int(s.get("detections") or 0) for s in summaries),
        "failed": [f for r in runs for f in r.failed["detect"]],
        "detections_uri": units.write_detections(job.out, job.recipe, quote(summaries),
                                                 quote(items))}
    if not job.reaches("track"):
        return summary
    if watching:
        watching.expect("track", [])
    finished = [by_uri[rec["source_uri"]].tracked for rec in ready]
    finished = [f for f in finished if f is not None]
    tracks = [f["tracks"] for f in finished]
    summary["track"] = {
        "clips": len(tracks), "reused": sum(bool(s.get("reused")) for s in tracks),
        "objects": sum(s["objects"] for s in tracks), "rows": sum(s["rows"] for s in tracks),
        "failed": [f for r in runs for f in r.failed["track"]],
        "tracks_uri": units.write_tracks(job.out, job.recipe, quote(tracks), quote(items),
                                         job.track_key),
        "reviews_applied": [f["review"] for f in finished
                            if f["review"] is not None and f["review"]["status"] == "applied"]}
    if not job.reaches("compact"):
        return summary
    summary["compact"] = units.compact_tracks(summary["track"]["tracks_uri"], job.out, job.recipe,
                                              job.max_error_px, job.min_iou)
    if not job.reaches("export"):
        return summary
    return {**summary, **export_all(job, ready)}


def export_all(job: "Job", records: list[dict[str, Any]]) -> dict[str, Any]:
    """Spans to frame labels (given a spans file), every converted clip's exports in the
    asked formats (one task per clip with something to write), the combined files, and the
    review tasks (one per clip or track, keyed so that a rerun adds none twice)."""
    logger = get_run_logger()
    recipe, out = job.recipe, job.out
    formats = parse_formats(job.formats or recipe.export.formats)
    spans = job.spans or recipe.export.spans
    span_summary = units.spans_to_frames(out, recipe, spans) if spans else None
    watching = progress.current()
    if watching:  # compaction ran over every clip at once
        for r in records:
            watching.finish("compact", r["source_uri"])
        watching.expect("export", [r["source_uri"] for r in records])
    calls = [(r, out, recipe, formats) for r in records]
    futures = submit_unless_found(units.export_clip, calls,
                                  stage_limit(recipe, recipe.run.max_parallel_clips),
                                  exported_before_uri(out, recipe, records, formats))
    clips, failed = [], []
    for record, future in zip(records, futures):
        try:
            clips.append(future.result())
        except Exception as e:  # reported; the other clips are exported
            logger.error("export %s failed: %s", record["output_uri"], e)
            failed.append({"clip": record["output_uri"], "error": f"{type(e).__name__}: {e}"})
        if watching:
            watching.finish("export", record["source_uri"])
    files = units.finish_exports(out, recipe, formats, quote(clips))
    review = None
    if recipe.review.enqueue:
        try:
            review = units.enqueue_review(out, recipe, quote(records), quote(clips), job.uri,
                                          os.path.abspath(job.config) if job.config else None)
        except Exception as e:  # the exports are written; the queue is reported, not fatal
            logger.error("enqueueing review tasks failed: %s", e)
            failed.append({"unit": "review queue", "error": f"{type(e).__name__}: {e}"})
    return {"spans": span_summary, "review": review, "export": {
        "formats": formats, "clips": len(clips), "failed": failed,
        "unchanged": sum(not c["written"] for c in clips),
        "files": sum(len(v) for c in clips for v in c["files"].values()) +
        sum(len(v) for v in files.values()), "combined": files}}
