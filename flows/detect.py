"""Flow `detect`: the pipeline DAG (`flows.run`) stopped after detection.

Clips that are blocked are skipped; a clip whose detection fails is reported and the batch
goes on (it is redone on the next run, as nothing was recorded for it).
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.run import Job, pipeline
from flows.runtime import one_writer, run_command
from tasks.detect.stage import make_detector
from tasks.recipe import load_recipe


@flow(name="preannotate-detect", log_prints=True)
def detect_flow(uri: str, out: str, config: str | None = None) -> dict[str, Any]:
    """Detections for every converted clip under ``uri`` into ``out/detections.parquet``."""
    recipe = load_recipe(config)
    make_detector(recipe)  # a bad backend or option fails here, before any clip
    with one_writer(out, recipe, "preannotate detect"):
        return pipeline(Job(uri, out, recipe, until="detect", config=config))


def run_detect(uri: str, out: str, config: str | None) -> dict[str, Any]:
    recipe = load_recipe(config)  # a bad recipe or backend fails before Prefect starts
    make_detector(recipe)
    return run_command(detect_flow, recipe, uri=uri, out=out, config=config)
