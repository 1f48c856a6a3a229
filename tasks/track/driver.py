"""Runs a tracker backend and checks what it returns, as `tasks.detect.driver` does for
detectors.

The rules (`models.contracts.Tracker`): ``init`` returns opaque state, or None when it cannot
start on the box; ``update`` returns ``(state, box or None, score)``, the box finite, not
inverted and inside the frame (a fraction of a pixel past the edge is rounding), the score a
finite number in [0, 1]. Whether a box can be started on at all (finite, not inverted, at
least `MIN_INSIDE` of it inside the frame, sides of `MIN_SIDE` px there) is decided here,
before the backend sees it. After that, an exception or a broken rule is the backend's fault:
`BadBackendError` naming the tracker and the rule. It fails the object's unit (reported,
redone on the next run) instead of being read as "the tracker lost the object".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.contracts import Tracker
from tasks.errors import BadBackendError

MIN_INSIDE = 0.5  # share of a box's area inside the frame to start on it
MIN_SIDE = 2  # pixels inside the frame (trackers raise on 1-px boxes)
EDGE_SLACK_PX = 0.5


def startable(box, frame_shape: tuple[int, ...]) -> bool:
    """Whether a tracker can be started on ``box`` (x1, y1, x2, y2) in a frame of that shape."""
    values = np.asarray(box, np.float64)
    if values.shape != (4,) or not np.all(np.isfinite(values)):
        return False
    x1, y1, x2, y2 = values
    if x2 <= x1 or y2 <= y1:
        return False
    h, w = frame_shape[:2]
    cx1, cy1, cx2, cy2 = np.clip(values, 0, [w, h, w, h])
    if (cx2 - cx1) * (cy2 - cy1) < MIN_INSIDE * (x2 - x1) * (y2 - y1):
        return False
    return round(cx2) - round(cx1) >= MIN_SIDE and round(cy2) - round(cy1) >= MIN_SIDE


def start(tracker: Tracker, frame: np.ndarray, box: np.ndarray, reference=None) -> Any:
    """``tracker.init`` on a box it can start on: its state, or None (it cannot start)."""
    if not startable(box, frame.shape):
        return None
    if reference is not None and not startable(reference[1], reference[0].shape):
        return None
    name = tracker.spec.name
    try:
        if reference is not None:
            return tracker.init(frame, box, reference=reference)
        return tracker.init(frame, box)
    except Exception as e:
        raise BadBackendError(f"tracker {name!r} raised {type(e).__name__} starting on box "
                              f"{np.asarray(box).tolist()}: {e}") from e


def advance(tracker: Tracker, state: Any, frame: np.ndarray) -> tuple[Any, np.ndarray | None, float]:
    """``tracker.update`` one frame, checked: (state, box or None when lost, score)."""
    name = tracker.spec.name
    try:
        result = tracker.update(state, frame)
    except Exception as e:
        raise BadBackendError(f"tracker {name!r} raised {type(e).__name__} on update: {e}") from e
    if not (isinstance(result, tuple) and len(result) == 3):
        raise BadBackendError(f"tracker {name!r}: update must return (state, box or None, "
                              f"score), got {type(result).__name__}")
    state, box, score = result
    try:
        score = float(score)
    except (TypeError, ValueError):
        raise BadBackendError(f"tracker {name!r}: score {score!r} is not a number") from None
    if not (np.isfinite(score) and 0.0 <= score <= 1.0):
        raise BadBackendError(f"tracker {name!r}: score {score} outside [0, 1]")
    if box is None:
        return state, None, score
    values = np.asarray(box, np.float64)
    h, w = frame.shape[:2]
    if values.shape != (4,) or not np.all(np.isfinite(values)):
        raise BadBackendError(f"tracker {name!r}: box {box!r} is not 4 finite numbers")
    x1, y1, x2, y2 = values
    if not (x1 < x2 and y1 < y2 and x1 >= -EDGE_SLACK_PX and y1 >= -EDGE_SLACK_PX
            and x2 <= w + EDGE_SLACK_PX and y2 <= h + EDGE_SLACK_PX):
        raise BadBackendError(f"tracker {name!r}: box {values.tolist()} outside the {w}x{h} "
                              "frame or inverted")
    return state, box, score
