"""Keyframe compaction: dense tracks (one box per frame) become the fewest keyframes whose
linear interpolation reproduces every frame within a tolerance.

The problem splits at the frames that must be keyframes (a track's start and end, hidden on
and off, the last visible frame before a hidden range, label or attribute changes, boxes a
person chose). Between two consecutive forced frames ``a`` and ``b`` it is a shortest path:
keyframes are frames of the input (their boxes are kept exactly), and an edge ``i -> j`` is
allowed when interpolating from box ``i`` to box ``j`` reproduces every frame between them.

Edges come from a cone test: with the start box fixed, the interpolation slope ``s``
reproduces frame ``k`` of coordinate ``c`` iff
``(v_k - tol - v_i) / (k - i) <= s <= (v_k + tol - v_i) / (k - i)``. The running
intersection of these intervals (the cone) only narrows, so ``i -> j`` is allowed iff the
slope to ``v_j`` lies in the cone of the frames before ``j``, and once the cone is empty no
later frame can be reached: each row is scanned only as far as its reach. For a minimum IoU
the per-frame tolerance is a necessary bound (IoU >= t implies every edge moves by at most
``(1 - t) / t`` of the box's width or height, as the 2-D IoU is at most the 1-D IoU of
either axis), and the candidate edges it leaves are checked exactly, frame by frame.

A forward dynamic programme over these edges gives the exact minimum, not an approximation
(tests compare it with a plain dynamic programme that checks every edge frame by frame).
It is compiled with numba: the scan is a loop that stops at a data-dependent point, which
numpy can only vectorise by computing fixed windows it mostly throws away (our first,
numpy version ran at 0.16 M boxes/s; this one is measured in `benchmarks/compaction.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.annotations.boxmath import iou_pairs
from tasks.errors import ConfigError
from tasks.annotations.keyframes import (BOX, KEYFRAME_SCHEMA, changes, compare_states, expand,
                             normalise_dense, track_starts)

# A frame exactly on the tolerance is within it (tracker boxes are whole pixels, so such
# frames are common); the slack absorbs float64 rounding, identically in the fast path and in
# the reference programme. `compare_states` re-checks with a larger one (1e-6 px).
_EPS_PX = 1e-7
_EPS_IOU = 1e-9


def tolerance(max_error_px: float | None, min_iou: float | None) -> tuple[str, float]:
    """The one tolerance asked for, validated: ("px", F) or ("iou", F)."""
    if (max_error_px is None) == (min_iou is None):
        raise ConfigError("give exactly one tolerance: max_error_px or min_iou")
    if max_error_px is not None:
        if not np.isfinite(max_error_px) or max_error_px < 0:
            raise ConfigError(f"max_error_px must be a finite number >= 0, got {max_error_px}")
        return "px", float(max_error_px)
    if not np.isfinite(min_iou) or not 0 < min_iou <= 1:
        raise ConfigError(f"min_iou must be in (0, 1], got {min_iou}")
    return "iou", float(min_iou)


# --- the shortest paths ---------------------------------------------------------------------


def _frame_tolerance(boxes: np.ndarray, mode: str, value: float) -> np.ndarray:
    """Per-frame tolerance for the IoU mode; the pixel mode passes one number instead."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    scale = (1 - value) / value + 1e-9
    return np.column_stack([w, h, w, h]) * scale


@numba.njit(cache=True, nogil=True)
def _iou_fits(boxes, i, j, min_iou):
    """Every frame strictly between i and j is reproduced with IoU >= min_iou."""
    for k in range(i + 1, j):
        t = (k - i) / (j - i)
        x1 = boxes[i, 0] + (boxes[j, 0] - boxes[i, 0]) * t
        y1 = boxes[i, 1] + (boxes[j, 1] - boxes[i, 1]) * t
        x2 = boxes[i, 2] + (boxes[j, 2] - boxes[i, 2]) * t
        y2 = boxes[i, 3] + (boxes[j, 3] - boxes[i, 3]) * t
        w = min(x2, boxes[k, 2]) - max(x1, boxes[k, 0])
        h = min(y2, boxes[k, 3]) - max(y1, boxes[k, 1])
        inter = max(w, 0.0) * max(h, 0.0)
        union = (x2 - x1) * (y2 - y1) + (boxes[k, 2] - boxes[k, 0]) * (boxes[k, 3] - boxes[k, 1]) - inter
        if union <= 0.0:
            if not (x1 == boxes[k, 0] and y1 == boxes[k, 1] and x2 == boxes[k, 2] and y2 == boxes[k, 3]):
                return False
        elif inter < (min_iou - _EPS_IOU) * union:
            return False
    return True


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _solve(boxes, tol, tol_px, starts, ends, iou_mode, min_iou, keep):
    """Shortest path from ``starts[p]`` to ``ends[p]`` for every sub-problem ``p``; marks the
    rows on it in ``keep``. Forward dynamic programme over the cone edges; a row is not
    expanded when it cannot shorten the best path to the end found so far (so a row whose
    reach covers the whole sub-problem ends it at once)."""
    big = 1 << 60
    for p in range(starts.size):
        a = starts[p]
        m = ends[p] - a + 1
        dist = np.full(m, big, np.int64)
        parent = np.full(m, -1, np.int64)
        dist[0] = 1
        low = np.empty(4)
        high = np.empty(4)
        for ii in range(m - 1):
            if dist[ii] + 1 >= dist[m - 1]:
                continue
            i = a + ii
            low[:] = -np.inf
            high[:] = np.inf
            for jj in range(ii + 1, m):
                j = a + jj
                inv = 1.0 / (jj - ii)
                fits = True
                closed = False
                for c in range(4):
                    rel = boxes[j, c] - boxes[i, c]
                    slope = rel * inv
                    lo = low[c]
                    hi = high[c]
                    fits &= (slope >= lo) & (slope <= hi)
                    # Narrow the cone with frame j (for the frames after it).
                    t = tol[j, c] if iou_mode else tol_px
                    lo = max(lo, (rel - t) * inv)
                    hi = min(hi, (rel + t) * inv)
                    low[c] = lo
                    high[c] = hi
                    closed |= lo > hi
                if fits and iou_mode and jj - ii > 1:
                    fits = _iou_fits(boxes, i, j, min_iou)
                # <=: among equally short paths the latest parent wins (deterministic).
                if fits and dist[ii] + 1 <= dist[jj]:
                    dist[jj] = dist[ii] + 1
                    parent[jj] = ii
                if closed:
                    break
        jj = m - 1
        while jj > 0:
            keep[a + jj] = True
            jj = parent[jj]
        keep[a] = True


def shortest_keyframes(boxes: np.ndarray, starts: np.ndarray, ends: np.ndarray, *,
                       max_error_px: float | None = None, min_iou: float | None = None) -> np.ndarray:
    """Rows to keep as keyframes for sub-problems ``[starts[p], ends[p]]`` of ``boxes``
    (rows of (x1, y1, x2, y2)): both ends of every sub-problem and the fewest rows between
    them such that interpolating between consecutive kept rows reproduces every row within
    the tolerance."""
    mode, value = tolerance(max_error_px, min_iou)
    boxes = np.ascontiguousarray(boxes, dtype=np.float64)
    starts = np.ascontiguousarray(starts, np.int64)
    ends = np.ascontiguousarray(ends, np.int64)
    if ((ends < starts) | (starts < 0) | (ends >= len(boxes))).any():
        raise ValueError("sub-problems must lie inside the boxes and end after they start")
    keep = np.zeros(len(boxes), bool)
    per_frame = _frame_tolerance(boxes, mode, value) if mode == "iou" else np.zeros((1, 4))
    _solve(boxes, per_frame, value + _EPS_PX, starts, ends, mode == "iou", value, keep)
    return np.flatnonzero(keep)


def exact_minimum(boxes: np.ndarray, *, max_error_px: float | None = None,
                  min_iou: float | None = None) -> int:
    """The minimum number of keyframes for one visible run by plain dynamic programming
    (every edge checked frame by frame): the reference the tests and the benchmark compare
    `shortest_keyframes` with. O(n^2 x gap); for short runs only."""
    mode, value = tolerance(max_error_px, min_iou)
    boxes = np.asarray(boxes, np.float64)
    n = len(boxes)
    best = np.full(n, np.iinfo(np.int64).max)
    best[0] = 1
    for j in range(1, n):
        for i in range(j):
            k = np.arange(i + 1, j)
            lerp = boxes[i] + (boxes[j] - boxes[i]) * ((k - i) / (j - i))[:, None]
            if mode == "px":
                fits = k.size == 0 or np.abs(lerp - boxes[k]).max() <= value + _EPS_PX
            else:
                fits = k.size == 0 or iou_pairs(lerp, boxes[k]).min() >= value - _EPS_IOU
            if fits and best[i] + 1 < best[j]:
                best[j] = best[i] + 1
    return int(best[-1])


# --- tables -----------------------------------------------------------------------------------

_DENSE_COLUMNS = ["global_frame", "time_s", "label", *BOX, "attributes", "source", "score"]


@dataclass(frozen=True)
class KeyframePlan:
    """A dense table split into the problem compaction solves: the frames that must be
    keyframes (with their kind) and the sub-problems between them."""

    dense: pa.Table  # normalised rows (gaps filled, hidden ends dropped)
    forced: np.ndarray  # bool per row
    kind: np.ndarray  # str per row: the reason a row would be a keyframe
    boxes: np.ndarray  # (n, 4) float64
    starts: np.ndarray  # sub-problem first rows (forced, visible) ...
    ends: np.ndarray  # ... and last rows, with only visible rows between
    end_frame: np.ndarray  # per row: its track's last frame


def plan_keyframes(tracks: pa.Table) -> KeyframePlan:
    missing = {"recording", "clip_index", "track_id", "frame", "hidden", *_DENSE_COLUMNS} - \
        set(tracks.column_names) - {"attributes"}
    if missing:
        raise ConfigError(f"not a tracks table: missing column(s) {sorted(missing)}")
    dense = normalise_dense(tracks, _DENSE_COLUMNS)
    n = dense.num_rows
    starts = track_starts(dense)
    code = np.zeros(n, np.int64)
    if n:
        code[starts[1:]] = 1
    code = np.cumsum(code)
    first = np.zeros(n, bool)
    first[starts] = True
    last = np.zeros(n, bool)
    if n:
        last[np.r_[starts[1:] - 1, n - 1]] = True
    hidden = dense["hidden"].to_numpy(zero_copy_only=False).astype(bool)
    prev_hidden = np.r_[False, hidden[:-1]] & ~first if n else hidden
    next_hidden = np.r_[hidden[1:], False] & ~last if n else hidden
    changed = (changes(dense["label"]) | changes(dense["attributes"])) & ~first
    human = pc.fill_null(pc.equal(dense["source"], "human"), False).to_numpy(
        zero_copy_only=False) & ~hidden
    reasons = [  # precedence order of `KINDS`
        ("start", first), ("end", last), ("hidden", hidden & ~prev_hidden),
        ("shown", ~hidden & prev_hidden), ("label", changed), ("human", human),
        ("compacted", ~hidden & next_hidden)]
    forced = np.zeros(n, bool)
    kind = np.full(n, len(reasons) - 1, np.int8)  # index into `reasons`
    for index, (_, mask) in reversed(list(enumerate(reasons))):
        forced |= mask
        kind[mask] = index
    kind = np.array([name for name, _ in reasons], dtype=object)[kind]
    boxes = np.column_stack([dense[c].to_numpy() for c in BOX]).astype(np.float64) \
        if n else np.zeros((0, 4))
    # Sub-problems: consecutive forced visible rows of one track with only visible rows between.
    anchor = np.flatnonzero(forced & ~hidden)
    a, b = anchor[:-1], anchor[1:]
    hidden_before = np.r_[0, np.cumsum(hidden)]
    span = (code[a] == code[b]) & (b - a >= 2) & (hidden_before[b] - hidden_before[a] == 0)
    frames = dense["frame"].to_numpy()
    end_frame = frames[np.r_[starts[1:] - 1, n - 1]][code] if n else frames
    return KeyframePlan(dense, forced, kind, boxes, a[span], b[span], end_frame)


def compact_tracks(tracks: pa.Table, *, max_error_px: float | None = None,
                   min_iou: float | None = None) -> pa.Table:
    """Keyframes (`KEYFRAME_SCHEMA`) for a dense tracks table (`tasks.store.tables.TRACK_SCHEMA`,
    ``attributes`` optional): the forced frames plus the fewest others such that `expand`
    reproduces every visible frame within the tolerance. Tracks are linear-mode and carry an
    explicit ``end_frame``."""
    tolerance(max_error_px, min_iou)
    plan = plan_keyframes(tracks)
    if plan.dense.num_rows == 0:
        return KEYFRAME_SCHEMA.empty_table()
    kept = shortest_keyframes(plan.boxes, plan.starts, plan.ends, max_error_px=max_error_px,
                              min_iou=min_iou)
    chosen = plan.forced.copy()
    chosen[kept] = True
    rows = np.flatnonzero(chosen)
    out = plan.dense.take(pa.array(rows))
    return pa.table({
        "recording": out["recording"], "clip_index": out["clip_index"],
        "track_id": out["track_id"], "frame": out["frame"], "global_frame": out["global_frame"],
        "time_s": out["time_s"], "label": out["label"],
        **{c: out[c] for c in BOX}, "hidden": out["hidden"],
        "kind": pa.array(plan.kind[rows].tolist(), pa.string()),
        "mode": pa.array(["linear"] * len(rows), pa.string()),
        "end_frame": pa.array(plan.end_frame[rows], pa.int64()), "attributes": out["attributes"],
        "source": out["source"], "score": out["score"]}).cast(KEYFRAME_SCHEMA)


def exact_total(plan: KeyframePlan, **tolerance_args) -> int:
    """The exact minimum number of keyframes for a whole plan by the plain programme
    (`exact_minimum` per sub-problem): what the benchmark compares with."""
    total = int(plan.forced.sum())
    for a, b in zip(plan.starts, plan.ends):
        total += exact_minimum(plan.boxes[a:b + 1], **tolerance_args) - 2
    return total


def verify(tracks: pa.Table, keyframes: pa.Table, *, max_error_px: float | None = None,
           min_iou: float | None = None) -> list[str]:
    """Expand the keyframes and compare every frame with the dense input (`compare_states`)."""
    return compare_states(normalise_dense(tracks), expand(keyframes),
                          max_error_px=max_error_px, min_iou=min_iou)
