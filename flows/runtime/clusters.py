"""The task runner a recipe chooses (`run.task_runner`): threads, a Dask cluster or Ray.

A command wraps its top-level flow in ``scaled_out(recipe)``; each stage flow then takes
``stage_runner(recipe, n)``, so the same flows run on any of the three::

    recipe = load_recipe(config)
    with scaled_out(recipe):   # starts (or connects to) one cluster for the whole run
        pipeline(...)          # inside: stage.with_options(task_runner=stage_runner(recipe, n))

Two traps are handled so users do not meet them: one Prefect API for every worker
(`flows.runtime.api`), and the main-module guard for Dask's spawned workers
(`flows.runtime.guard`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from tasks.errors import ConfigError, PipelineError
from flows.runtime.guard import _refuse_unguarded
from flows.runtime.api import _environ, _log_level, _one_prefect_api, _worker_env

if TYPE_CHECKING:
    from tasks.recipe import Recipe

# Our tasks pass URIs and small summaries, so Ray's object store can be small: it starts
# faster and fits most /dev/shm (else Ray falls back to /tmp; bigger objects spill to disk).
RAY_OBJECT_STORE_BYTES = 256 * 2**20
# How long to try reaching the cluster at `run.address` before the run is refused.
CONNECT_TIMEOUT_S = 10


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
                            "run the flow inside `with flows.runtime.scaled_out(recipe):`")
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        # With an address the runner only opens a client, and closes only that when the stage
        # flow ends: the cluster stays up for the next stage.
        return DaskTaskRunner(address=cluster.address)
    from prefect_ray import RayTaskRunner

    # Ray is already initialised by scaled_out, so the runner neither inits nor shuts it down.
    return RayTaskRunner(address=cluster.address)


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
