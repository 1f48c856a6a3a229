"""The review queue under real concurrency: worker processes on SQLite and PostgreSQL.

- 8 processes lease and complete 10,000 tasks. Each process logs every lease it got (task,
  worker, start, expiry; start = expiry - lease_seconds, both in the queue's clock) and every
  completion that succeeded. Some tasks are abandoned on purpose (not completed), so they
  expire and are leased again. Afterwards: no two leases of a task overlap in time, every
  task was completed exactly once, and the queue agrees.
- A worker killed with SIGKILL while it holds a lease (and in the middle of its work): its
  task is leased again once the lease expires, with the expiry in the task's history.

Processes start with the 'spawn' method: the test process has threads, and each worker must
open its own connection anyway.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import sqlite3
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tasks.review import ReviewQueue, State
from tasks.errors import LeaseLost

TASKS = 10_000
WORKERS = 8
LEASE_S = 1.0
ABANDON = 0.003  # share of leases a worker walks away from (they must expire)


def _work(url: str, worker: str, log_dir: str, seed: int) -> None:
    """Lease, complete (or now and then abandon) until every task is done; log it all."""
    rng = random.Random(seed)
    queue = ReviewQueue(url, max_attempts=1000)
    leases, completed, lost = [], [], 0
    while True:
        task = queue.lease(worker, LEASE_S)
        if task is None:
            stats = queue.stats()
            if stats["done"] == stats["total"]:
                break
            time.sleep(0.05)  # abandoned tasks still leased: wait for them to expire
            continue
        expires = task.lease_expires_at.timestamp()
        leases.append((task.id, worker, expires - LEASE_S, expires))
        if rng.random() < ABANDON:
            continue
        try:
            queue.complete(task.id, worker, {"worker": worker})
            completed.append(task.id)
        except LeaseLost:  # descheduled past the expiry: someone else will do it
            lost += 1
    Path(log_dir, f"{worker}.json").write_text(json.dumps(
        {"leases": leases, "completed": completed, "lost": lost}))


def _run_workers(url: str, log_dir: Path, n: int) -> list[dict]:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_work, args=(url, f"w{i}", str(log_dir), i)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0] * n
    return [json.loads((log_dir / f"w{i}.json").read_text()) for i in range(n)]


def test_processes_never_share_a_live_lease_and_lose_nothing(queue_url, tmp_path):
    with ReviewQueue(queue_url) as queue:
        ids = queue.enqueue_many([(f"task-{i}", float(i % 5), {"i": i}) for i in range(TASKS)])
    logs = _run_workers(queue_url, tmp_path, WORKERS)

    by_task = defaultdict(list)
    for log in logs:
        for task_id, worker, start, expires in log["leases"]:
            by_task[task_id].append((start, expires, worker))
    assert set(by_task) == set(ids)
    for task_id, leases in by_task.items():
        leases.sort()
        for (_, expires, worker), (start, _, next_worker) in zip(leases, leases[1:]):
            assert start >= expires - 2e-6, (  # datetimes keep microseconds
                f"task {task_id}: {next_worker} leased it at {start} while {worker}'s lease "
                f"ran until {expires}")

    completed = [task_id for log in logs for task_id in log["completed"]]
    assert sorted(completed) == sorted(ids)  # every task, each exactly once
    releases = sum(len(leases) - 1 for leases in by_task.values())
    assert releases >= 1  # abandoned tasks were leased again (about 30 expected)
    with ReviewQueue(queue_url) as queue:
        stats = queue.stats()
        assert (stats["done"], stats["total"], stats["leased"], stats["queued"]) == (TASKS, TASKS,
                                                                                    0, 0)
        again = next(task_id for task_id, leases in by_task.items() if len(leases) > 1)
        history = [e["event"] for e in queue.history(again)]
        assert history[:3] == ["enqueued", "leased", "expired"] and history[-1] == "completed"
        assert history.count("expired") == len(by_task[again]) - 1


def _hold_one(url: str, ready) -> None:
    """Lease one task for 0.5 s, say which, then hang (until killed)."""
    task = ReviewQueue(url).lease("doomed", 0.5)
    ready.put(task.id)
    time.sleep(600)


def _churn(url: str, worker: str) -> None:
    """Lease and complete as fast as possible until the queue is empty (or killed)."""
    queue = ReviewQueue(url)
    while True:
        task = queue.lease(worker, 0.5)
        if task is None:
            stats = queue.stats()
            if stats["done"] == stats["total"]:
                return
            time.sleep(0.05)
            continue
        try:
            queue.complete(task.id, worker, {})
        except LeaseLost:
            pass


def test_task_of_a_killed_worker_is_leased_again_after_expiry(queue_url):
    ctx = mp.get_context("spawn")
    with ReviewQueue(queue_url) as queue:
        task_id = queue.enqueue("clip", 1.0, {})
        ready = ctx.Queue()
        proc = ctx.Process(target=_hold_one, args=(queue_url, ready))
        proc.start()
        assert ready.get(timeout=60) == task_id
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        assert proc.exitcode == -signal.SIGKILL
        deadline = time.monotonic() + 30
        while (task := queue.lease("survivor", 30.0)) is None:
            assert time.monotonic() < deadline, "the killed worker's task never came back"
            time.sleep(0.05)
        assert (task.id, task.attempts) == (task_id, 1)
        assert [(e["event"], e["worker"]) for e in queue.history(task_id)] == [
            ("enqueued", None), ("leased", "doomed"), ("expired", "doomed"), ("leased", "survivor")]
        queue.complete(task_id, "survivor", {})


def test_workers_killed_mid_work_lose_no_task(queue_url):
    """SIGKILL at arbitrary moments (possibly inside a transaction) leaves a consistent
    queue: the survivors finish every task."""
    ctx = mp.get_context("spawn")
    with ReviewQueue(queue_url, max_attempts=1000) as queue:
        queue.enqueue_many([(f"t{i}", 0.0, {}) for i in range(1500)])
        procs = [ctx.Process(target=_churn, args=(queue_url, f"w{i}")) for i in range(4)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + 60
        while queue.stats()["done"] < 100:  # all started and working
            assert time.monotonic() < deadline
            time.sleep(0.02)
        for p in procs[:2]:
            os.kill(p.pid, signal.SIGKILL)
        for p in procs:
            p.join(timeout=120)
        assert [p.exitcode for p in procs] == [-signal.SIGKILL] * 2 + [0, 0]
        stats = queue.stats()
        assert (stats["done"], stats["total"]) == (1500, 1500)
        assert all(t.state == State.DONE for t in queue.list(limit=2000))
    if queue_url.startswith("sqlite"):
        conn = sqlite3.connect(queue_url.removeprefix("sqlite:///"))
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        conn.close()


@pytest.fixture(autouse=True)
def _no_stray_processes():
    yield
    for child in mp.active_children():
        child.kill()
