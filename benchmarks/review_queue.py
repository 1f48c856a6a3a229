"""Review queue throughput: leases + completions per second with many worker processes.

Each measurement enqueues ``--tasks`` tasks, starts ``--workers`` processes (spawn), lets
them connect, then times them from a common start until the queue is empty: every worker
loops lease -> complete (one op each) until a lease comes back empty. Modes:

- ``sqlite``: `ReviewQueue` on SQLite, one task per `lease`.
- ``sqlite-bulk``: `lease_many` of ``--batch`` tasks, each completed on its own.
- ``naive``: the reference, written below: a plain one-statement-per-operation SQLite queue
  (SELECT the next id, then UPDATE it if still queued; ``sqlite3.connect`` defaults:
  rollback journal, synchronous=FULL, implicit deferred transactions, 5 s busy timeout;
  an index on (state, priority, id) so it is not slowed by a scan; no history).
- ``postgres`` / ``postgres-bulk``: the same as the first two on PostgreSQL: a private
  server started like the tests' (Debian's binaries, a temporary directory, default
  settings unless ``--pg-setting name=value``), or ``--pg-url`` to use yours (its
  ``review_tasks``/``review_events`` tables are dropped first!).

Runs are repeated ``--runs`` times with the mode order rotated each run; the figures are
medians, and the ratio to the naive reference is the median of the per-run ratios.

    python -m benchmarks.review_queue [--tasks 10000] [--workers 8] [--runs 3] [--batch 50]
                                      [--modes sqlite,sqlite-bulk,naive,...] [--pg-url URL]

Results are printed and written as JSON to ``benchmarks/_work/review_queue.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import resource
import shutil
import sqlite3
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.review import ReviewQueue  # noqa: E402

WORK = ROOT / "benchmarks" / "_work"
LEASE_SECONDS = 60.0
MODES = ["sqlite", "sqlite-bulk", "naive", "postgres", "postgres-bulk"]


class NaiveQueue:
    """The reference: what one writes first. One statement per operation, defaults."""

    def __init__(self, path: str):
        self.conn = sqlite3.connect(path)

    def setup(self, n: int) -> None:
        self.conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, key TEXT UNIQUE, "
                          "priority REAL, payload TEXT, state TEXT, worker TEXT, "
                          "lease_expires_at REAL, result TEXT)")
        self.conn.execute("CREATE INDEX tasks_next ON tasks (state, priority DESC, id)")
        self.conn.executemany("INSERT INTO tasks (key, priority, payload, state) "
                              "VALUES (?, ?, ?, 'queued')", _items(n, as_text=True))
        self.conn.commit()

    def lease(self, worker: str, lease_seconds: float) -> int | None:
        while True:
            try:
                row = self.conn.execute("SELECT id FROM tasks WHERE state = 'queued' "
                                        "ORDER BY priority DESC, id LIMIT 1").fetchone()
                if row is None:
                    return None
                cur = self.conn.execute("UPDATE tasks SET state = 'leased', worker = ?, "
                                        "lease_expires_at = ? WHERE id = ? AND state = 'queued'",
                                        (worker, time.time() + lease_seconds, row[0]))
                self.conn.commit()
            except sqlite3.OperationalError:  # "database is locked" after the busy timeout
                self.conn.rollback()
                continue
            if cur.rowcount == 1:
                return row[0]

    def complete(self, task_id: int, worker: str, result: dict) -> None:
        while True:
            try:
                self.conn.execute("UPDATE tasks SET state = 'done', result = ? "
                                  "WHERE id = ? AND worker = ?", (json.dumps(result), task_id, worker))
                self.conn.commit()
                return
            except sqlite3.OperationalError:
                self.conn.rollback()

    def done(self) -> int:
        return self.conn.execute("SELECT count(*) FROM tasks WHERE state = 'done'").fetchone()[0]


def _items(n: int, as_text: bool = False):
    """``n`` tasks of 7 priority levels, small payloads like the flow's."""
    for i in range(n):
        payload = {"clip": f"rec/{i // 100}/{i % 100}.webm", "frames": [0, 299]}
        yield f"task-{i}", float(i % 7), json.dumps(payload) if as_text else payload


def _worker(mode: str, target: str, batch: int, barrier, results) -> None:
    """One worker process: connect, wait for the start, lease and complete until empty.
    Reports its op count and how long each lease call took."""
    name = f"{mode}-{os.getpid()}"
    waits = []
    clock = time.perf_counter
    if mode == "naive":
        queue = NaiveQueue(target)
        queue.done()  # connected before the clock starts
        barrier.wait()
        cpu = _cpu()
        ops = 0
        while True:
            start = clock()
            task_id = queue.lease(name, LEASE_SECONDS)
            waits.append(clock() - start)
            if task_id is None:
                break
            queue.complete(task_id, name, {"ok": True})
            ops += 2
        results.put((ops, waits, _cpu() - cpu))
        return
    queue = ReviewQueue(target)
    queue.stats()
    bulk = mode.endswith("-bulk")
    barrier.wait()
    cpu = _cpu()
    ops = 0
    while True:
        start = clock()
        if bulk:
            tasks = queue.lease_many(name, LEASE_SECONDS, batch)
        else:
            task = queue.lease(name, LEASE_SECONDS)
            tasks = [task] if task else []
        waits.append(clock() - start)
        if not tasks:
            break
        for task in tasks:
            queue.complete(task.id, name, {"ok": True})
        ops += 2 * len(tasks)
    results.put((ops, waits, _cpu() - cpu))


def _cpu() -> float:
    """CPU seconds (user + system) of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _server_cpu(url: str | None) -> float | None:
    """CPU seconds of a local PostgreSQL server: its postmaster and the backends it reaped
    (Linux /proc; None where that cannot be read)."""
    if url is None:
        return None
    import psycopg

    try:
        with psycopg.connect(url) as conn:  # its backend's parent is the postmaster
            backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            with open(f"/proc/{backend}/stat") as f:
                postmaster = int(f.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{postmaster}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    # utime, stime, cutime, cstime: fields 14-17 of stat, 12-15 after the command name.
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def measure(mode: str, tasks: int, workers: int, batch: int, pg_url: str | None) -> dict:
    """One timed run of ``mode`` on a fresh queue; ops/s and a completeness check."""
    work = WORK / "review_queue"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if mode == "naive":
        target = str(work / "naive.db")
        NaiveQueue(target).setup(tasks)
    else:
        if mode.startswith("postgres"):
            target = pg_url
            _reset_postgres(pg_url)
        else:
            target = f"sqlite:///{work / 'review.db'}"
        with ReviewQueue(target) as queue:
            queue.enqueue_many(_items(tasks))
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(mode, target, batch, barrier, results))
             for _ in range(workers)]
    for p in procs:
        p.start()
    server = _server_cpu(pg_url) if mode.startswith("postgres") else None
    barrier.wait(timeout=120)
    start = time.perf_counter()
    reports = [results.get(timeout=600) for _ in procs]
    seconds = time.perf_counter() - start
    for p in procs:
        p.join()
    ops = sum(n for n, _, _ in reports)
    waits = sorted(w for _, ws, _ in reports for w in ws)
    if mode == "naive":
        done = NaiveQueue(target).done()
    else:
        with ReviewQueue(target) as queue:
            done = queue.stats()["done"]
    if done != tasks or ops != 2 * tasks:
        raise SystemExit(f"{mode}: {done} of {tasks} tasks done, {ops} ops counted")
    result = {"mode": mode, "ops": ops, "seconds": seconds, "ops_per_s": ops / seconds,
              "worker_cpu_us_per_op": sum(c for _, _, c in reports) / ops * 1e6,
              "lease_call_ms_p50": 1e3 * waits[len(waits) // 2],
              "lease_call_ms_p99": 1e3 * waits[int(len(waits) * 0.99)]}
    if server is not None:  # includes the few statements of the check above
        time.sleep(0.5)  # the workers' backends exit and are reaped (their CPU counted)
        after = _server_cpu(pg_url)
        if after is not None:
            result["server_cpu_us_per_op"] = (after - server) / ops * 1e6
    return result


def _reset_postgres(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS review_events, review_tasks")
        conn.execute("CHECKPOINT")  # so one run's dirty pages are not flushed during the next


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=50, help="lease_many size in bulk modes")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--pg-url", help="use this server instead of a private one")
    parser.add_argument("--pg-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="server setting for the private server (repeatable)")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {MODES}")

    with contextlib.ExitStack() as stack:
        pg_url = args.pg_url
        if pg_url is None and any(m.startswith("postgres") for m in modes):
            from tests.pg_server import local_server

            settings = dict(s.split("=", 1) for s in args.pg_setting)
            pg_url = stack.enter_context(local_server(settings))
        runs: list[list[dict]] = []
        for run in range(args.runs):
            order = modes[run % len(modes):] + modes[:run % len(modes)]
            results = []
            for mode in order:
                r = measure(mode, args.tasks, args.workers, args.batch, pg_url)
                server = (f", server {r['server_cpu_us_per_op']:.0f} us"
                          if "server_cpu_us_per_op" in r else "")
                print(f"run {run + 1} {mode:>13}: {r['ops_per_s']:6.0f} ops/s ({r['ops']} ops in "
                      f"{r['seconds']:.2f} s; CPU per op: workers {r['worker_cpu_us_per_op']:.0f} us"
                      f"{server}; lease call p50 {r['lease_call_ms_p50']:.2f} ms, "
                      f"p99 {r['lease_call_ms_p99']:.2f} ms)", flush=True)
                results.append(r)
            runs.append(results)

    summary = {}
    for mode in modes:
        rates = [r["ops_per_s"] for results in runs for r in results if r["mode"] == mode]
        summary[mode] = {"median_ops_per_s": statistics.median(rates), "runs": rates}
        if "naive" in modes and mode != "naive":
            ratios = [next(r["ops_per_s"] for r in results if r["mode"] == mode)
                      / next(r["ops_per_s"] for r in results if r["mode"] == "naive")
                      for results in runs]
            summary[mode]["median_ratio_to_naive"] = statistics.median(ratios)
    print(f"\n{args.workers} workers, {args.tasks} tasks, batch {args.batch}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    for mode, s in summary.items():
        ratio = s.get("median_ratio_to_naive")
        print(f"{mode:>17}: median {s['median_ops_per_s']:8.0f} ops/s"
              + (f", {ratio:6.2f}x naive" if ratio else ""))
    out = {"args": vars(args), "cpus": os.cpu_count(), "summary": summary, "runs": runs}
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "review_queue.json").write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
