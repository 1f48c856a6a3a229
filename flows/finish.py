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
from flows.runtime import gather, stage_limit, submit_unless_found
from tasks import progress
from tasks.detect.stage import converted_records
from tasks.store.items import is_converted
from tasks.store.record import ClipRecord
from tasks.export.stage import exported_before_uri

if TYPE_CHECKING:
    from flows.job import ClipRun, Job


def finish_recording(job: "Job", runs: list["ClipRun"]) -> dict[str, Any]:
    from flows.look_ahead import settle_ledgers

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
    detected = [by_uri[rec.source_uri].detected for rec in ready]
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
    finished = [by_uri[rec.source_uri].tracked for rec in ready]
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
    tracked = [by_uri[rec.source_uri] for rec in ready if by_uri[rec.source_uri].tracked]
    summary["compact"] = {**units.merge_keyframes(
        job.out, job.recipe, quote([r.compacted for r in tracked if r.compacted]), quote(items),
        job.max_error_px, job.min_iou), "failed": [f for r in runs for f in r.failed["compact"]]}
    if not job.reaches("export"):
        return summary
    done = [r for r in tracked if r.compacted]
    return {**summary, **export_all(job, [r.record for r in done], [r.compacted for r in done],
                                    done)}


def export_all(job: "Job", records: list[ClipRecord],
               compacted: list[dict[str, Any] | None],
               runs: list["ClipRun"] | None = None) -> dict[str, Any]:
    """Spans to frame labels (given a spans file), the exports the clips' chains did not
    write (formats that need every clip: MOT numbers classes by the labels of the whole
    run), the combined files, and the review tasks not enqueued by the chains. ``runs``: the
    clips' chains, in the order of ``records`` (None when exporting a tracks table)."""
    logger = get_run_logger()
    recipe, out = job.recipe, job.out
    formats = job.all_formats()
    spans = job.spans or recipe.export.spans
    span_summary = units.spans_to_frames(out, recipe, spans) if spans else None
    runs = runs or [None] * len(records)
    labels = sorted({label for c in compacted if c for label in c["labels"]})
    watching = progress.current()
    if watching:
        watching.expect("compact", [])
        watching.expect("export", [r.source_uri for r in records])
    calls = [(r, out, recipe, formats, c, labels) for r, c in zip(records, compacted)]
    futures = submit_unless_found(units.export_clip, calls,
                                  stage_limit(recipe, recipe.run.max_parallel_clips),
                                  exported_before_uri(out, recipe, records, formats, compacted,
                                                      labels))
    failed = [f for r in runs if r for f in r.failed["export"]]

    def export_failed(unit, e: BaseException) -> None:
        record = unit[0]
        logger.error("export %s failed: %s", record.output_uri, e)
        failed.append({"clip": record.output_uri, "error": f"{type(e).__name__}: {e}"})

    clips = []
    for (record, run), clip in gather(list(zip(records, runs)), futures, export_failed):
        if run is not None and run.exported is not None:  # what its chain wrote counts too
            clip = {**clip, "written": sorted({*clip["written"], *run.exported["written"]})}
        clips.append(clip)
        if watching:
            watching.finish("export", record.source_uri)
    files = units.finish_exports(out, recipe, formats, quote(clips))
    review = None
    if recipe.review.enqueue:
        review = _reviews(job, records, runs, clips, failed)
    return {"spans": span_summary, "review": review, "export": {
        "formats": formats, "clips": len(clips), "failed": failed,
        "unchanged": sum(not c["written"] for c in clips),
        "files": sum(len(v) for c in clips for v in c["files"].values()) +
        sum(len(v) for v in files.values()), "combined": files}}


def _reviews(job: "Job", records: list[ClipRecord], runs: list, clips: list[dict[str, Any]],
             failed: list[dict[str, str]]) -> dict[str, Any] | None:
    """The review summary: the chains' tasks, and one task enqueueing those of the exported
    clips no chain enqueued (a tracks table's clips)."""
    from tasks.review.handoff import queue_url

    recipe = job.recipe
    exported = {(c["recording"], int(c["clip_index"])) for c in clips}
    parts, leftover = [], []
    for record, run in zip(records, runs):
        where = (record.recording, int(record.clip_index))
        if run is not None and run.failed["review"]:
            failed.extend(run.failed["review"])
        elif run is not None and run.reviewed is not None:
            parts.append((where, run.reviewed))
        elif where in exported:
            leftover.append(record)
    if leftover:
        try:
            batch = units.enqueue_review(job.out, recipe, quote(leftover), quote(
                [c for c in clips if (c["recording"], int(c["clip_index"])) in
                 {(r.recording, int(r.clip_index)) for r in leftover}]), job.uri,
                os.path.abspath(job.config) if job.config else None)
            parts.extend(((rec, int(i)), {"tasks": n, "new": 0}) for rec, i, n in
                         batch.get("per_clip", []))
            if batch.get("skipped"):
                return batch
            parts.append((None, {"tasks": 0, "new": batch["new"]}))
        except Exception as e:  # the exports are written; the queue is reported, not fatal
            get_run_logger().error("enqueueing review tasks failed: %s", e)
            failed.append({"unit": "review queue", "error": f"{type(e).__name__}: {e}"})
    skipped = [p for _, p in parts if p.get("skipped")]
    if skipped:
        return {"queue": None, "tasks": 0, "new": 0, "unit": recipe.review.unit,
                "skipped": skipped[0]["skipped"]}
    if not parts and any(f.get("unit") == "review queue" for f in failed):
        return None
    return {"queue": queue_url(recipe, job.out), "tasks": sum(p["tasks"] for _, p in parts),
            "new": sum(p["new"] for _, p in parts), "unit": recipe.review.unit,
            "per_clip": [[w[0], w[1], p["tasks"]] for w, p in sorted(
                (w, p) for w, p in parts if w is not None)]}
