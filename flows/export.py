"""Flow `export`: the whole pipeline DAG (`flows.run`; earlier stages skip what is done),
time spans turned into per-frame labels when a spans file is given, every converted clip's
keyframes in the asked formats, and the review tasks. From a tracks table (a Parquet file)
instead of a dataset, that table is compacted and the clips of OUT's items table exported."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows import units
from flows.compact import is_table
from flows.finish import export_all
from flows.run import Job, pipeline
from flows.runtime import one_writer, run_command
from flows.track import check_before_start, track_job
from tasks.detect.stage import converted_records
from tasks.store.items import is_converted
from tasks.export.stage import parse_formats
from tasks.recipe import load_recipe


@flow(name="preannotate-export", log_prints=True)
def export_flow(uri: str, out: str, config: str | None = None, formats: list[str] | None = None,
                spans: str | None = None) -> dict[str, Any]:
    recipe = load_recipe(config)
    check_review_queue(recipe, out)
    with one_writer(out, recipe, "preannotate export"):
        if not is_table(uri):
            return pipeline(track_job(uri, out, recipe, config, until="export", formats=formats,
                                      spans=spans))
        compacted = units.compact_tracks(uri, out, recipe)
        kept = {(c["recording"], c["clip_index"]): c for c in compacted.pop("per_clip", [])}
        records = [r for r in converted_records(out, recipe) if is_converted(r)]
        job = Job(uri, out, recipe, config=config, formats=formats, spans=spans)
        return {"compact": compacted, **export_all(job, records, [
            kept.get((r.recording, int(r.clip_index))) for r in records])}


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
        from tasks.annotations.spans import load_spans
        from tasks.annotations.review_frames import ReviewVideos
        from tasks.store.storage import open_location

        load_spans(spans, load_label_tree(recipe.labels.file) if recipe.labels.file else None,
                   ReviewVideos(open_location(out, recipe.storage)))


def run_export(uri: str, out: str, config: str | None, formats: str | None,
               spans: str | None) -> dict[str, Any]:
    recipe = load_recipe(config)
    chosen = parse_formats(formats) if formats else None
    check_export_args(recipe, uri, out, spans)
    return run_command(export_flow, recipe, uri=uri, out=out, config=config, formats=chosen,
                       spans=spans)
