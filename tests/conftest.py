"""Shared fixtures. Prefect settings are set before anything imports Prefect."""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the whole session (starting one costs 7-11 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        from prefect.settings import PREFECT_API_URL

        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def samples() -> dict[str, Path]:
    from tasks.media.samples import sample_videos

    return {p.stem: p for p in sample_videos()}


@pytest.fixture
def dataset(tmp_path, samples):
    """A small dataset: recording ``cam`` with clips 2.mp4 and 10.mp4 (natural order)."""
    root = tmp_path / "dataset"
    (root / "cam").mkdir(parents=True)
    shutil.copy(samples["carphone_distorted"], root / "cam" / "10.mp4")
    shutil.copy(samples["carphone_pristine"], root / "cam" / "2.mp4")
    return root
