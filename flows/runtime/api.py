"""Trap 1 of running on a cluster: every Dask or Ray worker process that runs a task without
``PREFECT_API_URL`` starts its own temporary Prefect server (5-7 s each, and their runs are
invisible to ours). So one API serves the whole run: the configured one, or, where there is
none (ephemeral mode), one temporary server started here for the run and set as this
process's API. Prefect sends that setting along with each task run; workers we start also
get it through their environment (with analytics off and this process's logging level).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit


from tasks.errors import ConfigError


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
