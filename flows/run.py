"""Flow `run`: the whole pipeline on a dataset (ingest -> convert -> detect -> track ->
compact -> export -> enqueue review, each stage one task per clip or object) plus what a data
engineer sees in the Prefect UI without opening logs: a progress artifact that moves while
the run works, a table artifact of every clip (status, reason, frames, detections, tracks,
keyframes, review tasks) and a markdown artifact per clip with its previews (also written to
``OUT/previews/``). The run's final state says how many clips were done, blocked and failed.
"""

from __future__ import annotations

import contextvars
import threading
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact,
                               create_table_artifact, update_progress_artifact)
from prefect.states import Completed, Failed

from flows.convert import _io
from flows.export import check_review_queue, check_export_args, export_flow, export_stage
from flows.runners import (flow_runner, one_writer, run_command, scaled_out, stage_limit, stage_runner,
                           submit_bounded)
from tasks import progress
from tasks.recipe import load_recipe
from tasks.report import (artifact_rows, clip_preview_uri, clip_rows_uri, outcome_counts,
                          note_previews_uri, outcome_line, previews_current_uri,
                          stage_failures)

clip_preview = task(clip_preview_uri, name="clip-previews",
                    task_run_name="previews {row[clip]}", **_io)
RUN_TABLE_KEY = "preannotate-run"


class _ProgressArtifact:
    """Pushes the run's progress to its Prefect progress artifact every ``every_s`` seconds
    while it changes (from a thread, so it moves during one long clip too)."""

    def __init__(self, watching: progress.RunProgress, every_s: float = 2.0):
        self.watching, self.every_s = watching, every_s
        self.id = create_progress_artifact(0.0, description="share of the run's units done "
                                           "(convert, detect, track, compact, export per clip)")
        self.stop = threading.Event()
        self.sent = 0.0
        self.thread = threading.Thread(target=contextvars.copy_context().run,
                                       args=(self._loop,), daemon=True, name="progress-artifact")
        self.thread.start()

    def _push(self, value: float) -> None:
        if abs(value - self.sent) >= 0.1:
            try:
                update_progress_artifact(self.id, value)
                self.sent = value
            except Exception:  # progress is for watching; never fail a run over it
                pass

    def _loop(self) -> None:
        while not self.stop.wait(self.every_s):
            self._push(round(100 * self.watching.fraction(), 1))

    def close(self, value: float = 100.0) -> None:
        self.stop.set()
        self.thread.join()
        self._push(value)


def _artifact_key(row: dict[str, Any]) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes."""
    import hashlib
    import re

    slug = re.sub(r"[^a-z0-9]+", "-", row["clip"].lower()).strip("-")[:40]
    return f"clip-{slug}-{hashlib.blake2b(row['clip'].encode(), digest_size=3).hexdigest()}"


def _stages(uri: str, out: str, recipe, config: str | None) -> dict[str, Any]:
    """Every stage's tasks in this flow run when it runs on the recipe's task runner (the
    CLI starts it so); otherwise (a deployment started on Prefect's default runner with a Dask
    or Ray recipe) in one nested flow on the cluster's runner."""
    from prefect.context import FlowRunContext

    wanted = type(stage_runner(recipe, 1))
    here = FlowRunContext.get()
    if here is not None and isinstance(here.task_runner, wanted):
        return export_stage(uri, out, recipe, config)
    return export_flow.with_options(task_runner=flow_runner(recipe))(uri=uri, out=out,
                                                                     config=config)


@flow(name="preannotate-run", log_prints=True)
def run_flow(uri: str, out: str, config: str | None = None):
    """Every stage on every clip under ``uri`` into ``out``; ends Completed (blocked clips
    are verdicts, not failures) or Failed when a unit failed, with the counts as message."""
    logger = get_run_logger()
    recipe = load_recipe(config)
    check_review_queue(recipe, out)
    watching = progress.current()
    installed = watching is None
    if installed:
        watching = progress.RunProgress()
        progress.install(watching)
    bar = None
    try:
        try:
            bar = _ProgressArtifact(watching)
        except Exception as e:  # progress is for watching; never fail a run over it
            logger.warning("no progress artifact: %s", e)
        with one_writer(out, recipe, "preannotate run"), scaled_out(recipe):
            summary = _stages(uri, out, recipe, config)
            rows = clip_rows_uri(out, recipe, summary)
            # Previews (and their artifacts) only for clips whose previews changed.
            every = [r for r in rows if r["status"] == "done"]
            current = previews_current_uri(every, out, recipe)
            done = [r for r, same in zip(every, current) if not same]
            futures = submit_bounded(clip_preview, [(r, out, recipe) for r in done],
                                     stage_limit(recipe, recipe.run.max_parallel_clips))
            previews = {}
            for row, future in zip(done, futures):
                try:
                    previews[row["clip"]] = future.result()
                except Exception as e:  # previews are for watching; the outputs stand
                    logger.warning("previews of %s failed: %s", row["clip"], e)
            if len(previews) == len(done):
                note_previews_uri(every, out, recipe)
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
            create_markdown_artifact(previews[row["clip"]]["markdown"], key=_artifact_key(row),
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


def run_pipeline(uri: str, out: str, config: str | None = None) -> dict[str, Any]:
    """The CLI's `run`: checks that fail before Prefect starts, then the flow; returns its
    summary whatever the final state (the counts say what happened)."""
    recipe = load_recipe(config)
    check_export_args(recipe, uri, out, None)
    state = run_command(run_flow, recipe, uri=uri, out=out, config=config, return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):  # the run itself broke, not a clip
        raise result
    return {**result, "state": state.type.value, "message": state.message}
