"""Review-queue fixtures: every test runs on SQLite and on a private PostgreSQL server.

The server (session scope) is started from Debian's binaries in a temporary directory
(as root it runs as the ``postgres`` user), listens on 127.0.0.1 only, and is stopped at
the end of the session. Durability is off (fsync, synchronous_commit): it is thrown away.
PostgreSQL tests are skipped, with the reason, only where no server can start here
(psycopg or the server binaries missing, or no user to run it as); any other failure to
start is an error.
"""

from __future__ import annotations

import itertools

import pytest

_databases = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> str:
    """URL of the session's server (database ``postgres``)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[postgres,test]')")
    from tests.pg_server import ServerUnavailable, local_server

    server = local_server({"fsync": "off", "synchronous_commit": "off",
                           "full_page_writes": "off", "max_connections": "200"})
    try:
        url = server.__enter__()
    except ServerUnavailable as e:
        pytest.skip(f"no PostgreSQL server can start here: {e}")
    try:
        yield url
    finally:
        server.__exit__(None, None, None)


@pytest.fixture
def pg_url(pg_server) -> str:
    """A fresh, empty database on the session's server."""
    import psycopg

    name = f"review_{next(_databases)}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg_server.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
def queue_url(request, tmp_path) -> str:
    """An empty queue's URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'review.db'}"
    return request.getfixturevalue("pg_url")
