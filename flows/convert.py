"""Flows `ingest` and `convert`: list the dataset, one task per clip, then the items table.

Thin on purpose: the work is in `tasks/`. Retries go only to storage I/O (a
`StorageError`); a bad clip is a blocked row, never a retried or failed task.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.utilities.annotations import quote
from prefect.cache_policies import NO_CACHE

from flows.runners import (keep_answers, one_writer, run_command, stage_limit,
                           submit_unless_done)
from tasks import progress
from tasks.batch import failed_record, finish_batch, plan_batch
from tasks.clip import convert_ledger, process_clip_uris, reused_record_uri
from tasks.errors import StorageError
from tasks.recipe import Recipe, load_recipe


def _storage_failure(task, task_run, state) -> bool:
    """Retry only when the store failed; config and media faults will not get better."""
    try:
        state.result()
    except StorageError:
        return True
    except Exception:
        return False
    return False


_io = dict(retries=3, retry_delay_seconds=[1, 5, 20], retry_condition_fn=_storage_failure,
           cache_policy=NO_CACHE)
list_clips = task(plan_batch, name="list-clips", **_io)
process_clip = task(process_clip_uris, name="clip", task_run_name="{mode} {clip.clip_name}", **_io)
write_items = task(finish_batch, name="write-items", **_io)


def convert_stage(uri: str, out: str, recipe: Recipe,
                  mode: Literal["ingest", "convert"] = "convert") -> dict[str, Any]:
    """Ingest (probe, fingerprint) or convert every clip under ``uri`` into ``out``: one task
    per clip, ``run.max_parallel_clips`` at once, within the current flow."""
    logger = get_run_logger()
    clips = list_clips(uri, out, recipe)
    logger.info("%d clip(s) listed under %s", len(clips), uri)
    watching = progress.current()
    if watching:
        watching.expect("convert", [c.source_uri for c in clips])
    calls = [(clip, uri, out, recipe, mode) for clip in clips]
    ledger = convert_ledger(clips, out, recipe, mode)
    futures = submit_unless_done(process_clip, calls,
                                 stage_limit(recipe, recipe.run.max_parallel_clips),
                                 reused_record_uri, ledger)
    records = []
    for clip, future in zip(clips, futures):
        try:
            records.append(future.result())
        except Exception as e:  # the batch goes on: the clip is reported, and redone next run
            logger.error("%s failed: %s", clip.source_uri, e)
            records.append(failed_record(clip, e))
        if watching:
            watching.finish("convert", clip.source_uri)
    keep_answers(ledger, reused_record_uri, calls, futures)
    summary = write_items(out, recipe, quote(records))
    for line in summary.lines():
        logger.info(line)
    return summary.to_dict()


@flow(name="preannotate-convert", log_prints=True)
def convert_flow(uri: str, out: str, config: str | None = None,
                 mode: Literal["ingest", "convert"] = "convert") -> dict[str, Any]:
    """Ingest (probe, fingerprint) or convert every clip under ``uri`` into ``out``."""
    recipe = load_recipe(config)
    with one_writer(out, recipe, f"preannotate {mode}"):
        return convert_stage(uri, out, recipe, mode)


def run_convert(uri: str, out: str, config: str | None, mode: str) -> dict[str, Any]:
    """Run the flow with the recipe's clip parallelism (the CLI's entry point)."""
    recipe = load_recipe(config)  # fails here, before Prefect starts, on a bad recipe
    return run_command(convert_flow, recipe, uri=uri, out=out, config=config, mode=mode)
