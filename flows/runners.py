"""The task runner a recipe chooses (`run.task_runner`): threads, a Dask cluster or Ray.

A command wraps its top-level flow in ``scaled_out(recipe)``; each stage flow then takes
``stage_runner(recipe, n)``, so the same flows run on any of the three::

    recipe = load_recipe(config)
    with scaled_out(recipe):   # starts (or connects to) one cluster for the whole run
        pipeline(...)          # inside: stage.with_options(task_runner=stage_runner(recipe, n))

Two traps are handled here so users do not meet them:

1. Every Dask or Ray worker process that runs a task without ``PREFECT_API_URL`` starts its
   own temporary Prefect server (5-7 s each, and their runs are invisible to ours). So one
   API serves the whole run: the configured one, or, where there is none (ephemeral mode),
   one temporary server started here for the run and set as this process's API. Prefect
   sends that setting along with each task run; workers we start also get it through their
   environment (with analytics off and this process's logging level), so nothing they do
   outside a task run starts a server either.
2. Dask starts its worker processes with ``spawn``, which re-imports the main script: a
   script that starts a cluster outside ``if __name__ == "__main__":`` would start one in
   every worker too. That is refused with a `ConfigError` saying so, in the script itself
   and again (in case the first check cannot see the call) in any child still importing it.
   Ray's workers do not import the main script, so a Ray run needs no guard.
"""

from __future__ import annotations

import ast
import logging
import multiprocessing
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from tasks.errors import ConfigError, PipelineError

if TYPE_CHECKING:
    from tasks.recipe import Recipe

# Our tasks pass URIs and small summaries, so Ray's object store can be small: it starts
# faster and fits most /dev/shm (else Ray falls back to /tmp; bigger objects spill to disk).
RAY_OBJECT_STORE_BYTES = 256 * 2**20
# How long to try reaching the cluster at `run.address` before the run is refused.
CONNECT_TIMEOUT_S = 10

_GUARD = (
    "run.task_runner {kind!r} starts worker processes, which re-import the main script: put "
    "the code that runs the pipeline under `if __name__ == \"__main__\":` in {script}"
)


@dataclass(frozen=True)
class Cluster:
    """The cluster `scaled_out` is running the stages on."""

    kind: Literal["dask", "ray"]
    address: str  # Dask scheduler (tcp://...) or Ray GCS/client address
    api_url: str | None  # the one Prefect API its workers report to


_current: Cluster | None = None


def current_cluster() -> Cluster | None:
    """The cluster of the innermost `scaled_out`, or None (threads, or outside one)."""
    return _current


@contextmanager
def scaled_out(recipe: Recipe) -> Iterator[Cluster | None]:
    """Run the body on the recipe's task runner: nothing to do for ``thread``; for ``dask`` or
    ``ray`` start a local cluster (``run.workers`` processes) or connect to ``run.address``,
    with one Prefect API for this process and every worker. Everything started here is
    stopped on exit; a cluster at ``run.address`` is only disconnected from.

    Re-entrant: inside a running ``scaled_out`` of the same kind this does nothing, so a
    command and the stages it calls may each use it.
    """
    global _current
    run = recipe.run
    if run.task_runner == "thread":
        yield None
        return
    if _current is not None:
        if _current.kind != run.task_runner:
            raise ConfigError(f"run.task_runner is {run.task_runner!r}, but this process is "
                              f"already running on a {_current.kind} cluster")
        yield _current
        return
    if run.address is None:
        _refuse_unguarded(run.task_runner)
    with ExitStack() as stack:
        api_url = stack.enter_context(_one_prefect_api(run.address))
        env = _worker_env(api_url)
        if run.task_runner == "dask":
            address = stack.enter_context(_dask_cluster(recipe, env))
        else:
            address = stack.enter_context(_ray_cluster(recipe, env))
        _current = Cluster(run.task_runner, address, api_url)
        try:
            yield _current
        finally:
            _current = None


def stage_runner(recipe: Recipe, max_workers: int) -> TaskRunner:
    """The task runner a stage flow should use now.

    ``thread``: a pool of ``max_workers`` threads. ``dask``/``ray``: the cluster of the
    enclosing `scaled_out`, whose size (``run.workers`` x ``run.threads_per_worker``) bounds
    the tasks at once instead of ``max_workers``. A stage runner never starts a cluster of its
    own (that would be one cluster, and one trap 1, per stage): outside `scaled_out` this
    raises `PipelineError`.
    """
    kind = recipe.run.task_runner
    if kind == "thread":
        return ThreadPoolTaskRunner(max_workers=max_workers)
    cluster = _current
    if cluster is None or cluster.kind != kind:
        raise PipelineError(f"run.task_runner is {kind!r} but no {kind} cluster is running: "
                            "run the flow inside `with flows.runners.scaled_out(recipe):`")
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        # With an address the runner only opens a client, and closes only that when the stage
        # flow ends: the cluster stays up for the next stage.
        return DaskTaskRunner(address=cluster.address)
    from prefect_ray import RayTaskRunner

    # Ray is already initialised by scaled_out, so the runner neither inits nor shuts it down.
    return RayTaskRunner(address=cluster.address)


# --- trap 2: the main-module guard ----------------------------------------------------------

def _refuse_unguarded(kind: str) -> None:
    """Refuse to start worker processes from code the workers would run again."""
    main = sys.modules.get("__main__")
    # A child still importing the main script has no __file__ yet; its argv is the parent's.
    script = getattr(main, "__file__", None) or (
        sys.argv[0] if sys.argv and os.path.isfile(sys.argv[0]) else "the main script")
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        # A spawned child is importing the main script, which starts a cluster again.
        raise ConfigError(_GUARD.format(kind=kind, script=script))
    if kind == "dask" and _dask_spawns() and _called_from_unguarded_main(main):
        raise ConfigError(_GUARD.format(kind=kind, script=script))


def _dask_spawns() -> bool:
    import dask

    # A user's setting is read with Dask's config; "spawn" is distributed's default.
    return dask.config.get("distributed.worker.multiprocessing-method", "spawn") != "fork"


def _called_from_unguarded_main(main) -> bool:
    """True when the main script's top-level code is running this call outside a guard.

    Only answers True when sure: with no script file (REPL, notebook, ``-c``), a call from a
    function called later (a thread, a console script's ``main()``), or an unreadable file,
    spawned children do not re-run the call, or we cannot tell.
    """
    path = getattr(main, "__file__", None)
    if not path:
        return False
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals is vars(main) \
                and frame.f_code.co_filename == path:
            break
        frame = frame.f_back
    if frame is None:
        return False
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return False
    line = frame.f_lineno
    return not any(isinstance(node, ast.If) and _is_main_test(node.test)
                   and node.body[0].lineno <= line <= (node.body[-1].end_lineno or line)
                   for node in ast.walk(tree))


def _is_main_test(test: ast.expr) -> bool:
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    return any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides) and any(
        isinstance(s, ast.Constant) and s.value == "__main__" for s in sides)


# --- trap 1: one Prefect API for the run ----------------------------------------------------

@contextmanager
def _one_prefect_api(address: str | None) -> Iterator[str | None]:
    """The API URL this process and the workers use; starts a temporary server if none."""
    from prefect.settings import (PREFECT_API_URL, PREFECT_SERVER_ANALYTICS_ENABLED,
                                  PREFECT_SERVER_EPHEMERAL_ENABLED,
                                  PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
                                  temporary_settings)

    url = PREFECT_API_URL.value()
    if url:
        yield url
        return
    if not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        yield None  # Prefect itself reports the missing API on the first flow run
        return
    if address is not None and not _is_local(address):
        raise ConfigError(f"run.address {address!r} is another machine, and this run has no "
                          "Prefect server its workers could reach: set PREFECT_API_URL to one")
    from prefect.server.api.server import SubprocessASGIServer

    # The unnamed instance is the one Prefect's client starts in ephemeral mode; if this
    # process already has it running, it is reused and left running.
    server = SubprocessASGIServer()
    if server.running:  # e.g. scaled_out inside a flow run in ephemeral mode
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.api_url
        return
    # Analytics off as for the workers (its telemetry also logs "database is locked" errors
    # from SQLite while the server starts).
    with temporary_settings(updates={PREFECT_SERVER_ANALYTICS_ENABLED: False}):
        server.start(timeout=PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            try:
                yield server.api_url
            finally:
                _drain_prefect_workers()
    finally:
        server.stop()


def _drain_prefect_workers() -> None:
    """Send queued logs and events before the server they go to stops."""
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        for service in (APILogWorker, EventsWorker):
            result = service.drain_all(timeout=10)
            if inspect.isawaitable(result):
                await result

    run_coro_as_sync(drain())


def _worker_env(api_url: str | None) -> dict[str, str]:
    env = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": _log_level()}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def _log_level() -> str:
    from prefect.settings import PREFECT_LOGGING_LEVEL

    level = PREFECT_LOGGING_LEVEL.value()
    return level if isinstance(level, str) else logging.getLevelName(level)


@contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """Set variables in this process for the block: processes started meanwhile inherit them
    before they import anything (a worker's Prefect reads its settings once, on import)."""
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _is_local(address: str) -> bool:
    """Whether the address is on this machine (one of its interfaces can bind the host)."""
    if address == "auto":
        return True
    host = urlsplit(address if "://" in address else f"//{address}").hostname or ""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, kind, _, _, sockaddr in infos:
        with socket.socket(family, kind) as probe:
            try:
                probe.bind((sockaddr[0], 0))
                return True
            except OSError:
                continue
    return False


# --- the clusters -------------------------------------------------------------------------

@contextmanager
def _dask_cluster(recipe: Recipe, env: dict[str, str]) -> Iterator[str]:
    import distributed

    run = recipe.run
    if run.address is not None:
        # Its workers are running already: each task run still gets our API URL with the
        # settings Prefect sends along with it. Fail now if the scheduler is not there.
        try:
            with distributed.Client(run.address, timeout=CONNECT_TIMEOUT_S, set_as_default=False):
                pass
        except (OSError, TimeoutError) as e:
            raise ConfigError(f"run.address: no Dask scheduler at {run.address} ({e})") from e
        yield run.address
        return
    # Worker processes inherit the environment when the nanny spawns them (also on restart).
    # With Prefect imported first, Dask's INFO logs reach Prefect's console handler: they
    # follow Prefect's level here and, through Dask's config variable, in the workers.
    level = _log_level()
    env = {"DASK_LOGGING__DISTRIBUTED": os.environ.get("DASK_LOGGING__DISTRIBUTED", level), **env}
    with _environ(env), _logger_level("distributed", env["DASK_LOGGING__DISTRIBUTED"]), \
            distributed.LocalCluster(n_workers=run.workers, processes=True,
                                     threads_per_worker=run.threads_per_worker,
                                     host="127.0.0.1", dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@contextmanager
def _logger_level(name: str, level: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level.upper())
    try:
        yield
    finally:
        logger.setLevel(before)


@contextmanager
def _ray_cluster(recipe: Recipe, env: dict[str, str]) -> Iterator[str]:
    import ray

    run = recipe.run
    if ray.is_initialized():  # someone else's Ray in this process: use it, leave it running
        yield _ray_address(ray, run.address)
        return
    if run.address is not None:
        # Workers of a running cluster get the variables through the job's runtime env.
        try:
            ray.init(run.address, runtime_env={"env_vars": env}, logging_level=_log_level())
        except ConnectionError as e:
            hint = ("; a cluster with token authentication needs RAY_AUTH_MODE=token and its "
                    "token here" if "auth" in str(e.__cause__).lower() else "")
            raise ConfigError(f"run.address: cannot connect to Ray at {run.address} ({e})"
                              f"{hint}") from e
        try:
            yield _ray_address(ray, run.address)
        finally:
            ray.shutdown()  # only disconnects from a cluster this process did not start
        return
    # The local raylet inherits the environment and passes it to its workers (a runtime env
    # would do the same but costs about 3 s more on the first tasks here).
    with _environ({"RAY_USAGE_STATS_ENABLED": os.environ.get("RAY_USAGE_STATS_ENABLED", "0"),
                   **env}):
        ray.init(num_cpus=run.workers, include_dashboard=False, logging_level=_log_level(),
                 object_store_memory=RAY_OBJECT_STORE_BYTES)
        try:
            yield _ray_address(ray, None)
        finally:
            ray.shutdown()


def _ray_address(ray, address: str | None) -> str:
    if address is not None and address.startswith("ray://"):
        return address  # Ray Client: the runtime context has no GCS address here
    return ray.get_runtime_context().gcs_address


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


def submit_bounded(task, calls: list[tuple], limit: int | None) -> list:
    """Submit ``task`` once per argument tuple in ``calls``, with at most ``limit`` of them
    unfinished at a time on the thread runner (a stage's own limit within the flow's
    pool: clips at once for conversion, objects at once for tracking). On Dask or Ray the
    cluster's size is the limit. Returns the futures in call order."""
    import threading

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
