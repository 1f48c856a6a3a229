"""Bounds on a reviewer's result (`review.limits` in the recipe): size before anything is
read, nesting before it is parsed (CPython's JSON parser recurses, so a deep enough file is
a `RecursionError`, and a moderately deep one costs memory for nothing), and tracks and
boxes once it is read. Each refusal is a `FormatError` saying which limit and how to raise it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.errors import FormatError
from tasks.recipe import ResultLimits

_OPEN = np.zeros(256, np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


def check_size(size: int, limits: ResultLimits) -> None:
    if size > limits.max_bytes:
        raise FormatError(f"the result is {size:,} bytes; review.limits.max_bytes allows "
                          f"{limits.max_bytes:,} (raise it in the recipe if this is right)")


def json_depth(data: bytes) -> int:
    """Deepest nesting of objects and lists in JSON text, without parsing it: brackets
    inside strings do not count (a quote ends a string unless an odd number of backslashes
    precede it). Works on the positions of brackets, quotes and backslashes only, so it
    costs one byte per input byte and about 0.25 s per 10 MB of dense JSON."""
    raw = np.frombuffer(data, np.uint8)
    step = _OPEN[raw]
    brackets = np.flatnonzero(step)
    quotes = np.flatnonzero(raw == ord('"'))
    slashes = np.flatnonzero(raw == ord("\\"))
    if slashes.size and quotes.size:
        # Runs of consecutive backslashes: where each ends and how long it is.
        breaks = np.flatnonzero(np.diff(slashes) != 1)
        ends = slashes[np.append(breaks, slashes.size - 1)]
        starts = slashes[np.insert(breaks + 1, 0, 0)]
        at = np.searchsorted(ends, quotes - 1)
        at_ok = at < ends.size
        ended_here = np.zeros(quotes.size, bool)
        ended_here[at_ok] = ends[at[at_ok]] == quotes[at_ok] - 1
        odd = np.zeros(quotes.size, bool)
        odd[ended_here] = (ends[at[ended_here]] - starts[at[ended_here]] + 1) % 2 == 1
        quotes = quotes[~odd]
    # A bracket is inside a string when an odd number of real quotes come before it.
    outside = np.searchsorted(quotes, brackets) % 2 == 0
    steps = step[brackets[outside]].astype(np.int64)
    return int(np.cumsum(steps).max(initial=0))


def check_before_parsing(data: bytes, limits: ResultLimits) -> None:
    check_size(len(data), limits)
    if data.lstrip()[:1] in (b"{", b"["):
        depth = json_depth(data)
        if depth > limits.max_depth:
            raise FormatError(f"the result nests {depth:,} levels deep; "
                              f"review.limits.max_depth allows {limits.max_depth}")


def check_counts(table: pa.Table, limits: ResultLimits) -> None:
    if table.num_rows > limits.max_boxes:
        raise FormatError(f"the result holds {table.num_rows:,} boxes; "
                          f"review.limits.max_boxes allows {limits.max_boxes:,}")
    tracks = pc.count_distinct(table["track_id"]).as_py() if table.num_rows else 0
    if tracks > limits.max_tracks:
        raise FormatError(f"the result holds {tracks:,} tracks; review.limits.max_tracks "
                          f"allows {limits.max_tracks:,}")
