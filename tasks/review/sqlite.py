"""The review queue in one SQLite file, shared by many processes on one machine.

How it stays correct and fast with many writing processes:
- WAL journal with ``synchronous=NORMAL``: readers never block the writer, and a commit
  appends to the WAL without an fsync (the WAL is synced at checkpoints; a power cut can
  lose the last commits but never corrupts the file).
- Every change is one ``BEGIN IMMEDIATE`` transaction: it takes the write lock up front, so
  a writer never reads and then fails to upgrade (SQLITE_BUSY in mid-transaction). Inside
  it, a plain SELECT then UPDATE by id is atomic, and cheaper: leasing one task took ~10 us
  of statements that way against ~40 us as one ``UPDATE ... WHERE id IN (SELECT ...)
  RETURNING`` (RETURNING alone cost ~15 us here).
- Waiting writers are left to SQLite's busy handler (``busy_timeout``), which sleeps 1, 2,
  5, 10... ms between tries. Writers queueing on an OS lock instead (``flock`` before
  BEGIN IMMEDIATE, woken as soon as it is free) measured no faster with 8, 16 or 32
  processes on 2 cores: while a writer sleeps the others use the CPU, and the limit is
  the serial part (one write transaction at a time, ~150 us each here). See
  benchmarks/README.md.
- The next task comes from a partial index on queued tasks in lease order
  ``(priority DESC, id)``; expired leases from a partial index on leased tasks by expiry.
  History is a WITHOUT ROWID table clustered by (task, seq): one b-tree write per event.
- One connection per queue object per process, opened lazily and reopened when
  ``os.getpid()`` changes (a connection must not cross a fork; the inherited one is kept
  referenced, never used or closed, in the child).

Times are epoch seconds (REAL) from the writing process's clock, read after the write lock
is taken, so they increase in commit order.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Any

from tasks.review.contract import EXPIRED_REASON, State, Task, lease_lost, utc
from tasks.errors import QueueError

BUSY_TIMEOUT_MS = 60_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS review_tasks (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    priority REAL NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'done', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    lease_expires_at REAL,
    created_at REAL NOT NULL,
    result TEXT
);
CREATE INDEX IF NOT EXISTS review_tasks_queued
    ON review_tasks (priority DESC, id) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS review_tasks_leased
    ON review_tasks (lease_expires_at) WHERE state = 'leased';
-- History, clustered by task: one b-tree to write per event (no separate index), and a
-- task's events are read in one range. seq numbers each task's events from 1. Events are
-- written only with their task, in its transaction (no foreign key: SQLite would not check
-- it by default anyway).
CREATE TABLE IF NOT EXISTS review_events (
    task_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    worker TEXT,
    expires_at REAL,
    detail TEXT,
    PRIMARY KEY (task_id, seq)
) WITHOUT ROWID;
"""

COLUMNS = "id, key, priority, payload, state, attempts, worker, lease_expires_at, created_at"
SELECT_ONE = f"SELECT {COLUMNS} FROM review_tasks WHERE id = ?"
NEXT = (f"SELECT {COLUMNS} FROM review_tasks WHERE state = 'queued' "
        "ORDER BY priority DESC, id LIMIT ?")
EVENT = ("INSERT INTO review_events (task_id, seq, at, event, worker, expires_at, detail) "
         "VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM review_events WHERE task_id = ?1), "
         "?2, ?3, ?4, ?5, ?6)")
SET_LEASE = "UPDATE review_tasks SET state = 'leased', worker = ?, lease_expires_at = ? WHERE id = ?"
SET_STATE = ("UPDATE review_tasks SET state = ?, attempts = ?, worker = NULL, lease_expires_at = NULL "
             "WHERE id = ?")

# Connections inherited over fork: never closed in the child (closing could checkpoint or
# unlock files the parent still uses), just kept alive here.
_ABANDONED: list[Any] = []
_STATES = {s.value: s for s in State}


def _count_attempt(conn, now: float, task_id: int, worker: str | None, attempts: int,
                   max_attempts: int, event: str, reason: str, expires: float | None):
    """A failed attempt (``failed`` or ``expired``): back to the queue, or dead after
    ``max_attempts``, with its events. Returns (state, attempts)."""
    attempts += 1
    state = "dead" if attempts >= max_attempts else "queued"
    conn.execute(SET_STATE, (state, attempts, task_id))
    detail = json.dumps({"reason": reason, "attempts": attempts})
    conn.execute(EVENT, (task_id, now, event, worker, expires, detail))
    if state == "dead":
        conn.execute(EVENT, (task_id, now, "dead", worker, None, detail))
    return state, attempts


def _task(row: tuple) -> Task:
    return Task(id=row[0], key=row[1], priority=float(row[2]), payload=json.loads(row[3]),
                state=_STATES[row[4]], attempts=row[5], worker=row[6],
                lease_expires_at=utc(row[7]), created_at=utc(row[8]))


def _changed(row: tuple, state: str, attempts: int, worker: str | None, expires: float | None) -> tuple:
    return (*row[:4], state, attempts, worker, expires, row[8])


class SQLiteBackend:
    """`tasks.review.queue.Backend` on a SQLite file (see the module docstring)."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self._pid: int | None = None
        self._conn: sqlite3.Connection | None = None
        self._thread_lock = threading.RLock()

    # -- connection ------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._pid == os.getpid():
            return self._conn
        if self._conn is not None:  # inherited over fork
            _ABANDONED.append(self._conn)
        self._conn = None
        conn = None
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False, cached_statements=64)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                raise QueueError(f"{self.path}: SQLite cannot use WAL mode here (a network "
                                 "filesystem?); the review queue needs it for many processes")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._conn, self._pid = conn, os.getpid()
            with self._write() as (c, _):
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        c.execute(statement)
        except (sqlite3.Error, QueueError) as e:
            self._conn = self._pid = None
            if conn is not None:
                conn.close()
            if isinstance(e, QueueError):
                raise
            raise QueueError(f"cannot open the review queue {self.path}: {e}") from e
        return self._conn

    def close(self) -> None:
        with self._thread_lock:
            if self._pid == os.getpid() and self._conn is not None:
                self._conn.close()
            self._conn = self._pid = None

    @contextmanager
    def _write(self):
        """One write transaction: BEGIN IMMEDIATE, yield (connection, now), COMMIT."""
        with self._thread_lock:
            conn = self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise QueueError(f"review queue {self.path}: cannot start a write: {e}") from e
            try:
                yield conn, time.time()
                conn.execute("COMMIT")
            except BaseException as e:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise QueueError(f"review queue {self.path}: {e}") from e
                raise

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._thread_lock:
            conn = self._connect()
            try:
                return conn.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise QueueError(f"review queue {self.path}: {e}") from e

    def _held(self, conn, task_id: int, worker: str, now: float) -> tuple:
        """The task's row if ``worker`` holds a live lease on it, else the error saying why.
        (Inside the write transaction nobody else can change it between check and update.)"""
        row = conn.execute(SELECT_ONE, (task_id,)).fetchone()
        if row is None or row[4] != "leased" or row[6] != worker or row[7] <= now:
            raise lease_lost(row and _task(row), task_id, worker, utc(now), self.path)
        return row

    # -- changes ---------------------------------------------------------------------------

    def enqueue_many(self, rows) -> list[int]:
        keys = json.dumps([key for key, _, _ in rows])
        with self._write() as (conn, now):
            (last,) = conn.execute("SELECT coalesce(max(id), 0) FROM review_tasks").fetchone()
            conn.executemany(
                "INSERT INTO review_tasks (key, priority, payload, state, created_at) "
                "VALUES (?, ?, ?, 'queued', ?) ON CONFLICT (key) DO NOTHING",
                [(key, priority, payload, now) for key, priority, payload in rows])
            # New rows are exactly those above the old maximum: we hold the write lock.
            conn.execute("INSERT INTO review_events (task_id, seq, at, event, detail) "
                         "SELECT id, 1, ?, 'enqueued', json_object('priority', priority) "
                         "FROM review_tasks WHERE id > ?", (now, last))
            ids = dict(conn.execute("SELECT key, id FROM review_tasks WHERE key IN "
                                    "(SELECT value FROM json_each(?))", (keys,)))
        return [ids[key] for key, _, _ in rows]

    def _reclaim(self, conn, now: float, max_attempts: int) -> None:
        """Return expired leases to the queue (or to dead), each counted as a failed attempt."""
        expired = conn.execute("SELECT id, worker, lease_expires_at, attempts FROM review_tasks "
                               "WHERE state = 'leased' AND lease_expires_at <= ?", (now,)).fetchall()
        for task_id, worker, expires, attempts in expired:
            _count_attempt(conn, now, task_id, worker, attempts, max_attempts, "expired",
                           EXPIRED_REASON, expires)

    def lease(self, worker, lease_seconds, n, max_attempts) -> list[Task]:
        with self._write() as (conn, now):
            self._reclaim(conn, now, max_attempts)
            rows = conn.execute(NEXT, (n,)).fetchall()
            expires = now + lease_seconds
            if len(rows) == 1:
                conn.execute(SET_LEASE, (worker, expires, rows[0][0]))
                conn.execute(EVENT, (rows[0][0], now, "leased", worker, expires, None))
            elif rows:
                conn.executemany(SET_LEASE, [(worker, expires, row[0]) for row in rows])
                conn.executemany(EVENT, [(row[0], now, "leased", worker, expires, None)
                                         for row in rows])
        return [_task(_changed(row, "leased", row[5], worker, expires)) for row in rows]

    def heartbeat(self, task_id, worker, lease_seconds) -> Task:
        with self._write() as (conn, now):
            row = self._held(conn, task_id, worker, now)
            expires = now + lease_seconds
            conn.execute("UPDATE review_tasks SET lease_expires_at = ? WHERE id = ?",
                         (expires, task_id))
            conn.execute(EVENT, (task_id, now, "heartbeat", worker, expires, None))
        return _task(_changed(row, "leased", row[5], worker, expires))

    def complete(self, task_id, worker, result) -> Task:
        with self._write() as (conn, now):
            row = self._held(conn, task_id, worker, now)
            conn.execute("UPDATE review_tasks SET state = 'done', result = ?, "
                         "lease_expires_at = NULL WHERE id = ?", (result, task_id))
            conn.execute(EVENT, (task_id, now, "completed", worker, None, None))
        return _task(_changed(row, "done", row[5], worker, None))

    def release(self, task_id, worker) -> Task:
        with self._write() as (conn, now):
            row = self._held(conn, task_id, worker, now)
            conn.execute(SET_STATE, ("queued", row[5], task_id))
            conn.execute(EVENT, (task_id, now, "released", worker, None, None))
        return _task(_changed(row, "queued", row[5], None, None))

    def fail(self, task_id, worker, reason, max_attempts) -> Task:
        with self._write() as (conn, now):
            row = self._held(conn, task_id, worker, now)
            state, attempts = _count_attempt(conn, now, task_id, worker, row[5], max_attempts,
                                             "failed", reason, None)
        return _task(_changed(row, state, attempts, None, None))

    def record(self, task_id, event, detail) -> None:
        with self._write() as (conn, now):
            if conn.execute("SELECT 1 FROM review_tasks WHERE id = ?", (task_id,)).fetchone() is None:
                raise QueueError(f"no task with id {task_id} in {self.path}")
            conn.execute(EVENT, (task_id, now, event, None, None, detail))

    # -- reads -----------------------------------------------------------------------------

    def get(self, task_id) -> Task:
        rows = self._read(SELECT_ONE, (task_id,))
        if not rows:
            raise QueueError(f"no task with id {task_id} in {self.path}")
        return _task(rows[0])

    def known(self, keys) -> set[str]:
        rows = self._read("SELECT key FROM review_tasks WHERE key IN (SELECT value FROM json_each(?))",
                          (json.dumps(list(keys)),))
        return {key for (key,) in rows}

    def list(self, state, limit, offset) -> list[Task]:
        where = "" if state is None else "WHERE state = ?"
        args = () if state is None else (str(state),)
        rows = self._read(f"SELECT {COLUMNS} FROM review_tasks {where} ORDER BY priority DESC, id LIMIT ? OFFSET ?",
                          (*args, limit, offset))
        return [_task(row) for row in rows]

    def stats(self) -> dict[str, Any]:
        now = time.time()
        (row,) = self._read(
            "SELECT sum(state = 'queued'), sum(state = 'leased'), sum(state = 'done'), "
            "sum(state = 'dead'), sum(state = 'leased' AND lease_expires_at <= ?), count(*), "
            "min(CASE WHEN state = 'queued' THEN created_at END) FROM review_tasks", (now,))
        counts = dict(zip(("queued", "leased", "done", "dead", "expired", "total"),
                          (int(v or 0) for v in row[:6])))
        counts["oldest_queued_age_s"] = None if row[6] is None else max(0.0, now - row[6])
        return counts

    def history(self, task_id) -> list[dict[str, Any]]:
        rows = self._read("SELECT event, at, worker, expires_at, detail FROM review_events "
                          "WHERE task_id = ? ORDER BY seq", (task_id,))
        if not rows:
            self.get(task_id)  # unknown id: QueueError
        return [{"event": event, "at": utc(at), "worker": worker, "expires_at": utc(expires),
                 "detail": json.loads(detail) if detail else {}}
                for event, at, worker, expires, detail in rows]

    def result(self, task_id) -> Any:
        rows = self._read("SELECT state, result FROM review_tasks WHERE id = ?", (task_id,))
        if not rows:
            raise QueueError(f"no task with id {task_id} in {self.path}")
        if rows[0][0] != State.DONE:
            raise QueueError(f"task {task_id} has no result: it is {rows[0][0]}")
        return json.loads(rows[0][1])

