"""The review queue: tasks that people (or workers) lease, renew, complete or fail.

One API over two backends, picked by the URL's scheme: ``sqlite:///rel/path.db`` or
``sqlite:////abs/path.db`` (SQLAlchemy's spelling) for one machine, ``postgresql://user@host:port/db``
for many. The rules, the same on both:

- `enqueue` is idempotent by key: a rerun returns the existing task's id and never changes it.
- `lease` hands out the highest priority first, then the oldest (enqueue order), for
  ``lease_seconds``; `heartbeat` renews. Only the worker holding a *live* lease may
  heartbeat, complete, release or fail a task; anyone else gets `LeaseLost` naming the task,
  the worker and why (expired, held by another worker, done...).
- `release` puts a task back without counting an attempt; `fail` counts one. A lease that
  expires unrenewed counts as a failed attempt too (reason "lease expired"); it is accounted
  lazily, when the next `lease` call reclaims expired leases, so a task that kills every
  worker that takes it still ends ``dead`` after ``max_attempts``.
- Every state change is one transaction and appends to the task's history (`history`), the
  audit trail the corrections step extends with `record`.

Times: a `Task`'s times are timezone-aware UTC datetimes. SQLite takes them from the clock of
the process that writes (all writers share one machine's clock); PostgreSQL from the
server's ``now()``, so workers on machines with skewed clocks still agree.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from tasks.errors import QueueError
from tasks.review.contract import State, BUILTIN_EVENTS, Task, Backend

DEFAULT_MAX_ATTEMPTS = 3


def redact_url(url: str) -> str:
    """The URL without a password (for messages)."""
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", url)


def parse_url(url: str) -> tuple[str, str]:
    """``(kind, target)``: ("sqlite", file path) or ("postgresql", libpq URL)."""
    if not isinstance(url, str) or "://" not in url:
        raise QueueError(f"review queue URL {url!r} is not a URL: expected sqlite:///path/to/review.db "
                         "or postgresql://user@host:port/db")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        if parts.netloc:
            raise QueueError(f"review queue URL {url!r}: a sqlite URL has no host; use "
                             "sqlite:///relative/path.db or sqlite:////absolute/path.db")
        path = parts.path[1:]  # the slash after the empty host is not part of the path
        if not path or path == ":memory:" or parts.query or parts.fragment:
            raise QueueError(f"review queue URL {url!r} names no database file (an in-memory "
                             "database cannot be shared by workers); use sqlite:///path/to/review.db")
        return "sqlite", path
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        return "postgresql", "postgresql" + url[len(parts.scheme):]
    raise QueueError(f"review queue URL {redact_url(url)!r}: unknown scheme {parts.scheme!r}; "
                     "expected sqlite:///path/to/review.db or postgresql://user@host:port/db")


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise QueueError(f"{what} is not JSON-able: {e}") from e


def _positive(value: float, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as e:
        raise QueueError(f"{what} must be a number, got {value!r}") from e
    if not (math.isfinite(number) and number > 0):
        raise QueueError(f"{what} must be a positive finite number of seconds, got {value!r}")
    return number


def _name(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise QueueError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _id(task_id: int) -> int:
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        raise QueueError(f"a task id is an int, got {task_id!r}")
    return task_id


class ReviewQueue:
    """A review queue at ``url``; the backend connects lazily, once per process.

    ``max_attempts`` failures (explicit `fail` or expired lease) send a task to ``dead``.
    Worker names must be unique per worker (e.g. ``host:pid``): the name is the lease's owner.
    A queue object pickles as its URL, so it can be handed to spawned processes.
    """

    def __init__(self, url: str, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS):
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise QueueError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
        kind, target = parse_url(url)
        self.url = url
        self.max_attempts = max_attempts
        if kind == "sqlite":
            from tasks.review.sqlite import SQLiteBackend

            self._backend: Backend = SQLiteBackend(target)
        else:
            from tasks.review.postgres import PostgresBackend

            self._backend = PostgresBackend(target, redact_url(url))

    def __repr__(self) -> str:
        return f"ReviewQueue({redact_url(self.url)!r}, max_attempts={self.max_attempts})"

    def __reduce__(self):
        return (_reopen, (self.url, self.max_attempts))

    def __enter__(self) -> ReviewQueue:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._backend.close()

    # -- producers -------------------------------------------------------------------------

    def enqueue(self, key: str, priority: float, payload: dict) -> int:
        """Add a task unless one with ``key`` exists; return its id (new or existing)."""
        return self.enqueue_many([(key, priority, payload)])[0]

    def enqueue_many(self, items: Iterable[tuple[str, float, dict]]) -> list[int]:
        """`enqueue` for many tasks in one transaction; ids in input order (a key repeated
        in ``items`` keeps its first priority and payload)."""
        rows = []
        for key, priority, payload in items:
            _name(key, "a task key")
            if isinstance(priority, bool):
                raise QueueError(f"task {key!r}: priority must be a number, got {priority!r}")
            try:
                number = float(priority)
            except (TypeError, ValueError) as e:
                raise QueueError(f"task {key!r}: priority must be a number, got {priority!r}") from e
            if not math.isfinite(number):
                raise QueueError(f"task {key!r}: priority must be finite, got {priority!r}")
            if not isinstance(payload, dict):
                raise QueueError(f"task {key!r}: payload must be a dict, got {type(payload).__name__}")
            rows.append((key, number, _json(payload, f"task {key!r}: payload")))
        return self._backend.enqueue_many(rows) if rows else []

    def known(self, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` have a task (in any state): what a producer need not build again."""
        keys = [_name(key, "a task key") for key in keys]
        return self._backend.known(keys) if keys else set()

    # -- workers ---------------------------------------------------------------------------

    def lease(self, worker: str, lease_seconds: float) -> Task | None:
        """The next task (highest priority, then oldest), leased to ``worker``; None if none."""
        tasks = self.lease_many(worker, lease_seconds, 1)
        return tasks[0] if tasks else None

    def lease_many(self, worker: str, lease_seconds: float, n: int) -> list[Task]:
        """Up to ``n`` tasks in queue order, leased to ``worker`` in one transaction."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise QueueError(f"n must be an int >= 1, got {n!r}")
        return self._backend.lease(_name(worker, "worker"), _positive(lease_seconds, "lease_seconds"),
                                   n, self.max_attempts)

    def heartbeat(self, task_id: int, worker: str, lease_seconds: float) -> Task:
        """Renew ``worker``'s live lease to ``lease_seconds`` from now."""
        return self._backend.heartbeat(_id(task_id), _name(worker, "worker"),
                                       _positive(lease_seconds, "lease_seconds"))

    def complete(self, task_id: int, worker: str, result: Any = None) -> Task:
        """Mark the task done and store ``result`` (JSON-able)."""
        return self._backend.complete(_id(task_id), _name(worker, "worker"),
                                      _json(result, f"the result of task {task_id}"))

    def release(self, task_id: int, worker: str) -> Task:
        """Put the task back in the queue without counting an attempt."""
        return self._backend.release(_id(task_id), _name(worker, "worker"))

    def fail(self, task_id: int, worker: str, reason: str) -> Task:
        """Count a failed attempt: back to the queue, or ``dead`` after ``max_attempts``."""
        return self._backend.fail(_id(task_id), _name(worker, "worker"), _name(reason, "reason"),
                                  self.max_attempts)

    # -- audit and inspection --------------------------------------------------------------

    def record(self, task_id: int, event: str, detail: dict | None = None) -> None:
        """Append an event of the caller's own (e.g. what a correction changed)."""
        _name(event, "event")
        if event in BUILTIN_EVENTS:
            raise QueueError(f"event {event!r} is written by the queue itself; use another name")
        if detail is not None and not isinstance(detail, dict):
            raise QueueError(f"detail must be a dict, got {type(detail).__name__}")
        self._backend.record(_id(task_id), event, _json(detail or {}, f"detail of {event!r}"))

    def get(self, task_id: int) -> Task:
        return self._backend.get(_id(task_id))

    def list(self, state: str | None = None, limit: int = 100, offset: int = 0) -> list[Task]:
        """Tasks in the order `lease` hands them out (highest priority first, then oldest),
        optionally only those in ``state``."""
        if state is not None:
            try:
                state = State(state)
            except ValueError as e:
                raise QueueError(f"unknown state {state!r}; one of {[s.value for s in State]}") from e
        for value, what in ((limit, "limit"), (offset, "offset")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise QueueError(f"{what} must be an int >= 0, got {value!r}")
        return self._backend.list(state, limit, offset)

    def stats(self) -> dict[str, Any]:
        """Counts per state, ``expired`` (leases past expiry not reclaimed yet, counted in
        ``leased`` too), ``total`` and ``oldest_queued_age_s`` (None when nothing is queued)."""
        return self._backend.stats()

    def history(self, task_id: int) -> list[dict[str, Any]]:
        """The task's events in order: dicts with ``event``, ``at``, ``worker``,
        ``expires_at`` (leases and heartbeats; the lost lease's expiry on ``expired``) and
        ``detail`` (e.g. ``reason``, ``attempts``)."""
        return self._backend.history(_id(task_id))

    def result(self, task_id: int) -> Any:
        """The result stored by `complete`; `QueueError` if the task is not done."""
        return self._backend.result(_id(task_id))


def _reopen(url: str, max_attempts: int) -> ReviewQueue:
    return ReviewQueue(url, max_attempts=max_attempts)


