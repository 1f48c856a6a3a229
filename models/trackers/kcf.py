"""KCF (kernelized correlation filter): fast, fixed box size, colour-name features by default.

Options are fields of ``cv2.TrackerKCF.Params`` (e.g. ``detect_thresh=0.5``, the response
below which it reports a failure; ``interp_factor``, the model's learning rate).
"""

from __future__ import annotations

import cv2

from models.trackers._opencv import OpenCVTracker, with_params


def create(**options) -> OpenCVTracker:
    params = with_params(cv2.TrackerKCF.Params(), options)
    return OpenCVTracker("kcf", lambda: cv2.TrackerKCF.create(params))
