"""People: OpenCV's built-in HOG + linear SVM people detector (no download needed)."""

from __future__ import annotations

import cv2
import numpy as np

from models.boxes import Boxes
from models.contracts import DetectorSpec


class HogPeople:
    def __init__(self, win_stride: int = 8, scale: float = 1.05, min_score: float = 0.0):
        self.spec = DetectorSpec(name="hog", labels=("person",), input_size=(64, 128))
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self._stride, self._scale, self._min_score = win_stride, scale, min_score

    def detect(self, frames) -> list[Boxes]:
        return [self._one(frame) for frame in frames]

    def _one(self, frame: np.ndarray) -> Boxes:
        rects, weights = self._hog.detectMultiScale(
            frame, winStride=(self._stride, self._stride), padding=(8, 8), scale=self._scale)
        if len(rects) == 0:
            return Boxes.empty()
        rects = np.asarray(rects, np.float32).reshape(-1, 4)
        scores = np.asarray(weights, np.float32).reshape(-1)
        keep = scores >= self._min_score
        h, w = frame.shape[:2]
        xyxy = np.column_stack([rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2],
                                rects[:, 1] + rects[:, 3]])[keep]
        xyxy = np.clip(xyxy, 0, [w, h, w, h]).astype(np.float32)
        # SVM margins are unbounded; a logistic squashes them into [0, 1] keeping the order.
        confidence = 1.0 / (1.0 + np.exp(-scores[keep]))
        return Boxes.of(xyxy, confidence, np.zeros(int(keep.sum()), np.int32))


create = HogPeople
