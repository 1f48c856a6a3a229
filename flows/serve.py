"""`preannotate serve`: the whole pipeline (`flows.run.run_flow`: ingest -> convert ->
detect -> track -> compact -> export -> enqueue review, with its UI artifacts) as a Prefect deployment on a cron
schedule, served from this process (Prefect's `serve`: no work pool needed). Runs show up in
the Prefect UI of the server ``PREFECT_API_URL`` points at. `prefect.yaml` declares the same
deployment for a work pool (`prefect deploy`)."""

from __future__ import annotations

import os
from typing import Any

DEPLOYMENT = "scheduled"


def deployment(uri: str, out: str, config: str | None, cron: str, name: str = DEPLOYMENT):
    """The deployment object: the run flow, its parameters and schedule."""
    from flows.run import run_flow
    from tasks.errors import ConfigError
    from tasks.recipe import load_recipe

    load_recipe(config)  # a bad recipe fails here, not at 2 a.m.
    parameters: dict[str, Any] = {"uri": uri, "out": out,
                                  "config": os.path.abspath(config) if config else None}
    try:  # Prefect validates the cron expression
        return run_flow.to_deployment(name=name, cron=cron, parameters=parameters,
                                         description="preannotate: every stage, then review "
                                         "tasks", tags=["preannotate"])
    except ValueError as e:
        raise ConfigError(f"--cron {cron!r} is not a cron expression (e.g. '0 2 * * *'): "
                          f"{str(e).splitlines()[0]}") from e


def serve(uri: str, out: str, config: str | None, cron: str) -> None:
    """Serve the deployment until interrupted (Ctrl-C)."""
    from prefect import serve as prefect_serve

    prefect_serve(deployment(uri, out, config, cron))
