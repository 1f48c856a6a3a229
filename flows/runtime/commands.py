"""A command's one flow run: OUT's one writer, the recipe's task runner and cluster, the UI
link, and flow heartbeats only where someone can watch them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from prefect.task_runners import TaskRunner

from flows.runtime.clusters import scaled_out, stage_runner

if TYPE_CHECKING:
    from tasks.recipe import Recipe


@contextmanager
def one_writer(out: str, recipe: Recipe, what: str) -> Iterator[None]:
    """The body as OUT's one writer (`tasks.store.lock.WriterLock`): a second run on the same OUT is
    refused with a message naming the first."""
    from prefect.exceptions import TerminationSignal

    from tasks import progress
    from tasks.store.lock import WriterLock
    from tasks.store.storage import open_location

    progress.request_stop(False)
    with WriterLock(open_location(out, recipe.storage), what):
        try:
            yield
        except (KeyboardInterrupt, TerminationSignal):
            # SIGTERM or Ctrl-C reaches this thread while it waits on the stage's tasks:
            # tell their loops to end now, or the runner would wait for every clip in hand.
            progress.request_stop()
            raise


def run_command(flow, recipe: Recipe, **parameters):
    """A command's one flow run: on the recipe's task runner, inside its cluster
    (`scaled_out`), with flow heartbeats only where someone can watch them."""
    from prefect.settings import PREFECT_API_URL

    hooks = {"on_running": [_print_ui_link]} if PREFECT_API_URL.value() else {}
    with _heartbeats_where_watched(), scaled_out(recipe):
        return flow.with_options(task_runner=flow_runner(recipe), **hooks)(**parameters)


def _print_ui_link(flow, flow_run, state) -> None:
    """Where to watch the run, when a server someone can open is configured."""
    from prefect.utilities.urls import url_for

    link = url_for(flow_run)
    if link:
        print(f"Prefect UI: {link}", file=sys.stderr, flush=True)


@contextmanager
def _heartbeats_where_watched() -> Iterator[None]:
    """Heartbeats off when this process has no configured Prefect API.

    A heartbeat lets a server mark a flow run whose process died as crashed. A temporary
    server (ephemeral mode, or the one `_one_prefect_api` starts) dies with this process, so
    no one can act on them; and each flow run waits up to 1 s for its heartbeat thread to
    end (it sleeps in 1 s steps), about 2% of a run on the samples. With
    ``PREFECT_API_URL`` set, Prefect's setting applies unchanged.
    """
    from prefect.settings import (PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
                                  temporary_settings)

    if PREFECT_API_URL.value():
        yield
        return
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def flow_runner(recipe: Recipe) -> TaskRunner:
    """The task runner of a command's one flow: every stage's tasks run on it at once (clips
    converting, detecting, planning and finishing their tracks, objects tracking), so its
    pool holds the sum of the stages' limits; each stage keeps its own (`flows.lanes`)."""
    return stage_runner(recipe, 4 * recipe.run.max_parallel_clips + recipe.track.max_parallel)
