"""Bounds on review results (issue 15, point 7): the nesting scanner against the parser on
random documents, and each limit's refusal."""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pytest

from tasks.errors import FormatError
from tasks.recipe import ResultLimits
from tasks.formats.limits import check_before_parsing, check_counts, json_depth

_NASTY = ['[', ']', '{', '}', '"', '\\', '\\"', '\\\\', 'a', ' ', '\\\\"']


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _random(rng: random.Random, level: int):
    kind = rng.random()
    if level > 6 or kind < 0.3:
        return "".join(rng.choice(_NASTY) for _ in range(rng.randrange(6)))
    if kind < 0.4:
        return rng.random()
    if kind < 0.7:
        return [_random(rng, level + 1) for _ in range(rng.randrange(4))]
    return {"".join(rng.choice(_NASTY) for _ in range(3)): _random(rng, level + 1)
            for _ in range(rng.randrange(4))}


def test_the_scanner_agrees_with_the_parser():
    rng = random.Random(7)
    for _ in range(500):
        doc = _random(rng, 0)
        text = json.dumps(doc, indent=rng.choice([None, 1]))
        assert json_depth(text.encode()) == _depth(json.loads(text)), text


def test_deep_nesting_is_refused_before_parsing():
    deep = b"[" * 100_000 + b"]" * 100_000  # json.loads would raise RecursionError
    with pytest.raises(FormatError, match="nests 100,000 levels deep; review.limits.max_depth "
                                          "allows 64"):
        check_before_parsing(deep, ResultLimits())
    check_before_parsing(b"[" * 64 + b"]" * 64, ResultLimits())


def test_size_tracks_and_boxes_are_bounded():
    with pytest.raises(FormatError, match="2,048 bytes; review.limits.max_bytes allows 1,024"):
        check_before_parsing(b" " * 2048, ResultLimits(max_bytes=1024))
    table = pa.table({"track_id": pa.array([1, 2, 2, 3], pa.int64())})
    check_counts(table, ResultLimits(max_tracks=3, max_boxes=4))
    with pytest.raises(FormatError, match="3 tracks; review.limits.max_tracks allows 2"):
        check_counts(table, ResultLimits(max_tracks=2))
    with pytest.raises(FormatError, match="4 boxes; review.limits.max_boxes allows 3"):
        check_counts(table, ResultLimits(max_boxes=3))
