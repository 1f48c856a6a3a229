"""Flow `export`: compact what is not compacted yet (running the stages before it), turn
time spans into per-frame labels when a spans file is given, then write every converted
clip's keyframes in the asked formats, one task per clip."""

from __future__ import annotations

import os
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.utilities.annotations import quote

from flows.compact import compact_stage, is_table
from flows.convert import _io
from flows.runners import one_writer, run_command, stage_limit, submit_unless_found
from flows.track import check_before_start
from tasks import progress
from tasks.detect import converted_records, is_converted
from tasks.export import exported_before_uri, export_clip_uri, finish_uri, parse_formats
from tasks.recipe import Recipe, load_recipe
from tasks.review.handoff import enqueue_reviews
from tasks.spans import frame_labels_uri

export_clip = task(export_clip_uri, name="export-clip",
                   task_run_name="export {record[clip_name]}", **_io)
finish = task(finish_uri, name="export-finish", **_io)
spans_to_frames = task(frame_labels_uri, name="spans-to-frame-labels", **_io)
enqueue_review = task(enqueue_reviews, name="enqueue-review", **_io)


def export_stage(uri: str, out: str, recipe: Recipe, config: str | None = None,
                 formats: list[str] | None = None, spans: str | None = None) -> dict[str, Any]:
    """Every stage up to compaction, then each converted clip's exports (one task per clip)
    and the review tasks, within the current flow."""
    logger = get_run_logger()
    formats = parse_formats(formats or recipe.export.formats)
    upstream = compact_stage(uri, out, recipe)
    spans = spans or recipe.export.spans
    span_summary = spans_to_frames(out, recipe, spans) if spans else None
    records = [r for r in converted_records(out, recipe) if is_converted(r)]
    watching = progress.current()
    if watching:  # compaction ran over every clip at once
        for r in records:
            watching.finish("compact", r["source_uri"])
        watching.expect("export", [r["source_uri"] for r in records])
    calls = [(r, out, recipe, formats) for r in records]
    futures = submit_unless_found(export_clip, calls,
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
    files = finish(out, recipe, formats, quote(clips))
    # One review task per clip (or track), keyed so that a rerun adds none twice.
    review = None
    if recipe.review.enqueue:
        try:
            review = enqueue_review(out, recipe, quote(records), quote(clips), uri,
                                    os.path.abspath(config) if config else None)
        except Exception as e:  # the exports are written; the queue is reported, not fatal
            logger.error("enqueueing review tasks failed: %s", e)
            failed.append({"unit": "review queue", "error": f"{type(e).__name__}: {e}"})
    return {**upstream, "spans": span_summary, "review": review, "export": {
        "formats": formats, "clips": len(clips), "failed": failed,
        "unchanged": sum(not c["written"] for c in clips),
        "files": sum(len(v) for c in clips for v in c["files"].values()) +
        sum(len(v) for v in files.values()), "combined": files}}


@flow(name="preannotate-export", log_prints=True)
def export_flow(uri: str, out: str, config: str | None = None, formats: list[str] | None = None,
                spans: str | None = None) -> dict[str, Any]:
    recipe = load_recipe(config)
    check_review_queue(recipe, out)
    with one_writer(out, recipe, "preannotate export"):
        return export_stage(uri, out, recipe, config, formats, spans)


def check_review_queue(recipe, out: str) -> None:
    """The queue checked before any work (also when a deployment starts the flow), and why
    there will be none said up front."""
    from tasks.review.handoff import check_queue

    why = check_queue(recipe, out)
    if why:
        get_run_logger().warning("review: %s", why)


def check_export_args(recipe, uri: str, out: str, spans: str | None) -> None:
    """What can be refused before Prefect starts: backends, the queue URL, the spans file."""
    if not is_table(uri):
        check_before_start(recipe, out, None)
    from tasks.review.handoff import check_queue

    check_queue(recipe, out)  # a queue that cannot work fails before any work
    if spans:
        from tasks.labels import load_label_tree
        from tasks.spans import load_spans

        load_spans(spans, load_label_tree(recipe.labels.file) if recipe.labels.file else None)


def run_export(uri: str, out: str, config: str | None, formats: str | None,
               spans: str | None) -> dict[str, Any]:
    recipe = load_recipe(config)
    chosen = parse_formats(formats) if formats else None
    check_export_args(recipe, uri, out, spans)
    return run_command(export_flow, recipe, uri=uri, out=out, config=config, formats=chosen,
                       spans=spans)
