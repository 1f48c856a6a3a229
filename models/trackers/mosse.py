"""MOSSE (minimum output sum of squared error filter): the fastest, on grey frames, fixed box
size. Only in OpenCV's legacy API, which has no options; it reports a failure when the
peak-to-sidelobe ratio of its response falls below 5.7.
"""

from __future__ import annotations

import cv2

from models.trackers._opencv import OpenCVTracker


def create(**options) -> OpenCVTracker:
    if options:
        raise ValueError(f"mosse takes no options, got {', '.join(sorted(options))}")
    return OpenCVTracker("mosse", cv2.legacy.TrackerMOSSE.create, grey=True, legacy=True)
