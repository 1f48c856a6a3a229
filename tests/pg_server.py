"""A throwaway PostgreSQL server for the review-queue tests and benchmarks: started from
Debian's binaries in a temporary directory, stopped and deleted on exit."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile

from tasks.errors import QueueError


class ServerUnavailable(QueueError):
    """No local PostgreSQL server can be started here (binaries or a user to run it missing)."""


def find_bindir() -> str:
    """Debian's PostgreSQL binaries (15 preferred, else the newest), or those on PATH."""
    candidates = ["/usr/lib/postgresql/15/bin",
                  *sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                          key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0,
                          reverse=True)]
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(os.path.dirname(on_path))
    for path in candidates:
        if os.path.exists(os.path.join(path, "initdb")) and os.path.exists(os.path.join(path, "pg_ctl")):
            return path
    raise ServerUnavailable("no PostgreSQL server binaries (initdb, pg_ctl) in "
                            "/usr/lib/postgresql/*/bin or on PATH (apt-get install postgresql-15)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_server(settings: dict[str, str] | None = None, bindir: str | None = None):
    """Start a private server in a temporary directory; yield its URL (superuser
    ``postgres``, trust auth, 127.0.0.1 only, database ``postgres``); stop and delete it
    on exit. As root the server runs as the ``postgres`` user (PostgreSQL refuses root)."""
    bindir = bindir or find_bindir()
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:
        import pwd

        try:
            owner = pwd.getpwnam("postgres")
        except KeyError as e:
            raise ServerUnavailable("running as root and there is no 'postgres' user to run "
                                    "the server as (PostgreSQL refuses to run as root)") from e
        runuser = shutil.which("runuser")
        if runuser is None:
            raise ServerUnavailable("running as root and there is no runuser to start the "
                                    "server as 'postgres'")
        as_user = [runuser, "-u", "postgres", "--"]
    top = tempfile.mkdtemp(prefix="review-pg-")
    data = os.path.join(top, "data")
    if owner is not None:
        os.chown(top, owner.pw_uid, owner.pw_gid)
    port = _free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {top}"
    for name, value in (settings or {}).items():
        options += f" -c {name}={value}"
    log = os.path.join(top, "server.log")

    def run(*args: str) -> None:
        done = subprocess.run([*as_user, *args], capture_output=True, text=True)
        if done.returncode:
            tail = ""
            if os.path.exists(log):
                with open(log) as f:
                    tail = f.read()[-2000:]
            raise QueueError(f"{' '.join(args[:2])} failed ({done.returncode}): "
                             f"{done.stderr.strip()[-2000:]} {tail}".strip())

    try:
        run(os.path.join(bindir, "initdb"), "-D", data, "--auth=trust", "--username=postgres",
            "--no-locale", "--encoding=UTF8", "--no-sync")
        run(os.path.join(bindir, "pg_ctl"), "-D", data, "-o", options, "-l", log, "-w", "start")
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(os.path.join(bindir, "pg_ctl"), "-D", data, "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(top, ignore_errors=True)
