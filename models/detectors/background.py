"""Moving objects in fixed-camera footage: OpenCV MOG2 background subtraction.

Stateful by design (the background model learns over the clip), so one instance serves one
clip, frames in order. Shadows (MOG2 marks them grey) are dropped; small blobs are noise.
"""

from __future__ import annotations

import cv2
import numpy as np

from models.boxes import Boxes
from models.contracts import DetectorSpec


class BackgroundSubtraction:
    def __init__(self, history: int = 200, var_threshold: float = 16.0,
                 min_area_fraction: float = 0.001, warmup_frames: int = 5,
                 learning_rate: float = 0.005):
        self.spec = DetectorSpec(name="background", labels=("moving",))
        self._model = cv2.createBackgroundSubtractorMOG2(history=history,
                                                         varThreshold=var_threshold,
                                                         detectShadows=True)
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
        self._min_area_fraction = min_area_fraction
        self._warmup = warmup_frames
        # After the warm-up the background adapts slowly: with MOG2's automatic rate (1/n
        # early in a clip) a slow, evenly coloured object is absorbed within frames.
        self._rate = learning_rate
        self._seen = 0

    def detect(self, frames) -> list[Boxes]:
        return [self._one(frame) for frame in frames]

    def _one(self, frame: np.ndarray) -> Boxes:
        self._seen += 1
        mask = self._model.apply(frame, learningRate=-1 if self._seen <= self._warmup else self._rate)
        if self._seen <= self._warmup:  # the model has not seen the background yet
            return Boxes.empty()
        mask = np.where(mask == 255, 255, 0).astype(np.uint8)  # 127 = shadow
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self._kernel)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self._kernel, iterations=2)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        h, w = mask.shape
        min_area = self._min_area_fraction * w * h
        boxes, scores = [], []
        for contour in contours:
            x, y, bw, bh = cv2.boundingRect(contour)
            if bw * bh < min_area:
                continue
            boxes.append((x, y, x + bw, y + bh))
            # How much of the box is foreground: solid blobs score high, wisps low.
            scores.append(float(np.count_nonzero(mask[y:y + bh, x:x + bw])) / (bw * bh))
        if not boxes:
            return Boxes.empty()
        return Boxes.of(boxes, scores, np.zeros(len(boxes), np.int32))


create = BackgroundSubtraction
