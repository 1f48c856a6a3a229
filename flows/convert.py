"""Flows `ingest` and `convert`: the pipeline DAG (`flows.run`) stopped after conversion."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow

from flows.run import Job, pipeline
from flows.runtime import one_writer, run_command
from tasks.recipe import load_recipe


@flow(name="preannotate-convert", log_prints=True)
def convert_flow(uri: str, out: str, config: str | None = None,
                 mode: Literal["ingest", "convert"] = "convert") -> dict[str, Any]:
    """Ingest (probe, fingerprint) or convert every clip under ``uri`` into ``out``: one task
    per clip, ``run.max_parallel_clips`` at once, then the items table."""
    recipe = load_recipe(config)
    with one_writer(out, recipe, f"preannotate {mode}"):
        return pipeline(Job(uri, out, recipe, until="convert", mode=mode, config=config))


def run_convert(uri: str, out: str, config: str | None, mode: str) -> dict[str, Any]:
    """Run the flow with the recipe's clip parallelism (the CLI's entry point)."""
    recipe = load_recipe(config)  # fails here, before Prefect starts, on a bad recipe
    return run_command(convert_flow, recipe, uri=uri, out=out, config=config, mode=mode)
