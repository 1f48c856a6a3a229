"""Runs a detector backend and checks everything it returns.

Every broken rule raises `BadBackendError` naming the backend and the rule; a caller's
mistake (frames that are not RGB uint8 arrays) is a `ValueError`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from models.boxes import Boxes
from models.contracts import Detector
from tasks.errors import BadBackendError

# Boxes may touch the frame edge; a fraction of a pixel past it is rounding, not a bug.
EDGE_SLACK_PX = 0.5


def detect_checked(detector: Detector, frames: Sequence[np.ndarray]) -> list[Boxes]:
    """``detector.detect(frames)``, validated frame by frame."""
    for i, frame in enumerate(frames):
        if not (isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3
                and frame.dtype == np.uint8):
            raise ValueError(f"frame {i}: expected an RGB uint8 array (h, w, 3), got "
                             f"{getattr(frame, 'shape', type(frame).__name__)}")
    name = detector.spec.name
    try:
        results = detector.detect(frames)
    except Exception as e:
        raise BadBackendError(f"detector {name!r} raised {type(e).__name__}: {e}") from e
    if not isinstance(results, (list, tuple)):
        raise BadBackendError(f"detector {name!r} must return a list of Boxes, got "
                              f"{type(results).__name__}")
    if len(results) != len(frames):
        raise BadBackendError(f"detector {name!r} returned {len(results)} results for "
                              f"{len(frames)} frames (rule: exactly one Boxes per frame)")
    labels = len(detector.spec.labels)
    for i, (frame, boxes) in enumerate(zip(frames, results)):
        where = f"detector {name!r}, frame {i}"
        if not isinstance(boxes, Boxes):
            raise BadBackendError(f"{where}: expected Boxes, got {type(boxes).__name__}")
        if not (np.isfinite(boxes.xyxy).all() and np.isfinite(boxes.confidence).all()):
            raise BadBackendError(f"{where}: NaN or infinite box or confidence")
        if len(boxes) and (boxes.class_id.min() < 0 or boxes.class_id.max() >= labels):
            raise BadBackendError(f"{where}: class id outside the spec's {labels} label(s)")
        if len(boxes) and (boxes.confidence.min() < 0 or boxes.confidence.max() > 1):
            raise BadBackendError(f"{where}: confidence outside [0, 1]")
        h, w = frame.shape[:2]
        x1, y1, x2, y2 = boxes.xyxy.T
        inside = ((x1 >= -EDGE_SLACK_PX) & (y1 >= -EDGE_SLACK_PX) & (x2 <= w + EDGE_SLACK_PX)
                  & (y2 <= h + EDGE_SLACK_PX) & (x1 <= x2) & (y1 <= y2))
        if not inside.all():
            bad = boxes.xyxy[~inside][0].tolist()
            raise BadBackendError(f"{where}: box {bad} outside the {w}x{h} frame or inverted")
    return list(results)
