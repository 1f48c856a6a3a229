"""A throwaway Label Studio server for the handoff tests and benchmark: the pip package from
its own virtual environment (``.venv-ls``, made by tests/setup-peers.sh: it brings Django and
pins that clash with ours), on 127.0.0.1 with a fresh SQLite database in a temporary
directory, a user and a legacy API token; stopped and deleted on exit."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("PREANNOTATE_LABEL_STUDIO_VENV") or ROOT / ".venv-ls")


@dataclass(frozen=True)
class Server:
    url: str
    token: str
    email: str
    password: str


def executable() -> Path | None:
    path = VENV / "bin" / "label-studio"
    return path if path.exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_server(document_root: str | None = None, timeout: float = 240.0):
    """Start a server; yield its `Server`. ``document_root``: where local file serving
    (``/data/local-files/?d=``) may read."""
    exe = executable()
    if exe is None:
        raise FileNotFoundError(f"{VENV}/bin/label-studio missing: bash tests/setup-peers.sh")
    data = tempfile.mkdtemp(prefix="label-studio-")
    port, token = _free_port(), secrets.token_hex(20)
    server = Server(f"http://127.0.0.1:{port}", token, "reviewer@example.com", secrets.token_hex(8))
    env = {**os.environ, "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true", "DJANGO_DB": "sqlite",
           "LABEL_STUDIO_BASE_DATA_DIR": data, "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
           "LOCAL_FILES_SERVING_ENABLED": "true" if document_root else "false",
           **({"LOCAL_FILES_DOCUMENT_ROOT": document_root} if document_root else {})}
    log = open(os.path.join(data, "server.log"), "w")
    process = subprocess.Popen(
        [str(exe), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", data, "--username", server.email, "--password", server.password,
         "--user-token", token], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=data,
        start_new_session=True)
    try:
        _wait(server, process, timeout, os.path.join(data, "server.log"))
        yield server
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        shutil.rmtree(data, ignore_errors=True)


def _wait(server: Server, process: subprocess.Popen, timeout: float, log: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Label Studio exited ({process.returncode}):\n"
                               f"{Path(log).read_text()[-3000:]}")
        try:
            answer = httpx.get(f"{server.url}/api/projects",
                               headers={"Authorization": f"Token {server.token}"}, timeout=5)
            if answer.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"Label Studio did not answer in {timeout:.0f} s:\n"
                       f"{Path(log).read_text()[-3000:]}")
