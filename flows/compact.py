"""Flow `compact`: dense tracks -> keyframes. The source is a tracks table (a Parquet file,
any store) or a dataset URI, in which case the earlier stages run first (skipping what is
done) and their ``OUT/tracks.parquet`` is compacted."""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from flows.convert import _io
from flows.runners import one_writer, run_command
from flows.track import check_before_start, track_stage
from tasks.compact import compact_uri, tolerance
from tasks.recipe import Recipe, load_recipe

compact_tracks = task(compact_uri, name="compact-keyframes", **_io)


def is_table(source: str) -> bool:
    return source.rstrip("/").lower().endswith((".parquet", ".pq"))


def compact_stage(source: str, out: str, recipe: Recipe, max_error_px: float | None = None,
                  min_iou: float | None = None) -> dict[str, Any]:
    """Dense tracks -> keyframes, within the current flow; from a dataset URI the stages
    before run first."""
    upstream: dict[str, Any] = {}
    tracks_uri = source
    if not is_table(source):
        upstream = track_stage(source, out, recipe)
        tracks_uri = upstream["track"]["tracks_uri"]
    summary = compact_tracks(tracks_uri, out, recipe, max_error_px, min_iou)
    return {**upstream, "compact": summary}


@flow(name="preannotate-compact", log_prints=True)
def compact_flow(source: str, out: str, config: str | None = None,
                 max_error_px: float | None = None, min_iou: float | None = None) -> dict[str, Any]:
    recipe = load_recipe(config)
    with one_writer(out, recipe, "preannotate compact"):
        return compact_stage(source, out, recipe, max_error_px, min_iou)


def run_compact(source: str, out: str, config: str | None, max_error_px: float | None,
                min_iou: float | None) -> dict[str, Any]:
    recipe = load_recipe(config)
    if max_error_px is not None or min_iou is not None:
        tolerance(max_error_px, min_iou)
    if not is_table(source):
        check_before_start(recipe, out, None)
    return run_command(compact_flow, recipe, source=source, out=out, config=config,
                       max_error_px=max_error_px, min_iou=min_iou)
