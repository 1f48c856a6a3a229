"""Flow `track`: the pipeline DAG (`flows.run`) stopped after tracking: each clip's objects
planned, one task per object (its chunks run in order inside it, each persisted), then the
clip's tracks table and review, concurrently across objects and clips."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.run import Job, pipeline
from flows.runtime import one_writer, run_command
from tasks.detect.stage import make_detector
from tasks.recipe import Recipe, load_recipe
from tasks.store.storage import open_location
from tasks.track.plan import load_keyframes
from tasks.track.state import track_key


def track_job(uri: str, out: str, recipe: Recipe, config: str | None,
              keyframes: str | None = None, until: str = "track", **more: Any) -> Job:
    """The job of a command that tracks; human keyframes are part of the tracks' key."""
    digest = load_keyframes(keyframes, open_location(out, recipe.storage))[1] if keyframes else None
    return Job(uri, out, recipe, until=until, config=config, keyframes=keyframes,
               track_key=track_key(recipe, digest), **more)


@flow(name="preannotate-track", log_prints=True)
def track_flow(uri: str, out: str, config: str | None = None,
               keyframes: str | None = None) -> dict[str, Any]:
    recipe = load_recipe(config)
    with one_writer(out, recipe, "preannotate track"):
        return pipeline(track_job(uri, out, recipe, config, keyframes))


def _check_tracker(recipe) -> None:
    from models import registry
    from tasks.errors import ConfigError

    name = recipe.track.tracker
    try:
        create = registry.factory("tracker", name)
    except (ValueError, ImportError) as e:
        raise ConfigError(f"{recipe.source}: track.tracker {name!r}: {e}") from e
    try:
        registry.check_options(create, recipe.track.options)
        create(**recipe.track.options)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{recipe.source}: track.options of tracker {name!r}: {e}") from e


def check_before_start(recipe, out: str, keyframes: str | None) -> None:
    """Bad recipes, backends and keyframes fail before Prefect starts."""
    make_detector(recipe)
    if recipe.track.tracker is not None:
        _check_tracker(recipe)
    if keyframes:
        load_keyframes(keyframes, open_location(out, recipe.storage))


def run_track(uri: str, out: str, config: str | None, keyframes: str | None) -> dict[str, Any]:
    recipe = load_recipe(config)
    check_before_start(recipe, out, keyframes)
    return run_command(track_flow, recipe, uri=uri, out=out, config=config, keyframes=keyframes)
