"""CSRT (discriminative correlation filter with channel and spatial reliability): the most
accurate and slowest of OpenCV's classic trackers; estimates scale.

Options are fields of ``cv2.TrackerCSRT.Params`` (e.g. ``use_segmentation=False``,
``psr_threshold=0.035``, the peak-to-sidelobe ratio below which it reports a failure).
"""

from __future__ import annotations

import cv2

from models.trackers._opencv import OpenCVTracker, with_params


def create(**options) -> OpenCVTracker:
    params = with_params(cv2.TrackerCSRT.Params(), options)
    return OpenCVTracker("csrt", lambda: cv2.TrackerCSRT.create(params))
