"""The driver names the rule a backend broke; fake backends are plain namespaces."""

from types import SimpleNamespace

import numpy as np
import pytest

from models.boxes import Boxes
from models.contracts import DetectorSpec
from tasks.detect.driver import detect_checked
from tasks.errors import BadBackendError

FRAME = np.zeros((100, 200, 3), np.uint8)
SPEC = DetectorSpec(name="fake", labels=("a", "b"))


def fake(result):
    return SimpleNamespace(spec=SPEC, detect=lambda frames: result(frames))


def one(xyxy, conf=0.5, cls=0):
    return Boxes.of([xyxy], [conf], [cls])


def test_good_results_pass():
    out = detect_checked(fake(lambda fs: [one([0, 0, 200, 100]) for _ in fs]), [FRAME, FRAME])
    assert len(out) == 2


@pytest.mark.parametrize("result,rule", [
    (lambda fs: [], "returned 0 results for 1 frames"),
    (lambda fs: "nope", "must return a list"),
    (lambda fs: [np.zeros((1, 4))], "expected Boxes"),
    (lambda fs: [one([0, 0, float("nan"), 10])], "NaN"),
    (lambda fs: [one([0, 0, 10, 10], cls=2)], "class id outside"),
    (lambda fs: [one([0, 0, 10, 10], conf=1.5)], "confidence outside"),
    (lambda fs: [one([0, 0, 201, 10])], "outside the 200x100 frame"),
    (lambda fs: [one([50, 0, 10, 10])], "inverted"),
    (lambda fs: 1 / 0, "raised ZeroDivisionError"),
])
def test_each_broken_rule_is_named(result, rule):
    with pytest.raises(BadBackendError, match=rule):
        detect_checked(fake(result), [FRAME])


def test_caller_mistakes_are_value_errors():
    with pytest.raises(ValueError, match="RGB uint8"):
        detect_checked(fake(lambda fs: []), [np.zeros((10, 10), np.uint8)])
