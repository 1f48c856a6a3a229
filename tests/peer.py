"""Run a snippet in the peer-tools environment (`.venv-peers`: datumaro, label-studio-sdk).

Those tools pin ``opencv-python-headless<5`` and ``pyarrow~=25``, which would replace our
OpenCV 5 and pyarrow, so they live in their own virtual environment (the README's test
command creates it). Without it a test is skipped locally; under CI it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def peer_python() -> str:
    path = Path(os.environ.get("PREANNOTATE_PEER_PYTHON") or ROOT / ".venv-peers" / "bin" / "python")
    if path.exists():
        return str(path)
    message = f"peer tools environment missing ({path}); bash tests/setup-peers.sh creates it"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def run_peer(code: str, *args: str, timeout: float = 300) -> Any:
    """Run ``code`` with the peer Python; it must print one JSON document, returned parsed."""
    done = subprocess.run([peer_python(), "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"peer snippet failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout)
