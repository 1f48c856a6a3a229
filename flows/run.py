"""The pipeline as one DAG, read top-down.

    list clips                                  (one task: the listing, natural order)
    per clip, on its own:   convert -> detect -> track (plan; one unit per object, its
                            chunks in order inside; the clip's tracks table and review)
    once, for the recording: items table, merged detections and tracks (global frames),
                            keyframes, exports + combined files, review tasks
    `run` only:             report table, previews, UI artifacts

Clip k is detected while clip k+1 converts: each stage has its own limit (clips at once per
stage, objects at once for tracking) on the thread runner, the cluster's size on Dask or Ray.
The stage commands (`convert`, `detect`, `track`, `compact`, `export`) are this DAG stopped
early (``Job.until``). Before any task runs, every stage's answers for unchanged clips come in
bulk from its ledger (`tasks.store.ledger`): a clip with nothing to do runs no task, and chains
start only for clips with work left.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Completed, Failed

from flows import units
from flows.artifacts import ProgressArtifact, artifact_key
from flows.finish import finish_recording
from flows.lanes import Lanes
from flows.job import ClipRun, Job, whole_job
from flows.look_ahead import look_ahead
from flows.runtime import flow_runner, gather, one_writer, run_command, scaled_out, \
    stage_limit, stage_runner, submit_bounded
from tasks import progress
from tasks.store.items import is_converted
from tasks.recipe import Recipe, load_recipe
from tasks.report.rows import (artifact_rows, clip_rows_uri, note_previews_uri, outcome_counts,
                          outcome_line, previews_current_uri, stage_failures)

RUN_TABLE_KEY = "preannotate-run"


def pipeline(job: Job) -> dict[str, Any]:
    """The DAG within the current flow run; returns the stages' summaries."""
    clips = units.list_clips(job.uri, job.out, job.recipe)
    get_run_logger().info("%d clip(s) listed under %s", len(clips), job.uri)
    runs = [ClipRun(clip, i) for i, clip in enumerate(clips)]
    if progress.current():
        progress.current().expect("convert", [r.uri for r in runs])
    look_ahead(job, runs)
    lanes = Lanes(job, clip_chain)
    for run in runs:
        if not run.needs_work(job):
            lanes.take_found(run)
    lanes.run_chains([r for r in runs if r.needs_work(job)])
    return finish_recording(job, runs)


def clip_chain(job: Job, lanes: Lanes, run: ClipRun) -> None:
    """One clip through every stage the job reaches; a blocked or failed clip stops."""
    run.record = lanes.convert(run)
    if not (job.reaches("detect") and is_converted(run.record)):
        return
    run.detected = lanes.detect(run)
    if not job.reaches("track") or run.detected is None:
        return
    run.tracked = lanes.track(run)
    if not job.reaches("compact") or run.tracked is None:
        return
    run.compacted = lanes.compact(run)
    if not job.reaches("export") or run.compacted is None:
        return
    run.exported = lanes.export(run)
    if job.recipe.review.enqueue and run.exported is not None:
        run.reviewed = lanes.review(run)


# --- the `run` command: every stage, and what people see in the UI ---------------------------

def _stages(job: Job) -> dict[str, Any]:
    """The DAG on the recipe's task runner when this flow run has it (the CLI starts it so);
    otherwise (a deployment started on Prefect's default runner with a Dask or Ray recipe)
    in one nested flow run on the cluster's runner."""
    from prefect.context import FlowRunContext

    here = FlowRunContext.get()
    if here is not None and isinstance(here.task_runner, type(stage_runner(job.recipe, 1))):
        return pipeline(job)
    return pipeline_flow.with_options(task_runner=flow_runner(job.recipe))(
        uri=job.uri, out=job.out, config=job.config)


@flow(name="preannotate-pipeline", log_prints=True)
def pipeline_flow(uri: str, out: str, config: str | None = None) -> dict[str, Any]:
    """Every stage, as a flow of its own (run on a cluster's task runner)."""
    return pipeline(whole_job(uri, out, config))


@flow(name="preannotate-run", log_prints=True)
def run_flow(uri: str, out: str, config: str | None = None):
    """Every stage on every clip under ``uri`` into ``out``; ends Completed (blocked clips
    are verdicts, not failures) or Failed when a unit failed, with the counts as message."""
    from flows.export import check_review_queue

    logger = get_run_logger()
    recipe = load_recipe(config)
    check_review_queue(recipe, out)
    job = whole_job(uri, out, config)
    watching = progress.current()
    installed = watching is None
    if installed:
        watching = progress.RunProgress()
        progress.install(watching)
    bar = None
    try:
        try:
            bar = ProgressArtifact(watching)
        except Exception as e:  # progress is for watching; never fail a run over it
            logger.warning("no progress artifact: %s", e)
        with one_writer(out, recipe, "preannotate run"), scaled_out(recipe):
            summary = _stages(job)
            rows = clip_rows_uri(out, recipe, summary)
            previews, done, current = _previews(rows, out, recipe)
    finally:
        if bar is not None:
            bar.close()
        if installed:
            progress.install(None)
    counts = outcome_counts(rows)
    line = outcome_line(counts)
    create_table_artifact(artifact_rows(rows), key=RUN_TABLE_KEY,
                          description=f"preannotate run of {uri} into {out}: {line}")
    for row in done:
        if row["clip"] in previews:
            create_markdown_artifact(previews[row["clip"]]["markdown"], key=artifact_key(row),
                                     description=f"{row['clip']}: previews")
    result = {**summary, "outputs": out, "clips": rows, "outcomes": counts,
              "previews": {clip: p["files"] for clip, p in previews.items()},
              "previews_unchanged": sum(current)}
    logger.info("run finished: %s", line)
    others = [f for f in stage_failures(summary) if not f.get("clip")]
    if others:  # a failure that is no clip's (the review queue): the run failed too
        line += "; " + "; ".join(f"{f['unit']} failed" for f in others)
    if counts["failed"] or others:
        return Failed(message=line, data=result)
    return Completed(message=line, data=result)


def _previews(rows: list[dict[str, Any]], out: str, recipe: Recipe):
    """Previews (and their artifacts) only for clips whose previews changed."""
    every = [r for r in rows if r["status"] == "done"]
    current = previews_current_uri(every, out, recipe)
    done = [r for r, same in zip(every, current) if not same]
    futures = submit_bounded(units.clip_preview, [(r, out, recipe) for r in done],
                             stage_limit(recipe, recipe.run.max_parallel_clips))
    previews = {row["clip"]: made for row, made in gather(done, futures, lambda row, e: (
        get_run_logger().warning("previews of %s failed: %s", row["clip"], e)))}
    if len(previews) == len(done):
        note_previews_uri(every, out, recipe)
    return previews, done, current


def run_pipeline(uri: str, out: str, config: str | None = None) -> dict[str, Any]:
    """The CLI's `run`: checks that fail before Prefect starts, then the flow; returns its
    summary whatever the final state (the counts say what happened)."""
    from flows.export import check_export_args

    from flows import unchanged
    from tasks.store.storage import open_location

    recipe = load_recipe(config)
    check_export_args(recipe, uri, out, None)
    job = whole_job(uri, out, config)
    kept = unchanged.unchanged_summary(job)
    if kept is not None:  # nothing changed since the last run: no flow run needed
        return kept
    unchanged.forget(open_location(out, recipe.storage))
    state = run_command(run_flow, recipe, uri=uri, out=out, config=config, return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):  # the run itself broke, not a clip
        raise result
    summary = {**result, "state": state.type.value, "message": state.message}
    if state.is_completed():
        try:
            unchanged.keep_summary(job, summary)
        except Exception as e:  # a shortcut for the next run, never a failure of this one
            logging.getLogger(__name__).warning("the run's summary was not kept: %s", e)
    return summary
