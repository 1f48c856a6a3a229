"""The stage ledger (`tasks.store.ledger`): an answer is reused only while the unit's identity and
every file its look-up reads are unchanged, and the ledger is only ever a cache."""

from __future__ import annotations

import json
import os

from tasks.store.ledger import Ledger, Unit
from tasks.recipe import Recipe
from tasks.store.storage import open_location


def _setup(tmp_path, clips=3):
    out = open_location(str(tmp_path / "out"), Recipe().storage)
    state = out.path("_state/thing")
    os.makedirs(state)
    for i in range(clips):
        with open(f"{state}/{i}.json", "w") as f:
            f.write(json.dumps({"clip": i}))
    units = [Unit(["clip", i, "settings-1"], ((state, f"{state}/{i}."),)) for i in range(clips)]
    return out, state, units


def _settled(out, units, answers):
    ledger = Ledger(out, "thing", units)
    ledger.settle([None] * len(units), lambda i: answers[i])
    return ledger


def test_unchanged_units_are_answered_from_the_ledger(tmp_path):
    out, _, units = _setup(tmp_path)
    _settled(out, units, [{"n": 0}, {"n": 1}, None])  # the third is not done: not kept
    assert Ledger(out, "thing", units).answers() == [{"n": 0}, {"n": 1}, None]


def test_a_changed_file_or_identity_or_a_new_file_is_looked_up_again(tmp_path):
    out, state, units = _setup(tmp_path)
    _settled(out, units, [{"n": 0}, {"n": 1}, {"n": 2}])
    with open(f"{state}/0.json", "a") as f:
        f.write(" ")  # a new size
    st = os.stat(f"{state}/1.json")
    os.utime(f"{state}/1.json", ns=(st.st_atime_ns, st.st_mtime_ns + 1000))  # same size, touched
    with open(f"{state}/2.parquet", "w") as f:
        f.write("x")  # a file that was not there, under the unit's prefix
    assert Ledger(out, "thing", units).answers() == [None, None, None]

    out2, _, units2 = _setup(tmp_path / "b")
    _settled(out2, units2, [{"n": 0}, {"n": 1}, {"n": 2}])
    other = [Unit(["clip", 0, "settings-2"], units2[0].reads), *units2[1:]]
    assert Ledger(out2, "thing", other).answers() == [None, {"n": 1}, {"n": 2}]


def test_a_deleted_state_file_is_looked_up_again(tmp_path):
    out, state, units = _setup(tmp_path)
    _settled(out, units, [{"n": 0}, {"n": 1}, {"n": 2}])
    os.remove(f"{state}/1.json")
    assert Ledger(out, "thing", units).answers() == [{"n": 0}, None, {"n": 2}]


def test_an_unreadable_ledger_is_an_empty_one_and_is_rewritten(tmp_path):
    out, _, units = _setup(tmp_path)
    ledger = _settled(out, units, [{"n": 0}, {"n": 1}, {"n": 2}])
    with open(ledger.path, "wb") as f:
        f.write(b'{"entries": {"trunc')
    again = Ledger(out, "thing", units)
    assert again.answers() == [None, None, None]
    again.settle([None] * 3, lambda i: {"n": i})
    assert Ledger(out, "thing", units).answers() == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_settle_keeps_answers_found_before_and_looks_up_the_others_once(tmp_path):
    out, _, units = _setup(tmp_path)
    looked = []
    ledger = Ledger(out, "thing", units)
    ledger.settle([{"n": 0}, None, None], lambda i: looked.append(i) or {"n": i})
    assert sorted(looked) == [1, 2]
    assert Ledger(out, "thing", units).answers() == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_nothing_changed_means_the_ledger_is_not_rewritten(tmp_path):
    out, _, units = _setup(tmp_path)
    ledger = _settled(out, units, [{"n": 0}, {"n": 1}, {"n": 2}])
    before = os.stat(ledger.path).st_mtime_ns, os.stat(ledger.path).st_ino
    again = Ledger(out, "thing", units)
    again.settle(again.answers(), lambda i: {"n": i})
    assert (os.stat(ledger.path).st_mtime_ns, os.stat(ledger.path).st_ino) == before


def test_answers_json_would_change_are_not_kept(tmp_path):
    out, _, units = _setup(tmp_path)
    _settled(out, units, [{"n": (0, 1)}, {"n": float("nan")}, {1: "int key"}])
    assert Ledger(out, "thing", units).answers() == [None, None, None]


def test_a_failing_look_up_is_not_kept(tmp_path):
    out, _, units = _setup(tmp_path)

    def look(i):
        if i == 1:
            raise OSError("store down")
        return {"n": i}

    Ledger(out, "thing", units).settle([None] * 3, look)
    assert Ledger(out, "thing", units).answers() == [{"n": 0}, None, {"n": 2}]


def test_a_file_written_after_the_first_listing_voids_answers_read_before_it(tmp_path):
    """A review saved while the stage runs: the answer read before it must not be kept as
    if it described the new file."""
    out, state, units = _setup(tmp_path)
    ledger = Ledger(out, "thing", units)  # lists the folder now
    answers = [{"n": 0}, {"n": 1}, None]  # read before the new file appeared
    with open(f"{state}/0.review", "w") as f:
        f.write("saved meanwhile")
    ledger.settle(answers, lambda i: {"n": i})
    assert Ledger(out, "thing", units).answers() == [None, {"n": 1}, {"n": 2}]
