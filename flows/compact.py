"""Flow `compact`: dense tracks -> keyframes. The source is a tracks table (a Parquet file,
any store) or a dataset URI, in which case the earlier stages run first (skipping what is
done) and their ``OUT/tracks.parquet`` is compacted."""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from flows.convert import _io
from flows.track import check_before_start
from flows.track import with_runner as track_with_runner
from tasks.compact import compact_uri, tolerance
from tasks.recipe import load_recipe

compact_tracks = task(compact_uri, name="compact-keyframes", **_io)


def is_table(source: str) -> bool:
    return source.rstrip("/").lower().endswith((".parquet", ".pq"))


@flow(name="preannotate-compact", log_prints=True)
def compact_flow(source: str, out: str, config: str | None = None,
                 max_error_px: float | None = None, min_iou: float | None = None) -> dict[str, Any]:
    recipe = load_recipe(config)
    upstream: dict[str, Any] = {}
    tracks_uri = source
    if not is_table(source):
        upstream = track_with_runner(recipe)(uri=source, out=out, config=config)
        tracks_uri = upstream["track"]["tracks_uri"]
    summary = compact_tracks(tracks_uri, out, recipe, max_error_px, min_iou)
    return {**upstream, "compact": summary}


def run_compact(source: str, out: str, config: str | None, max_error_px: float | None,
                min_iou: float | None) -> dict[str, Any]:
    recipe = load_recipe(config)
    if max_error_px is not None or min_iou is not None:
        tolerance(max_error_px, min_iou)
    if not is_table(source):
        check_before_start(recipe, out, None)
    return compact_flow(source=source, out=out, config=config, max_error_px=max_error_px,
                        min_iou=min_iou)
