"""Submitting a stage's tasks within its limit, and units found done before any task ran.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasks.recipe import Recipe


def submit_bounded(task, calls: list[tuple], limit: int | None) -> list:
    """Submit ``task`` once per argument tuple in ``calls``, with at most ``limit`` of them
    unfinished at a time on the thread runner (a stage's own limit within the flow's
    pool: clips at once for conversion, objects at once for tracking). On Dask or Ray the
    cluster's size is the limit. Returns the futures in call order."""


    futures: list = []
    slots = threading.Semaphore(limit) if limit else None
    for args in calls:
        if slots is not None:
            slots.acquire()  # a slot frees as soon as any running call ends
        future = task.submit(*args)
        if slots is not None:
            future.add_done_callback(lambda _: slots.release())
        futures.append(future)
    return futures


def stage_limit(recipe: Recipe, threads: int) -> int | None:
    """A stage's concurrency limit: ``threads`` on the thread runner, none on a cluster."""
    return threads if recipe.run.task_runner == "thread" else None


class Done:
    """A unit found done before any task ran; reads like a finished future."""

    def __init__(self, value: Any):
        self.value = value

    def result(self) -> Any:
        return self.value


def submit_unless_found(task, calls: list[tuple], limit: int | None, found: list) -> list:
    """`submit_bounded` for the calls whose entry in ``found`` is None (a unit found done
    costs no task run: ~30 ms of Prefect bookkeeping each, minutes at 10,000 clips); the
    others are `Done` with that value. Futures (or `Done`) in call order."""
    todo = [call for call, value in zip(calls, found) if value is None]
    submitted = iter(submit_bounded(task, todo, limit))
    return [Done(value) if value is not None else next(submitted) for value in found]


def gather(units: list, futures: list, failed: Callable[[Any, BaseException], None]) -> list:
    """``(unit, result)`` for each unit whose future (or `Done`) has a result, in order; a
    unit whose task raised is handed to ``failed(unit, error)`` and left out: the batch goes
    on, the failure is reported, and the unit is redone on the next run."""
    done = []
    for unit, future in zip(units, futures):
        try:
            done.append((unit, future.result()))
        except Exception as e:
            failed(unit, e)
    return done
