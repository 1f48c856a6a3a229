"""The review queue on PostgreSQL, for workers on many machines (psycopg 3, extra ``postgres``).

Leasing takes the next rows with ``FOR UPDATE SKIP LOCKED``, so concurrent workers never
wait on each other's candidate rows and never get the same task. Each change is a single
statement (data-modifying CTEs: the update and its history events), run in autocommit, so
a change is one transaction and one round trip. Expired leases are reclaimed by a
statement of their own, run only when the lease statement found some (it then leases
nothing and says so), so that a reclaimed task is leased in its priority order by the same
call. All times are the server's clock (``now()``; a new lease's start is
``clock_timestamp()``); clients' clocks never matter.

A throwaway server for tests and benchmarks is in `tests/pg_server.py`.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC
from typing import Any

from tasks.errors import QueueError
from tasks.review.contract import EXPIRED_REASON, State, Task, lease_lost

SCHEMA = """
CREATE TABLE IF NOT EXISTS review_tasks (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key text NOT NULL UNIQUE,
    priority double precision NOT NULL,
    payload jsonb NOT NULL,
    state text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'leased', 'done', 'dead')),
    attempts integer NOT NULL DEFAULT 0,
    worker text,
    lease_expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    result jsonb
);
CREATE INDEX IF NOT EXISTS review_tasks_queued
    ON review_tasks (priority DESC, id) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS review_tasks_leased
    ON review_tasks (lease_expires_at) WHERE state = 'leased';
-- No foreign key to review_tasks: events are written only with their task, in the same
-- statement, and tasks are never deleted; the key's check cost ~13% of the server's CPU.
CREATE TABLE IF NOT EXISTS review_events (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id bigint NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    event text NOT NULL,
    worker text,
    expires_at timestamptz,
    detail jsonb
);
CREATE INDEX IF NOT EXISTS review_events_task ON review_events (task_id, seq);
"""
SCHEMA_PRESENT = ("SELECT to_regclass('review_tasks_queued'), to_regclass('review_tasks_leased'), "
                  "to_regclass('review_events_task')")
SCHEMA_LOCK = 0x72657669  # advisory lock: concurrent first connections create the schema once

COLUMNS = "id, key, priority, payload, state, attempts, worker, lease_expires_at, created_at"
ALIVE = ("id = %(id)s AND state = 'leased' AND worker = %(worker)s "
         "AND lease_expires_at > now()")

RECLAIM = f"""
WITH gone AS (
    SELECT id, worker, lease_expires_at, attempts FROM review_tasks
    WHERE state = 'leased' AND lease_expires_at <= now()
    ORDER BY id FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE review_tasks t SET attempts = gone.attempts + 1,
        state = CASE WHEN gone.attempts + 1 >= %(max)s THEN 'dead' ELSE 'queued' END,
        worker = NULL, lease_expires_at = NULL
    FROM gone WHERE t.id = gone.id
    RETURNING t.id, t.state, t.attempts, gone.worker, gone.lease_expires_at AS expired_at
)
INSERT INTO review_events (task_id, event, worker, expires_at, detail)
SELECT id, event, worker, expires_at, jsonb_build_object('reason', '{EXPIRED_REASON}',
                                                         'attempts', attempts)
FROM (SELECT id, 'expired' AS event, worker, expired_at AS expires_at, attempts, 0 AS k FROM moved
      UNION ALL
      SELECT id, 'dead', worker, NULL, attempts, 1 FROM moved WHERE state = 'dead') e
ORDER BY id, k
"""

# Leases ``n`` queued tasks, unless {guard} is true. Guarded, it leases nothing while any
# lease has expired and says so with one row of NULLs and ``reclaim`` true: the caller then
# reclaims and leases again, so a returned task is leased in its priority order. That way
# the usual lease is one statement and one round trip (psycopg costs ~100 us of client CPU
# per statement here), and the reclaim statement runs only when there is work for it.
LEASE = f"""
WITH expired AS (
    SELECT {{guard}} AND EXISTS (SELECT 1 FROM review_tasks
                                 WHERE state = 'leased' AND lease_expires_at <= now()) AS found
), pick AS (
    SELECT id FROM review_tasks WHERE state = 'queued' AND NOT (SELECT found FROM expired)
    ORDER BY priority DESC, id LIMIT %(n)s FOR UPDATE SKIP LOCKED
), leased AS (
    UPDATE review_tasks t SET state = 'leased', worker = %(worker)s,
        -- clock_timestamp(), not now(): now() is when this statement's transaction began,
        -- which can be before the reclaim that freed the row committed, so a new lease
        -- could seem to start (by microseconds) before the old one ran out
        lease_expires_at = clock_timestamp() + make_interval(secs => %(secs)s)
    FROM pick WHERE t.id = pick.id
    RETURNING t.{COLUMNS.replace(", ", ", t.")}
), logged AS (
    INSERT INTO review_events (task_id, event, worker, expires_at)
    SELECT id, 'leased', worker, lease_expires_at FROM leased ORDER BY priority DESC, id
)
SELECT * FROM (SELECT {COLUMNS}, false AS reclaim FROM leased ORDER BY priority DESC, id) l
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, true FROM expired WHERE found
"""
GUARDED_LEASE = LEASE.format(guard="true")
PLAIN_LEASE = LEASE.format(guard="false")

# A change by the lease holder: {set} applies if the lease is live; the event (and "dead"
# after it when the change killed the task) is logged in the same statement.
CHANGE = f"""
WITH t AS (
    UPDATE review_tasks SET {{set}} WHERE {ALIVE} RETURNING {COLUMNS}
), logged AS (
    INSERT INTO review_events (task_id, event, worker, expires_at, detail)
    SELECT id, event, %(worker)s, expires_at, detail FROM (
        SELECT id, %(event)s AS event, lease_expires_at AS expires_at, 0 AS k,
               CASE WHEN %(reason)s::text IS NULL THEN NULL ELSE
                   jsonb_build_object('reason', %(reason)s::text, 'attempts', attempts) END AS detail
        FROM t
        UNION ALL
        SELECT id, 'dead', NULL, 1, jsonb_build_object('reason', %(reason)s::text,
                                                       'attempts', attempts)
        FROM t WHERE state = 'dead') e
    ORDER BY k
)
SELECT {COLUMNS} FROM t
"""

ENQUEUE = """
WITH input AS (
    SELECT * FROM unnest(%(keys)s::text[], %(priorities)s::float8[], %(payloads)s::jsonb[])
        WITH ORDINALITY AS i (key, priority, payload, ord)
), ins AS (
    INSERT INTO review_tasks (key, priority, payload)
    SELECT key, priority, payload FROM input ORDER BY ord
    ON CONFLICT (key) DO NOTHING
    RETURNING id, key, priority
), logged AS (
    INSERT INTO review_events (task_id, event, detail)
    SELECT id, 'enqueued', jsonb_build_object('priority', priority) FROM ins ORDER BY id
)
SELECT key, id FROM ins
UNION ALL
SELECT key, id FROM review_tasks WHERE key = ANY(%(keys)s::text[])
"""

# Connections inherited over fork: never used or closed in the child (closing would end
# the parent's session on the shared socket), just kept alive here.
_ABANDONED: list[Any] = []


def _utc(value):
    return None if value is None else value.astimezone(UTC)


def _task(row: tuple) -> Task:
    return Task(id=row[0], key=row[1], priority=row[2], payload=row[3], state=State(row[4]),
                attempts=row[5], worker=row[6], lease_expires_at=_utc(row[7]),
                created_at=_utc(row[8]))


class PostgresBackend:
    """`tasks.review.queue.Backend` on PostgreSQL (see the module docstring)."""

    def __init__(self, conninfo: str, name: str):
        try:
            import psycopg
        except ImportError as e:
            raise QueueError(f"review queue {name}: PostgreSQL needs psycopg; install the "
                             "'postgres' extra (pip install 'preannotate[postgres]')") from e
        self._psycopg = psycopg
        self.conninfo = conninfo
        self.name = name
        self._pid: int | None = None
        self._conn = None
        self._thread_lock = threading.RLock()

    def _connect(self):
        if self._pid == os.getpid() and self._conn is not None and not self._conn.closed:
            return self._conn
        if self._conn is not None and self._pid != os.getpid():
            _ABANDONED.append(self._conn)
        self._conn = None
        conn = None
        try:
            # An unreachable host answers nothing: give up after 10 s, not TCP's minutes.
            extra = {} if "connect_timeout" in self.conninfo else {"connect_timeout": 10}
            conn = self._psycopg.connect(self.conninfo, autocommit=True, **extra)
            conn.execute("SET TIME ZONE 'UTC'")
            # DDL only when something is missing: even CREATE INDEX IF NOT EXISTS locks the
            # table against writes, and would deadlock with workers already leasing.
            if None in conn.execute(SCHEMA_PRESENT).fetchone():
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                    conn.execute(SCHEMA)
        except self._psycopg.Error as e:
            if conn is not None:
                conn.close()
            raise QueueError(f"cannot open the review queue {self.name}: {e}") from e
        self._conn, self._pid = conn, os.getpid()
        return conn

    def close(self) -> None:
        with self._thread_lock:
            if self._pid == os.getpid() and self._conn is not None:
                self._conn.close()
            self._conn = self._pid = None

    def _run(self, sql: str, params: dict | tuple = ()) -> list[tuple]:
        """One statement in autocommit (= one transaction); its rows."""
        with self._thread_lock:
            conn = self._connect()
            try:
                cur = conn.execute(sql, params)
                return cur.fetchall() if cur.description else []
            except self._psycopg.Error as e:
                if conn.broken:
                    self._conn = None
                raise QueueError(f"review queue {self.name}: {e}") from e

    def _lost(self, task_id: int, worker: str) -> QueueError:
        rows = self._run(f"SELECT {COLUMNS}, now() FROM review_tasks WHERE id = %s", (task_id,))
        if rows:
            return lease_lost(_task(rows[0]), task_id, worker, _utc(rows[0][9]), self.name)
        return lease_lost(None, task_id, worker, _utc(self._run("SELECT now()")[0][0]), self.name)

    # -- changes ---------------------------------------------------------------------------

    def enqueue_many(self, rows) -> list[int]:
        keys = [key for key, _, _ in rows]
        params = {"keys": keys, "priorities": [p for _, p, _ in rows],
                  "payloads": [payload for _, _, payload in rows]}
        ids = dict(self._run(ENQUEUE, params))
        missing = [key for key in keys if key not in ids]
        if missing:  # inserted by a concurrent transaction after this statement's snapshot
            ids.update(self._run("SELECT key, id FROM review_tasks WHERE key = ANY(%s::text[])",
                                 (missing,)))
        return [ids[key] for key in keys]

    def lease(self, worker, lease_seconds, n, max_attempts) -> list[Task]:
        params = {"worker": worker, "secs": lease_seconds, "n": n}
        rows = self._run(GUARDED_LEASE, params)
        if rows and rows[-1][-1]:  # expired leases first: reclaim, then lease in order
            self._run(RECLAIM, {"max": max_attempts})
            rows = self._run(PLAIN_LEASE, params)
        return [_task(row) for row in rows]

    def _change(self, task_id, worker, assignments, event, reason=None, **extra) -> Task:
        rows = self._run(CHANGE.format(set=assignments),
                         {"id": task_id, "worker": worker, "event": event, "reason": reason,
                          **extra})
        if not rows:
            raise self._lost(task_id, worker)
        return _task(rows[0])

    def heartbeat(self, task_id, worker, lease_seconds) -> Task:
        return self._change(task_id, worker,
                            "lease_expires_at = now() + make_interval(secs => %(secs)s)",
                            "heartbeat", secs=lease_seconds)

    def complete(self, task_id, worker, result) -> Task:
        return self._change(task_id, worker,
                            "state = 'done', result = %(result)s::jsonb, lease_expires_at = NULL",
                            "completed", result=result)

    def release(self, task_id, worker) -> Task:
        return self._change(task_id, worker,
                            "state = 'queued', worker = NULL, lease_expires_at = NULL", "released")

    def fail(self, task_id, worker, reason, max_attempts) -> Task:
        # In SET, ``attempts`` is the value before this statement.
        return self._change(task_id, worker,
                            "attempts = attempts + 1, state = CASE WHEN attempts + 1 >= %(max)s "
                            "THEN 'dead' ELSE 'queued' END, worker = NULL, lease_expires_at = NULL",
                            "failed", reason=reason, max=max_attempts)

    def record(self, task_id, event, detail) -> None:
        rows = self._run("INSERT INTO review_events (task_id, event, detail) "
                         "SELECT id, %s, %s::jsonb FROM review_tasks WHERE id = %s RETURNING seq",
                         (event, detail, task_id))
        if not rows:
            raise QueueError(f"no task with id {task_id} in {self.name}")

    # -- reads -----------------------------------------------------------------------------

    def get(self, task_id) -> Task:
        rows = self._run(f"SELECT {COLUMNS} FROM review_tasks WHERE id = %s", (task_id,))
        if not rows:
            raise QueueError(f"no task with id {task_id} in {self.name}")
        return _task(rows[0])

    def known(self, keys) -> set[str]:
        rows = self._run("SELECT key FROM review_tasks WHERE key = ANY(%s::text[])", (list(keys),))
        return {key for (key,) in rows}

    def list(self, state, limit, offset) -> list[Task]:
        where = "" if state is None else "WHERE state = %(state)s"
        rows = self._run(f"SELECT {COLUMNS} FROM review_tasks {where} ORDER BY priority DESC, id "
                         "LIMIT %(limit)s OFFSET %(offset)s",
                         {"state": None if state is None else str(state), "limit": limit,
                          "offset": offset})
        return [_task(row) for row in rows]

    def stats(self) -> dict[str, Any]:
        (row,) = self._run(
            "SELECT count(*) FILTER (WHERE state = 'queued'), count(*) FILTER (WHERE state = 'leased'), "
            "count(*) FILTER (WHERE state = 'done'), count(*) FILTER (WHERE state = 'dead'), "
            "count(*) FILTER (WHERE state = 'leased' AND lease_expires_at <= now()), count(*), "
            "extract(epoch FROM now() - min(created_at) FILTER (WHERE state = 'queued'))::float8 "
            "FROM review_tasks")
        counts = dict(zip(("queued", "leased", "done", "dead", "expired", "total"), row[:6]))
        counts["oldest_queued_age_s"] = None if row[6] is None else max(0.0, row[6])
        return counts

    def history(self, task_id) -> list[dict[str, Any]]:
        rows = self._run("SELECT event, at, worker, expires_at, detail FROM review_events "
                         "WHERE task_id = %s ORDER BY seq", (task_id,))
        if not rows:
            self.get(task_id)  # unknown id: QueueError
        return [{"event": event, "at": _utc(at), "worker": worker, "expires_at": _utc(expires),
                 "detail": detail or {}} for event, at, worker, expires, detail in rows]

    def result(self, task_id) -> Any:
        rows = self._run("SELECT state, result FROM review_tasks WHERE id = %s", (task_id,))
        if not rows:
            raise QueueError(f"no task with id {task_id} in {self.name}")
        if rows[0][0] != State.DONE:
            raise QueueError(f"task {task_id} has no result: it is {rows[0][0]}")
        return rows[0][1]
