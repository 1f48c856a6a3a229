"""flows/runtime/: the same flows on threads, a local Dask cluster and a local Ray, on the
real Prefect engine and the session's one test server.

A tiny pipeline (a top-level flow calling two stage subflows, each with its own
`stage_runner`) must give the thread runner's results on Dask and Ray, run its tasks in
other processes, record every task run in the test's API, and start no Prefect server in
any worker (trap 1): the harness's stays the only one among the test's processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.context import get_run_context
from prefect.task_runners import ThreadPoolTaskRunner

from flows.runtime import api, clusters, commands, guard
from flows.runtime import current_cluster, scaled_out, stage_runner
from tasks.errors import ConfigError, PipelineError
from tasks.recipe import Recipe, parse_recipe

# --- a tiny pipeline: module level, so worker processes can import it ---------------------


@task(cache_policy=NO_CACHE)  # as our I/O tasks (flows/convert.py `_io`)
def work(x: int, recipe: Recipe, meta: dict) -> dict:
    # The recipe (frozen, strict pydantic, SecretStr fields) and the dict go to the worker
    # and the recipe comes back, pickled both ways.
    return {"pid": os.getpid(), "value": x * x + meta["offset"], "meta": meta,
            "secret": recipe.storage.secret.get_secret_value(), "recipe": recipe,
            "api_url_env": os.environ.get("PREFECT_API_URL")}


@flow
def stage(xs: list[int], recipe: Recipe, offset: int) -> dict:
    futures = [work.submit(x, recipe, {"offset": offset, "x": x}) for x in xs]
    return {"flow_run_id": str(get_run_context().flow_run.id),
            "rows": [f.result() for f in futures]}


@flow
def pipeline(xs: list[int], recipe: Recipe) -> list[dict]:
    first = stage.with_options(name="stage-one", task_runner=stage_runner(recipe, 2))(
        xs, recipe, 1)
    second = stage.with_options(name="stage-two", task_runner=stage_runner(recipe, 2))(
        [row["value"] for row in first["rows"]], recipe, 0)
    return [first, second]


XS = [1, 2, 3, 4]


def _recipe(**run) -> Recipe:
    return parse_recipe({"storage": {"secret": "s3cr3t"}, "run": run})


def _values(stages: list[dict]) -> list[list]:
    return [[(r["value"], r["secret"], r["recipe"].storage, r["meta"]) for r in s["rows"]]
            for s in stages]


def _recorded_task_runs(stages: list[dict], expected: int, timeout: float = 30.0) -> list:
    """Task runs the test's API holds for these stage flow runs, once all are final (the
    server records them from events, so they arrive a moment after the flow returns)."""
    ids = [s["flow_run_id"] for s in stages]
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
        if (len(runs) >= expected and all(r.state and r.state.is_final() for r in runs)) \
                or time.monotonic() > deadline:
            return runs
        time.sleep(0.25)


def _prefect_servers() -> int:
    """Prefect servers among this process's descendants: the harness's, plus any a worker
    started (Dask's nanny and Ray's raylet, so their workers, are descendants too). Task
    runs alone would not tell: a worker's own server would share the harness's database."""
    import psutil

    found = 0
    for p in psutil.Process().children(recursive=True):
        try:
            found += "prefect.server.api.server:create_app" in " ".join(p.cmdline())
        except psutil.Error:  # gone meanwhile
            pass
    return found


@pytest.fixture(scope="module")
def thread_result(prefect_harness):
    recipe = _recipe()
    with scaled_out(recipe) as cluster:
        assert cluster is None
        return pipeline(XS, recipe)


def _check_scaled_out(stages: list[dict], thread_result: list[dict], recipe: Recipe,
                      api_url: str) -> None:
    assert _values(stages) == _values(thread_result)
    rows = [r for s in stages for r in s["rows"]]
    assert {r["secret"] for r in rows} == {"s3cr3t"}
    assert all(r["recipe"] == recipe and r["recipe"] is not recipe for r in rows)
    pids = {r["pid"] for s in stages for r in s["rows"]}
    assert os.getpid() not in pids  # the tasks ran in worker processes
    assert {r["api_url_env"] for s in stages for r in s["rows"]} == {api_url}
    runs = _recorded_task_runs(stages, expected=2 * len(XS))
    assert len(runs) == 2 * len(XS)
    assert {r.state.type.value for r in runs} == {"COMPLETED"}
    assert {str(r.flow_run_id) for r in runs} == {s["flow_run_id"] for s in stages}


# --- recipe keys ------------------------------------------------------------------------


def test_run_section_defaults_and_documented_keys():
    import yaml

    from configs import recipe_path
    from tasks.recipe import RunConfig, load_recipe

    documented = yaml.safe_load(recipe_path("default").read_text())["run"]
    assert set(documented) == set(RunConfig.model_fields)  # default.yaml lists every key
    assert load_recipe().run == RunConfig() == RunConfig(**documented)
    assert (RunConfig().task_runner, RunConfig().workers, RunConfig().threads_per_worker,
            RunConfig().address) == ("thread", 2, 1, None)


@pytest.mark.parametrize("run", [
    {"task_runner": "dask", "workers": 3, "threads_per_worker": 2},
    {"task_runner": "dask", "address": "tcp://10.0.0.5:8786"},
    {"task_runner": "dask", "address": "scheduler:8786"},
    {"task_runner": "ray", "address": "ray://head:10001"},
    {"task_runner": "ray", "address": "auto"},
])
def test_run_section_accepts(run):
    assert _recipe(**run).run.model_dump(include=set(run)) == run


@pytest.mark.parametrize("run, message", [
    ({"task_runner": "spark"}, "run.task_runner: Input should be 'thread', 'dask' or 'ray'"),
    ({"task_runner": "dask", "workers": 0}, "run.workers: must be at least 1 (got 0)"),
    ({"task_runner": "dask", "workers": "2"}, "run.workers: Input should be a valid integer"),
    ({"task_runner": "dask", "threads_per_worker": 0}, "run.threads_per_worker: must be at "
     "least 1"),
    ({"task_runner": "ray", "threads_per_worker": 2}, "run.threads_per_worker: Value error, "
     "only task_runner dask runs several tasks per worker process"),
    ({"address": "tcp://h:8786"}, "run.address: Value error, needs task_runner dask or ray"),
    ({"task_runner": "ray", "address": "tcp://h:8786"}, "run.address: Value error, not a ray "
     "address (ray://host:port, host:port or auto)"),
    ({"task_runner": "dask", "address": "auto"}, "run.address: Value error, not a dask "
     "address"),
    ({"task_runner": "dask", "address": ""}, "run.address: String should have at least 1"),
    ({"nodes": 3}, "run.nodes: unknown key; allowed here: address, max_parallel_clips, "
     "task_runner, threads_per_worker, workers"),
])
def test_run_section_refuses(run, message):
    with pytest.raises(ConfigError) as e:
        _recipe(**run)
    assert message in str(e.value)


# --- stage_runner -----------------------------------------------------------------------


def test_stage_runner_threads():
    runner = stage_runner(_recipe(), 3)
    assert type(runner) is ThreadPoolTaskRunner and runner._max_workers == 3


@pytest.mark.parametrize("kind", ["dask", "ray"])
def test_stage_runner_outside_scaled_out_is_refused(kind):
    with pytest.raises(PipelineError, match=rf"'{kind}' but no {kind} cluster is running: run "
                       r"the flow inside `with flows.runtime.scaled_out\(recipe\):`"):
        stage_runner(_recipe(task_runner=kind), 2)


def test_stage_runner_types_inside_a_cluster(monkeypatch):
    from prefect_dask import DaskTaskRunner
    from prefect_ray import RayTaskRunner

    monkeypatch.setattr(clusters, "_current", clusters.Cluster("dask", "tcp://127.0.0.1:1", None))
    runner = stage_runner(_recipe(task_runner="dask"), 2)
    assert type(runner) is DaskTaskRunner and runner.address == "tcp://127.0.0.1:1"
    assert runner.duplicate() == runner  # what a worker rebuilds from the flow
    with pytest.raises(PipelineError, match="no ray cluster is running"):
        stage_runner(_recipe(task_runner="ray"), 2)
    monkeypatch.setattr(clusters, "_current", clusters.Cluster("ray", "127.0.0.1:2", None))
    runner = stage_runner(_recipe(task_runner="ray"), 2)
    assert type(runner) is RayTaskRunner and runner.address == "127.0.0.1:2"


def test_thread_runner_starts_nothing(thread_result):
    assert [len(s["rows"]) for s in thread_result] == [4, 4]
    assert {r["pid"] for s in thread_result for r in s["rows"]} == {os.getpid()}
    assert [r["value"] for r in thread_result[1]["rows"]] == [(x * x + 1) ** 2 for x in XS]


# --- Dask and Ray on the real engine ----------------------------------------------------


def test_dask_local_cluster(prefect_harness, thread_result):
    recipe = _recipe(task_runner="dask", workers=2)
    with scaled_out(recipe) as cluster:
        assert cluster == current_cluster() and cluster.address.startswith("tcp://127.0.0.1:")
        assert cluster.api_url == prefect_harness  # the harness's server, not a new one
        with scaled_out(recipe) as inner:  # re-entrant: no second cluster
            assert inner is cluster
        stages = pipeline(XS, recipe)
        # Both stage flows used the one cluster: it outlived the first stage's runner.
        import distributed

        with distributed.Client(cluster.address, set_as_default=False) as client:
            workers = client.run(os.getpid)
        assert _prefect_servers() == 1
        assert {r["pid"] for s in stages for r in s["rows"]} <= set(workers.values())
    assert current_cluster() is None and "PREFECT_API_URL" not in os.environ
    _check_scaled_out(stages, thread_result, recipe, prefect_harness)


def test_dask_cluster_at_address_is_left_running(prefect_harness, thread_result):
    import distributed

    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as existing:
        recipe = _recipe(task_runner="dask", address=existing.scheduler_address)
        with scaled_out(recipe) as cluster:
            assert cluster.address == existing.scheduler_address
            one = stage.with_options(task_runner=stage_runner(recipe, 2))(XS, recipe, 1)
            assert _prefect_servers() == 1
        with distributed.Client(existing.scheduler_address, set_as_default=False) as client:
            assert len(client.run(os.getpid)) == 1  # still up, with its worker
    # Its worker did not get our environment, yet reported to the harness's API: each
    # task run carries the API URL in the settings Prefect sends along with it.
    assert {r["api_url_env"] for r in one["rows"]} == {None}
    assert _values([one]) == _values(thread_result[:1])
    runs = _recorded_task_runs([one], expected=len(XS))
    assert {r.state.type.value for r in runs} == {"COMPLETED"} and len(runs) == len(XS)


def test_dask_address_with_no_scheduler_fails_fast(prefect_harness, monkeypatch):
    monkeypatch.setattr(clusters, "CONNECT_TIMEOUT_S", 1)
    recipe = _recipe(task_runner="dask", address="tcp://127.0.0.1:9")
    with pytest.raises(ConfigError, match="run.address: no Dask scheduler at tcp://127.0.0.1:9"):
        with scaled_out(recipe):
            pass
    assert current_cluster() is None


def test_ray_local_cluster(prefect_harness, thread_result):
    import ray

    recipe = _recipe(task_runner="ray", workers=2)
    with scaled_out(recipe) as cluster:
        assert cluster == current_cluster() and cluster.api_url == prefect_harness
        stages = pipeline(XS, recipe)
        assert ray.is_initialized()  # neither stage's RayTaskRunner shut it down
        assert _prefect_servers() == 1
    assert not ray.is_initialized() and current_cluster() is None
    _check_scaled_out(stages, thread_result, recipe, prefect_harness)


def test_a_different_runner_inside_a_cluster_is_refused(monkeypatch):
    monkeypatch.setattr(clusters, "_current", clusters.Cluster("dask", "tcp://127.0.0.1:1", None))
    with pytest.raises(ConfigError, match="already running on a dask cluster"):
        with scaled_out(_recipe(task_runner="ray")):
            pass


def test_heartbeats_only_where_a_server_outlives_the_run(monkeypatch):
    from contextlib import contextmanager

    from prefect.settings import (PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
                                  get_current_settings, temporary_settings)

    def heartbeat():
        return get_current_settings().flows.heartbeat_frequency

    default = heartbeat()
    assert default is not None
    # No configured API: the server is this process's temporary one, gone with it.
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with commands._heartbeats_where_watched():
            assert heartbeat() is None
        assert heartbeat() == default
    # A configured server: Prefect's setting, the user's included, applies unchanged.
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api",
                                     PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 45}):
        with commands._heartbeats_where_watched():
            assert heartbeat() == 45

    # A command decides before its cluster starts a temporary server and sets the API URL
    # for the run (Dask, Ray): that server dies with the process too.
    @contextmanager
    def cluster_with_its_own_server(recipe):
        with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:1/api"}):
            yield None

    class Flow:  # what run_command calls: flow.with_options(task_runner=...)(**parameters)
        def with_options(self, task_runner):
            return lambda **parameters: (heartbeat(), parameters)

    monkeypatch.setattr(commands, "scaled_out", cluster_with_its_own_server)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert commands.run_command(Flow(), _recipe(), uri="x") == (None, {"uri": "x"})


# --- trap 1 without a configured API: one temporary server for the run -----------------

EPHEMERAL = """
import os
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.context import get_run_context
from prefect.settings import PREFECT_API_URL

from flows.runtime import scaled_out, stage_runner
from tasks.recipe import parse_recipe


@task
def where(x):
    return os.getpid(), os.environ.get("PREFECT_API_URL"), x


@flow
def stage(xs):
    return str(get_run_context().flow_run.id), [where.submit(x).result() for x in xs]


if __name__ == "__main__":
    import time
    recipe = parse_recipe({"run": {"task_runner": "dask", "workers": 2}})
    with scaled_out(recipe) as cluster:
        run_id, rows = stage.with_options(task_runner=stage_runner(recipe, 2))([1, 2, 3])
        assert {url for _, url, _ in rows} == {cluster.api_url} == {PREFECT_API_URL.value()}
        assert os.getpid() not in {pid for pid, _, _ in rows}
        for _ in range(100):
            with get_client(sync_client=True) as client:
                runs = client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
            if len(runs) == 3 and all(r.state.is_completed() for r in runs):
                break
            time.sleep(0.2)
        print("task runs", len(runs), cluster.api_url, flush=True)
        import psutil
        servers = [p for p in psutil.Process().children(recursive=True)
                   if "prefect.server.api.server:create_app" in " ".join(p.cmdline())]
        print("servers", len(servers), flush=True)
    assert not PREFECT_API_URL.value() and "PREFECT_API_URL" not in os.environ
    import httpx
    try:
        httpx.get(cluster.api_url + "/health", timeout=2)
    except httpx.HTTPError:
        print("server stopped")
"""


def _run_script(tmp_path: Path, source: str, timeout: float) -> tuple:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    environ["PREFECT_HOME"] = str(tmp_path / "prefect-home")  # never the user's database
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=timeout)
    return done, time.monotonic() - started


def test_without_an_api_url_one_temporary_server_serves_the_run(prefect_harness, tmp_path):
    import sqlite3

    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    # The script's server gets a copy of the harness's database: already migrated, it starts
    # in about 10 s here instead of 25 s.
    home = tmp_path / "prefect-home"
    home.mkdir()
    source = PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split(":///", 1)[1]
    with sqlite3.connect(source) as src, sqlite3.connect(home / "prefect.db") as dst:
        src.backup(dst)
    done, _ = _run_script(tmp_path, EPHEMERAL, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "task runs 3 http://127.0.0.1:" in done.stdout and "servers 1\n" in done.stdout
    assert "server stopped" in done.stdout


def test_without_an_api_url_a_running_temporary_server_is_reused(prefect_harness):
    """`scaled_out` inside a flow run in ephemeral mode (flows/run.py): the process's
    temporary server (here the harness's, registered as it) serves the run, and stays up."""
    import httpx
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert not PREFECT_API_URL.value()
        with api._one_prefect_api(None) as url:
            assert url == prefect_harness == PREFECT_API_URL.value()
        assert not PREFECT_API_URL.value()
    assert httpx.get(f"{prefect_harness}/health", timeout=5).status_code == 200


# --- trap 2: the main-module guard --------------------------------------------------------

UNGUARDED = """
from flows.runtime import scaled_out
from tasks.recipe import parse_recipe

with scaled_out(parse_recipe({"run": {"task_runner": "dask", "workers": 1}})):
    print("cluster started")
"""


def test_unguarded_script_exits_quickly_with_our_message(tmp_path):
    done, seconds = _run_script(tmp_path, UNGUARDED, timeout=60)
    assert done.returncode == 1 and "cluster started" not in done.stdout
    assert "tasks.errors.ConfigError: run.task_runner 'dask' starts worker processes, which " \
        "re-import the main script: put the code that runs the pipeline under " \
        "`if __name__ == \"__main__\":` in " in done.stderr, done.stderr[-3000:]
    assert str(tmp_path / "script.py") in done.stderr
    assert seconds < 30  # refused before any process or server was started


def test_child_importing_the_main_script_refuses(monkeypatch):
    """The second line of defence: a spawned child that is still importing the main script
    (where Python would raise its own RuntimeError, or Dask's nanny fail to start)."""
    import multiprocessing

    monkeypatch.setattr(multiprocessing.current_process(), "_inheriting", True, raising=False)
    for kind in ("dask", "ray"):
        with pytest.raises(ConfigError, match=rf"run.task_runner '{kind}' starts worker "
                           "processes.*__name__ == \"__main__\""):
            with scaled_out(_recipe(task_runner=kind)):
                pass
    assert current_cluster() is None


def test_the_guard_check_reads_the_calling_line(tmp_path):
    """Only a call that the main script's top level makes outside the guard is unguarded."""
    path = tmp_path / "main.py"
    path.write_text("a = probe()\n"
                    "def later():\n    return probe()\n"
                    "if __name__ == '__main__':\n    b = probe()\n    c = later()\n")
    main = type(sys)("__main__")
    main.__file__ = str(path)
    seen = []
    main.probe = lambda: seen.append(guard._called_from_unguarded_main(main))
    exec(compile(path.read_text(), str(path), "exec"), vars(main))
    assert seen == [True, False, False]
