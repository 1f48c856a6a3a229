"""Flow `compact`: dense tracks -> keyframes. The source is a tracks table (a Parquet file,
any store), compacted alone, or a dataset URI: the pipeline DAG (`flows.run`) stopped after
compaction (earlier stages skip what is done)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows import units
from flows.run import pipeline
from flows.runtime import one_writer, run_command
from flows.track import check_before_start, track_job
from tasks.compact.algorithm import tolerance
from tasks.recipe import load_recipe


def is_table(source: str) -> bool:
    return source.rstrip("/").lower().endswith((".parquet", ".pq"))


@flow(name="preannotate-compact", log_prints=True)
def compact_flow(source: str, out: str, config: str | None = None,
                 max_error_px: float | None = None, min_iou: float | None = None) -> dict[str, Any]:
    recipe = load_recipe(config)
    with one_writer(out, recipe, "preannotate compact"):
        if is_table(source):
            summary = units.compact_tracks(source, out, recipe, max_error_px, min_iou)
            summary.pop("per_clip", None)
            return {"compact": summary}
        return pipeline(track_job(source, out, recipe, config, until="compact",
                                  max_error_px=max_error_px, min_iou=min_iou))


def run_compact(source: str, out: str, config: str | None, max_error_px: float | None,
                min_iou: float | None) -> dict[str, Any]:
    recipe = load_recipe(config)
    if max_error_px is not None or min_iou is not None:
        tolerance(max_error_px, min_iou)
    if not is_table(source):
        check_before_start(recipe, out, None)
    return run_command(compact_flow, recipe, source=source, out=out, config=config,
                       max_error_px=max_error_px, min_iou=min_iou)
