"""The review queue's contract: its task and states, and the `Backend` protocol that each
store (`tasks.review.sqlite`, `tasks.review.postgres`) keeps. The facade that picks a backend
by URL is `tasks.review.queue.ReviewQueue`; the backends import only this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from tasks.errors import LeaseLost, QueueError

EXPIRED_REASON = "lease expired"


class State(StrEnum):
    QUEUED = "queued"
    LEASED = "leased"
    DONE = "done"
    DEAD = "dead"


# Events the queue writes itself; `record` may not forge them.
BUILTIN_EVENTS = frozenset({"enqueued", "leased", "heartbeat", "released", "failed", "expired",
                            "completed", "dead"})


@dataclass(frozen=True, slots=True)
class Task:
    """One task as stored. ``worker``/``lease_expires_at`` are set while it is leased
    (``worker`` stays set on a done task: who completed it)."""

    id: int
    key: str
    priority: float
    payload: dict
    state: State
    attempts: int
    worker: str | None
    lease_expires_at: datetime | None
    created_at: datetime


class Backend(Protocol):
    """What a storage backend implements. Arguments arrive validated; JSON arrives as text.

    Every method that changes state MUST do it in one transaction, MUST append the matching
    history events in that transaction, and MUST raise `LeaseLost` (via `lease_lost`) when
    ``worker`` does not hold a live lease, `QueueError` for an unknown id.
    """

    def enqueue_many(self, rows: Sequence[tuple[str, float, str]]) -> list[int]: ...
    def known(self, keys: Sequence[str]) -> set[str]: ...
    def lease(self, worker: str, lease_seconds: float, n: int, max_attempts: int) -> list[Task]: ...
    def heartbeat(self, task_id: int, worker: str, lease_seconds: float) -> Task: ...
    def complete(self, task_id: int, worker: str, result: str) -> Task: ...
    def release(self, task_id: int, worker: str) -> Task: ...
    def fail(self, task_id: int, worker: str, reason: str, max_attempts: int) -> Task: ...
    def record(self, task_id: int, event: str, detail: str) -> None: ...
    def get(self, task_id: int) -> Task: ...
    def list(self, state: State | None, limit: int, offset: int) -> list[Task]: ...
    def stats(self) -> dict[str, Any]: ...
    def history(self, task_id: int) -> list[dict[str, Any]]: ...
    def result(self, task_id: int) -> Any: ...
    def close(self) -> None: ...


def lease_lost(task: Task | None, task_id: int, worker: str, now: datetime, where: str) -> QueueError:
    """The error for a change ``worker`` may not make, given the task as it is ``now``."""
    if task is None:
        return QueueError(f"no task with id {task_id} in {where}")
    name = f"task {task.id} ({task.key!r})"
    if task.state == State.LEASED and task.worker == worker:
        why = f"its lease expired at {task.lease_expires_at.isoformat()}"
    elif task.state == State.LEASED:
        why = (f"worker {task.worker!r} holds it now (until "
               f"{task.lease_expires_at.isoformat()})")
    elif task.state == State.DONE:
        why = f"it is done (completed by {task.worker!r})"
    elif task.state == State.DEAD:
        why = f"it is dead after {task.attempts} failed attempts"
    else:
        why = "it is queued again (the lease expired or was released)"
    return LeaseLost(f"worker {worker!r} does not hold a live lease on {name} at "
                     f"{now.isoformat()}: {why}")


def utc(seconds: float | None) -> datetime | None:
    """Epoch seconds as an aware UTC datetime."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)
