"""Run progress: unit and frame counting, the whole run's fraction, meters that pass frames
on in bulk and do nothing when no one watches."""

from __future__ import annotations

import pytest

from tasks import progress
from tasks.progress import STAGES, Meter, RunProgress


class Seen:
    def __init__(self):
        self.events = []

    def changed(self, run, stage, unit):
        self.events.append((stage, unit, run.unit(stage, unit) if unit else None))


def test_fraction_weighs_stages_and_units_alike_and_frames_within_a_unit():
    run = RunProgress()
    assert run.fraction() == 0.0
    run.expect("convert", ["a", "b"])
    run.finish("convert", "a")
    assert run.fraction() == pytest.approx(0.5 / len(STAGES))
    run.frames("convert", "b", 25, total=100)
    assert run.fraction() == pytest.approx((1 + 0.25) / 2 / len(STAGES))
    for stage in STAGES:
        for unit in ("a", "b"):
            run.finish(stage, unit)
    assert run.fraction() == pytest.approx(1.0)


def test_a_unit_never_looks_done_from_frames_alone():
    run = RunProgress()
    run.expect("detect", ["a"])
    run.frames("detect", "a", 120, total=100)  # a header's frame count can be short
    assert run.unit("detect", "a") == (120, 100, False)
    assert run.fraction() == pytest.approx(0.99 / len(STAGES))


def test_stage_counts_and_watchers():
    seen = Seen()
    run = RunProgress(watchers=[seen])
    run.expect("track", ["a", "b", "c"])
    run.finish("track", "b")
    assert run.stage_counts("track") == (1, 3)
    assert seen.events == [("track", "", None), ("track", "b", (0, None, True))]


def test_meter_passes_frames_on_in_bulk():
    now = [0.0]
    seen = Seen()
    run = RunProgress(watchers=[seen])
    meter = Meter(run, "convert", "a", 300, every_s=1.0, clock=lambda: now[0])
    for _ in range(10):
        meter.add()
    assert run.unit("convert", "a") == (0, 300, False)  # nothing passed on yet
    now[0] = 1.5
    meter.add()
    assert run.unit("convert", "a") == (11, 300, False)
    meter.add(4)
    meter.total = 310  # a better count learnt on the way is passed on with the frames
    meter.flush()
    assert run.unit("convert", "a") == (15, 310, False)
    assert len(seen.events) == 3


def test_meter_without_a_watcher_does_nothing():
    assert progress.current() is None
    with progress.meter("detect", "a", 10) as meter:
        meter.add(5)
    assert meter.progress is None and meter.pending == 0


def test_install_returns_the_previous_one():
    run = RunProgress()
    assert progress.install(run) is None
    try:
        with progress.meter("track", "a", None) as meter:
            meter.add(3)
        assert run.unit("track", "a") == (3, None, False)
    finally:
        assert progress.install(None) is run


def test_a_stage_with_nothing_to_do_is_done_and_stages_count_their_own_units():
    run = RunProgress()
    run.expect("convert", ["a", "b", "c"])
    for unit in ("a", "b", "c"):
        run.finish("convert", unit)
    run.expect("detect", ["a", "b"])  # c was blocked
    run.finish("detect", "a")
    run.finish("detect", "b")
    assert run.fraction() == pytest.approx(2 / len(STAGES))
    run.expect("track", [])  # nothing to track: that stage is done
    assert run.fraction() == pytest.approx(3 / len(STAGES))
