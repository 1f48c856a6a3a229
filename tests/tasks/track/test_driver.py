"""The tracker driver: a box nothing can start on is decided before the backend sees it; after
that, what a backend raises or returns against the contract is `BadBackendError`, never a
silent "lost"."""

from __future__ import annotations

import numpy as np
import pytest

from models import registry
from models.contracts import TrackerSpec
from tasks.errors import BadBackendError
from tasks.track import driver

FRAME = np.zeros((120, 160, 3), np.uint8)
BOX = np.array([40.0, 30.0, 80.0, 90.0])


class Fake:
    def __init__(self, init=None, update=None):
        self.spec = TrackerSpec(name="fake")
        self._init, self._update = init, update
        self.calls = 0

    def init(self, frame, box):
        self.calls += 1
        return self._init(frame, box) if self._init else "state"

    def update(self, state, frame):
        return self._update(state, frame)


def _raise(*_):
    raise ValueError("index out of range (a bug)")


@pytest.mark.parametrize("box", [[np.nan, 0, 10, 10], [50, 50, 40, 60], [150, 100, 400, 400],
                                 [10, 10, 11, 40]])
def test_a_box_nothing_can_start_on_is_refused_before_the_backend(box):
    fake = Fake()
    assert driver.start(fake, FRAME, np.array(box, float)) is None
    assert fake.calls == 0


def test_a_tracker_that_cannot_start_says_so_with_none():
    assert driver.start(Fake(init=lambda f, b: None), FRAME, BOX) is None


def test_an_exception_from_init_is_the_backends_fault_not_a_refusal():
    with pytest.raises(BadBackendError, match="fake.*ValueError.*a bug"):
        driver.start(Fake(init=_raise), FRAME, BOX)


@pytest.mark.parametrize("result, rule", [
    (("s", np.array([np.nan, 0, 5, 5]), 0.9), "not 4 finite"),
    (("s", np.array([10, 10, 5, 5]), 0.9), "outside the 160x120 frame or inverted"),
    (("s", np.array([10, 10, 500, 50]), 0.9), "outside the 160x120 frame"),
    (("s", BOX, 1.5), r"outside \[0, 1\]"),
    (("s", BOX, float("nan")), r"outside \[0, 1\]"),
    (("s", BOX, "high"), "not a number"),
    (("s", BOX), "must return"),
])
def test_update_results_against_the_contract_are_refused(result, rule):
    with pytest.raises(BadBackendError, match=rule):
        driver.advance(Fake(update=lambda s, f: result), "s", FRAME)


def test_an_exception_from_update_is_the_backends_fault():
    with pytest.raises(BadBackendError, match="raised ValueError on update"):
        driver.advance(Fake(update=_raise), "s", FRAME)


def test_lost_and_found_pass_through():
    assert driver.advance(Fake(update=lambda s, f: ("s", None, 0.0)), "s", FRAME)[1] is None
    state, box, score = driver.advance(Fake(update=lambda s, f: ("s2", BOX, 0.7)), "s", FRAME)
    assert state == "s2" and box is BOX and score == 0.7


def test_a_real_tracker_follows_a_patch():
    frame = FRAME.copy()
    frame[30:90, 40:80] = (200, 60, 30)
    tracker = registry.create("tracker", "csrt")
    state = driver.start(tracker, frame, BOX)
    assert state is not None
    _, box, score = driver.advance(tracker, state, frame)
    assert box is not None and 0.0 <= score <= 1.0
    assert np.allclose(box, BOX, atol=3)
