"""The review queue's rules, each on SQLite and PostgreSQL (see conftest.py).

Leases that must expire are short (0.2-0.3 s) and the tests sleep past them; leases that
must stay live are long (30 s), or renewed long right after they are taken, so no test
depends on how fast a loaded machine runs.
"""

from __future__ import annotations

import math
import os
import pickle
import random
import time
from datetime import UTC, datetime, timedelta

import pytest

from tasks.errors import LeaseLost, PipelineError, QueueError
from tasks.review import ReviewQueue, State, Task

LIVE = 30.0
SHORT = 0.3


def wait_past(moment: datetime, margin: float = 0.1) -> None:
    """Sleep until ``moment`` (a lease's expiry) has passed on this machine's clock."""
    delay = (moment - datetime.now(UTC)).total_seconds() + margin
    if delay > 0:
        time.sleep(delay)


def events(queue: ReviewQueue, task_id: int) -> list[tuple[str, str | None]]:
    return [(e["event"], e["worker"]) for e in queue.history(task_id)]


@pytest.fixture
def queue(queue_url):
    with ReviewQueue(queue_url) as q:
        yield q


# -- enqueue ---------------------------------------------------------------------------------

def test_enqueue_is_idempotent_by_key(queue):
    first = queue.enqueue("clip-1", 2.0, {"clip": "a.webm"})
    again = queue.enqueue("clip-1", 9.0, {"clip": "changed.webm"})
    assert again == first
    task = queue.get(first)
    assert (task.key, task.priority, task.payload) == ("clip-1", 2.0, {"clip": "a.webm"})
    assert (task.state, task.attempts, task.worker, task.lease_expires_at) == (State.QUEUED, 0, None,
                                                                               None)
    assert queue.stats()["total"] == 1
    assert events(queue, first) == [("enqueued", None)]


def test_enqueue_many_returns_ids_in_input_order_and_never_duplicates(queue):
    old = queue.enqueue("b", 1.0, {"n": 1})
    ids = queue.enqueue_many([("a", 1.0, {}), ("b", 5.0, {"n": 2}), ("c", 0.5, {}), ("a", 7.0, {})])
    assert ids[1] == old and ids[3] == ids[0]
    assert len({ids[0], ids[2], old}) == 3
    assert queue.get(old).payload == {"n": 1} and queue.get(ids[0]).priority == 1.0
    assert queue.stats()["total"] == 3
    # A rerun of the whole batch adds nothing.
    assert queue.enqueue_many([("a", 1.0, {}), ("b", 5.0, {}), ("c", 0.5, {})]) == ids[:3]
    assert queue.stats()["total"] == 3


def test_known_tells_which_keys_have_a_task_in_any_state(queue):
    ids = queue.enqueue_many([("a", 1.0, {}), ("b", 2.0, {}), ("c:x/y", 3.0, {})])
    leased = queue.lease("w", 60)
    queue.complete(leased.id, "w", {"ok": True})
    assert queue.known(["a", "b", "c:x/y", "d", "a"]) == {"a", "b", "c:x/y"}
    assert queue.known([]) == set() and queue.get(ids[2]).state == State.DONE
    with pytest.raises(QueueError):
        queue.known([""])


def test_enqueue_many_is_all_or_nothing(queue):
    with pytest.raises(QueueError, match="'bad'.*JSON"):
        queue.enqueue_many([("good", 1.0, {}), ("bad", 1.0, {"when": datetime.now()})])
    assert queue.stats()["total"] == 0


@pytest.mark.parametrize("priority, payload, match", [
    (math.nan, {}, "finite"), (math.inf, {}, "finite"), ("high", {}, "number"), (True, {}, "number"),
    (1.0, ["not", "a", "dict"], "dict"), (1.0, {"x": object()}, "JSON"), (1.0, {"x": math.nan}, "JSON"),
])
def test_enqueue_rejects_bad_items(tmp_path, priority, payload, match):
    with ReviewQueue(f"sqlite:///{tmp_path / 'q.db'}") as q:
        with pytest.raises(QueueError, match=match):
            q.enqueue("k", priority, payload)


# -- leasing order ---------------------------------------------------------------------------

def test_lease_takes_higher_priority_first_then_oldest(queue):
    rng = random.Random(7)
    priorities = [rng.choice([0.0, 0.5, 1.5, -2.0, 3.25]) for _ in range(40)]
    ids = queue.enqueue_many([(f"k{i}", p, {"i": i}) for i, p in enumerate(priorities)])
    expected = [ids[i] for i in sorted(range(40), key=lambda i: (-priorities[i], i))]
    got = [queue.lease("w", LIVE).id for _ in range(5)]
    got += [t.id for t in queue.lease_many("w", LIVE, 10)]
    got += [t.id for t in queue.lease_many("w", LIVE, 100)]
    assert got == expected
    assert queue.lease("w", LIVE) is None and queue.lease_many("w", LIVE, 5) == []


def test_lease_sets_owner_expiry_and_logs_it(queue):
    task_id = queue.enqueue("k", 1.0, {"clip": "a"})
    before = datetime.now(UTC) - timedelta(seconds=1)
    task = queue.lease("w1", LIVE)
    assert isinstance(task, Task) and task.id == task_id and task.payload == {"clip": "a"}
    assert task.state == State.LEASED and task.worker == "w1" and task.attempts == 0
    assert task.lease_expires_at.tzinfo is not None
    assert before + timedelta(seconds=LIVE) < task.lease_expires_at < datetime.now(UTC) + timedelta(
        seconds=LIVE + 1)
    (leased,) = [e for e in queue.history(task_id) if e["event"] == "leased"]
    assert leased["worker"] == "w1" and leased["expires_at"] == task.lease_expires_at
    assert queue.get(task_id) == task


# -- expiry and heartbeats -------------------------------------------------------------------

def test_expired_lease_returns_to_queue_as_a_failed_attempt(queue):
    task_id = queue.enqueue("k", 1.0, {})
    queue.enqueue("later", 0.0, {})
    lost = queue.lease("w1", SHORT)
    wait_past(lost.lease_expires_at)
    assert queue.stats()["expired"] == 1
    again = queue.lease("w2", LIVE)
    assert again.id == task_id and again.worker == "w2" and again.attempts == 1
    assert events(queue, task_id) == [("enqueued", None), ("leased", "w1"), ("expired", "w1"),
                                      ("leased", "w2")]
    expired = queue.history(task_id)[2]
    assert expired["detail"] == {"reason": "lease expired", "attempts": 1}
    assert expired["expires_at"] == lost.lease_expires_at
    assert queue.stats()["expired"] == 0


def test_heartbeat_keeps_the_lease(queue):
    task_id = queue.enqueue("k", 1.0, {})
    task = queue.lease("w1", 1.0)
    renewed = queue.heartbeat(task_id, "w1", LIVE)
    assert renewed.lease_expires_at > task.lease_expires_at + timedelta(seconds=LIVE - 2)
    wait_past(task.lease_expires_at)
    assert queue.lease("w2", LIVE) is None
    assert queue.stats()["expired"] == 0
    assert queue.complete(task_id, "w1", {"ok": 1}).state == State.DONE
    assert [e for e, _ in events(queue, task_id)] == ["enqueued", "leased", "heartbeat", "completed"]


def test_heartbeat_renews_from_now(queue):
    task_id = queue.enqueue("k", 1.0, {})
    queue.lease("w1", LIVE)
    short = queue.heartbeat(task_id, "w1", SHORT)  # shortening is renewing too
    wait_past(short.lease_expires_at)
    assert queue.lease("w2", LIVE).id == task_id


@pytest.mark.parametrize("action", ["complete", "heartbeat", "release", "fail"])
def test_worker_whose_lease_expired_cannot_change_the_task(queue, action):
    task_id = queue.enqueue("clip-7", 1.0, {})
    queue.lease("w1", SHORT)
    wait_past(queue.get(task_id).lease_expires_at)
    call = {"complete": lambda: queue.complete(task_id, "w1", {}),
            "heartbeat": lambda: queue.heartbeat(task_id, "w1", LIVE),
            "release": lambda: queue.release(task_id, "w1"),
            "fail": lambda: queue.fail(task_id, "w1", "boom")}[action]
    with pytest.raises(LeaseLost, match=rf"'w1'.*task {task_id} \('clip-7'\).*lease expired at"):
        call()
    # After another worker took it, the stale one is told who holds it now.
    assert queue.lease("w2", LIVE).id == task_id
    with pytest.raises(LeaseLost, match=rf"'w1'.*task {task_id}.*worker 'w2' holds it"):
        call()
    assert queue.get(task_id).worker == "w2"
    assert queue.complete(task_id, "w2", {"by": "w2"}).state == State.DONE
    with pytest.raises(LeaseLost, match="done"):
        call()
    assert queue.result(task_id) == {"by": "w2"}


def test_another_worker_cannot_touch_a_live_lease(queue):
    task_id = queue.enqueue("k", 1.0, {})
    queue.lease("w1", LIVE)
    with pytest.raises(LeaseLost, match="'w1' holds it"):
        queue.complete(task_id, "w2", {})
    assert queue.get(task_id).state == State.LEASED


def test_unknown_task_is_a_queue_error_not_lease_lost(queue):
    for call in (lambda: queue.complete(404, "w", {}), lambda: queue.heartbeat(404, "w", 1.0),
                 lambda: queue.get(404), lambda: queue.history(404), lambda: queue.result(404),
                 lambda: queue.record(404, "note", {})):
        with pytest.raises(QueueError, match="no task with id 404") as raised:
            call()
        assert not isinstance(raised.value, LeaseLost)


# -- release, fail, dead ---------------------------------------------------------------------

def test_release_puts_it_back_without_an_attempt(queue):
    first = queue.enqueue("first", 1.0, {})
    queue.enqueue("second", 1.0, {})
    queue.lease("w1", LIVE)
    released = queue.release(first, "w1")
    assert (released.state, released.attempts, released.worker) == (State.QUEUED, 0, None)
    assert queue.lease("w2", LIVE).id == first  # back in its place in the order
    assert events(queue, first)[-2:] == [("released", "w1"), ("leased", "w2")]


def test_failing_max_attempts_times_makes_it_dead_with_its_history(queue_url):
    with ReviewQueue(queue_url, max_attempts=3) as queue:
        task_id = queue.enqueue("k", 1.0, {})
        states = []
        for attempt in range(3):
            assert queue.lease(f"w{attempt}", LIVE).id == task_id
            states.append(queue.fail(task_id, f"w{attempt}", f"crash {attempt}").state)
        assert states == [State.QUEUED, State.QUEUED, State.DEAD]
        assert queue.lease("w9", LIVE) is None
        task = queue.get(task_id)
        assert (task.state, task.attempts) == (State.DEAD, 3)
        history = queue.history(task_id)
        assert [e["event"] for e in history] == ["enqueued", "leased", "failed", "leased", "failed",
                                                 "leased", "failed", "dead"]
        assert [e["detail"]["reason"] for e in history if e["event"] == "failed"] == [
            "crash 0", "crash 1", "crash 2"]
        assert history[-1]["detail"] == {"reason": "crash 2", "attempts": 3}
        times = [e["at"] for e in history]
        assert times == sorted(times)
        assert queue.stats()["dead"] == 1
        with pytest.raises(QueueError, match="dead"):
            queue.result(task_id)


def test_expiries_count_towards_dead(queue_url):
    """A task that kills every worker that takes it ends dead too."""
    with ReviewQueue(queue_url, max_attempts=2) as queue:
        task_id = queue.enqueue("poison", 1.0, {})
        for worker in ("w1", "w2"):
            task = queue.lease(worker, 0.2)
            assert task.id == task_id
            wait_past(task.lease_expires_at)
        assert queue.lease("w3", LIVE) is None  # reclaims: second expiry, so dead
        assert queue.get(task_id).state == State.DEAD
        assert events(queue, task_id)[-2:] == [("expired", "w2"), ("dead", "w2")]
        assert queue.history(task_id)[-1]["detail"] == {"reason": "lease expired", "attempts": 2}


def test_mixed_fail_and_expiry_share_the_attempt_count(queue_url):
    with ReviewQueue(queue_url, max_attempts=2) as queue:
        task_id = queue.enqueue("k", 1.0, {})
        queue.lease("w1", LIVE)
        queue.fail(task_id, "w1", "bad frame")
        wait_past(queue.lease("w2", 0.2).lease_expires_at)
        assert queue.lease("w3", LIVE) is None
        assert (queue.get(task_id).state, queue.get(task_id).attempts) == (State.DEAD, 2)


# -- results, stats, list, record ------------------------------------------------------------

def test_results_are_stored(queue):
    ids = queue.enqueue_many([("a", 1.0, {}), ("b", 0.0, {})])
    result = {"boxes": [[1.5, 2, 3, 4]], "label": "person", "nested": {"ok": True, "n": None}}
    queue.lease("w", LIVE)
    done = queue.complete(ids[0], "w", result)
    assert done.state == State.DONE and done.worker == "w" and done.lease_expires_at is None
    assert queue.result(ids[0]) == result
    with pytest.raises(QueueError, match=f"task {ids[1]} has no result: it is queued"):
        queue.result(ids[1])
    queue.lease("w", LIVE)
    with pytest.raises(QueueError, match="JSON"):
        queue.complete(ids[1], "w", {"bad": {1, 2}})
    assert queue.get(ids[1]).state == State.LEASED  # nothing was written


def test_stats_counts_states_and_expired_leases(queue):
    ids = queue.enqueue_many([(f"k{i}", float(-i), {}) for i in range(6)])
    assert queue.stats()["oldest_queued_age_s"] >= 0
    queue.lease("w", LIVE)
    queue.complete(ids[0], "w", None)
    queue.lease("w", LIVE)  # ids[1] stays leased
    queue.lease("w", LIVE)
    queue.fail(ids[2], "w", "x")  # back to queued, attempt 1
    short = queue.lease("w", SHORT)  # ids[2] again, will expire
    wait_past(short.lease_expires_at)
    stats = queue.stats()
    assert {k: stats[k] for k in ("queued", "leased", "done", "dead", "expired", "total")} == {
        "queued": 3, "leased": 2, "done": 1, "dead": 0, "expired": 1, "total": 6}
    assert stats["oldest_queued_age_s"] > 0
    while queue.lease("w", LIVE):  # the first one reclaims the expired lease
        pass
    stats = queue.stats()
    assert (stats["queued"], stats["leased"], stats["expired"]) == (0, 5, 0)
    assert stats["oldest_queued_age_s"] is None


def test_list_and_get(queue):
    ids = queue.enqueue_many([(f"k{i}", float(i % 3), {"i": i}) for i in range(10)])
    # The order `lease` hands them out: highest priority first, then oldest.
    order = sorted(ids, key=lambda i: (-(ids.index(i) % 3), i))
    assert [t.id for t in queue.list()] == order
    assert [t.id for t in queue.list(limit=3, offset=4)] == order[4:7]
    leased = [t.id for t in queue.lease_many("w", LIVE, 4)]
    assert leased == order[:4]
    assert [t.id for t in queue.list(state="leased")] == order[:4]
    assert [t.id for t in queue.list(State.QUEUED)] == order[4:]
    assert queue.list(state="dead") == []
    assert queue.get(ids[5]).payload == {"i": 5}
    with pytest.raises(QueueError, match="unknown state 'finished'"):
        queue.list(state="finished")


def test_record_appends_an_audit_event(queue):
    task_id = queue.enqueue("k", 1.0, {})
    queue.lease("w", LIVE)
    queue.complete(task_id, "w", {})
    queue.record(task_id, "corrected", {"changed": [{"track": 3, "frames": [10, 20]}]})
    last = queue.history(task_id)[-1]
    assert last["event"] == "corrected" and last["detail"] == {"changed": [{"track": 3,
                                                                            "frames": [10, 20]}]}
    assert last["at"] >= queue.history(task_id)[-2]["at"]
    with pytest.raises(QueueError, match="written by the queue itself"):
        queue.record(task_id, "completed", {})


# -- URLs, arguments, processes --------------------------------------------------------------

@pytest.mark.parametrize("url", ["mysql://u@h/db", "sqlite://", "sqlite:///", "sqlite://host/q.db",
                                 "review.db", "sqlite:///:memory:", "sqlite:///q.db?mode=ro", ""])
def test_bad_url_is_a_queue_error_naming_it(url):
    with pytest.raises(QueueError, match="review queue URL") as raised:
        ReviewQueue(url)
    assert repr(url) in str(raised.value) and isinstance(raised.value, PipelineError)


def test_bad_url_message_hides_the_password():
    with pytest.raises(QueueError) as raised:
        ReviewQueue("mongodb://me:s3cret@db.example/q")
    assert "s3cret" not in str(raised.value) and "me:***@" in str(raised.value)


def test_sqlite_url_forms(tmp_path, monkeypatch):
    (tmp_path / "rel").mkdir()
    monkeypatch.chdir(tmp_path)
    with ReviewQueue("sqlite:///rel/q.db") as q:
        q.enqueue("k", 1.0, {})
    assert (tmp_path / "rel" / "q.db").is_file()
    with ReviewQueue(f"sqlite:///{tmp_path / 'rel' / 'q.db'}") as q:  # sqlite:////abs/...
        assert q.stats()["total"] == 1
    with pytest.raises(QueueError, match="cannot open the review queue .*missing"):
        ReviewQueue("sqlite:///missing/q.db").stats()


def test_unreachable_postgres_is_a_queue_error():
    with pytest.raises(QueueError, match="cannot open the review queue postgresql://u:\\*\\*\\*@"):
        ReviewQueue("postgresql://u:pw@127.0.0.1:1/db?connect_timeout=2").stats()


@pytest.mark.parametrize("call, match", [
    (lambda q: q.lease("w", 0), "positive"), (lambda q: q.lease("w", math.nan), "positive"),
    (lambda q: q.lease("", 1.0), "worker"), (lambda q: q.lease_many("w", 1.0, 0), "n must"),
    (lambda q: q.complete("1", "w"), "int"), (lambda q: q.list(limit=-1), "limit"),
    (lambda q: q.fail(1, "w", ""), "reason"), (lambda q: q.record(1, "note", ["x"]), "dict"),
])
def test_bad_arguments(tmp_path, call, match):
    with ReviewQueue(f"sqlite:///{tmp_path / 'q.db'}") as q:
        with pytest.raises(QueueError, match=match):
            call(q)


def test_max_attempts_must_be_positive(tmp_path):
    with pytest.raises(QueueError, match="max_attempts"):
        ReviewQueue(f"sqlite:///{tmp_path / 'q.db'}", max_attempts=0)


def test_queue_pickles_as_its_url(queue):
    task_id = queue.enqueue("k", 1.0, {})
    copy = pickle.loads(pickle.dumps(ReviewQueue(queue.url, max_attempts=5)))
    assert copy.max_attempts == 5 and copy.get(task_id).key == "k"
    copy.close()


def test_connection_is_not_shared_across_fork(queue):
    """A forked child opens its own connection; the parent's keeps working afterwards."""
    ids = queue.enqueue_many([("parent", 1.0, {}), ("child", 0.0, {})])
    assert queue.lease("parent", LIVE).id == ids[0]  # the parent's connection is open
    pid = os.fork()
    if pid == 0:  # child: must not touch the parent's connection
        code = 1
        try:
            task = queue.lease("child", LIVE)
            queue.complete(task.id, "child", {"pid": os.getpid()})
            code = 0 if task.id == ids[1] else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    queue.complete(ids[0], "parent", {})
    assert queue.stats()["done"] == 2
    assert queue.result(ids[1])["pid"] == pid
