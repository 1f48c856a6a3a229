"""What people see (issue 15, point 14): logs reach the Prefect server without -v, the CLI
prints the run's UI link, the terminal shows warnings only, and -v is not buried under
httpx's request lines."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from uuid import UUID


def _env(api_url: str | None) -> dict[str, str]:
    """This environment as a user's shell would have it: no logging level of the tests'."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PREFECT_API_URL", "PREFECT_LOGGING_LEVEL")}
    return {**env, "PREFECT_API_URL": api_url} if api_url else env


def _cli(args, api_url):
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True,
                          text=True, timeout=300, env=_env(api_url))


def test_logs_reach_the_server_and_the_link_is_printed(prefect_harness, tmp_path, dataset):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    done = _cli(["ingest", str(dataset), "--out", str(tmp_path / "out")], prefect_harness)
    assert done.returncode == 0, done.stderr
    link = re.search(r"^Prefect UI: (http\S+/runs/flow-run/([0-9a-f-]{36}))$", done.stderr, re.M)
    assert link, done.stderr
    assert "INFO" not in done.stderr and "INFO" not in done.stdout  # the terminal: warnings only
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[UUID(link.group(2))])))
    messages = {(log.name, log.message) for log in logs}
    assert any("2 clip(s) listed" in m for _, m in messages), messages
    assert any(name.startswith("tasks.") and "ingested" in m for name, m in messages), messages

    verbose = _cli(["ingest", str(dataset), "--out", str(tmp_path / "out"), "-v"], prefect_harness)
    assert verbose.returncode == 0 and "clip(s) listed" in verbose.stderr
    assert "HTTP Request:" not in verbose.stderr

    # A no-op rerun on its own temporary server (no PREFECT_API_URL): nothing on stderr, in
    # particular none of the server's shutdown tracebacks (issue 15, point 13).
    quiet = _cli(["ingest", str(dataset), "--out", str(tmp_path / "out")], None)
    assert quiet.returncode == 0 and "2 clip(s): 2 skipped" in quiet.stdout
    assert quiet.stderr == ""
