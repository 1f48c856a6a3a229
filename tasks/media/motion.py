"""The camera's motion between consecutive frames, for trackers on moving cameras.

BoT-SORT's global motion compensation with sparse optical flow: corners found in the
previous frame (Shi-Tomasi) are followed into this one (pyramidal Lucas-Kanade), and a
rotation + uniform scale + translation is fitted with RANSAC, so people walking (a minority
of the corners) do not move the estimate. Frames are shrunk to ``side`` pixels first; the
translation is scaled back to full-size pixels. A frame where too few corners survive gets
the identity (no motion is better than a wrong one).
"""

from __future__ import annotations

import cv2
import numpy as np

IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
_MIN_POINTS = 12


class CameraMotion:
    """Feed frames in order; each call returns the (2, 3) affine taking the previous frame's
    full-size pixels to this frame's (the identity for the first frame)."""

    def __init__(self, side: int = 320):
        self._side = side
        self._previous: np.ndarray | None = None
        self._points: np.ndarray | None = None

    def feed(self, rgb: np.ndarray, full_size: tuple[int, int]) -> np.ndarray:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        scale = full_size[0] / gray.shape[1]
        affine = IDENTITY.copy()
        if self._previous is not None and self._points is not None and len(self._points) >= _MIN_POINTS:
            moved, status, _ = cv2.calcOpticalFlowPyrLK(self._previous, gray, self._points, None)
            ok = status.reshape(-1) == 1
            if ok.sum() >= _MIN_POINTS:
                fitted, inliers = cv2.estimateAffinePartial2D(
                    self._points[ok], moved[ok], method=cv2.RANSAC, ransacReprojThreshold=1.0)
                if fitted is not None and inliers is not None and inliers.sum() >= _MIN_POINTS:
                    affine = fitted.astype(np.float64)
                    affine[:, 2] *= scale
        self._previous = gray
        self._points = cv2.goodFeaturesToTrack(gray, maxCorners=400, qualityLevel=0.01,
                                               minDistance=4, blockSize=3)
        return affine

    def reset(self) -> None:
        """Forget the previous frame (at a cut: the next frame is another view)."""
        self._previous = self._points = None
