"""Moving objects in fixed-camera footage: OpenCV MOG2 background subtraction.

Stateful by design (the background model learns over the clip), so one instance serves one
clip, frames in order. Shadows (MOG2 marks them grey) are dropped; small blobs are noise.

Ghosts: the first frames teach the model a background with the people in it, so where a
person stood, the ground shows up as "foreground" once they walk off, for hundreds of
frames. A real object's outline has strong edges in the current frame (object against
ground); a ghost's outline has them in the learnt background image instead. A blob whose
outline is weaker in the frame than ``ghost_edges`` x in the background is dropped. Better
still, the detect stage primes the model with the median of frames spread over the clip's
start (`prime`), and after a cut (most of the frame changes at once) the model learns the
new view, then is rebuilt from the median of its first two seconds.
"""

from __future__ import annotations

import cv2
import numpy as np

from models.boxes import Boxes
from models.contracts import DetectorSpec

_NEW_VIEW = 0.5  # foreground share of a frame above which the view itself changed
_RELEARN_FRAMES, _RELEARN_STEP = 60, 3  # after a new view: rebuild from every 3rd of 60 frames


class BackgroundSubtraction:
    def __init__(self, history: int = 200, var_threshold: float = 16.0,
                 min_area_fraction: float = 0.001, warmup_frames: int = 5,
                 learning_rate: float = 0.005, close_px: int = 3, ghost_edges: float = 1.0,
                 shadow_threshold: float = 0.5):
        if close_px < 0 or ghost_edges < 0:
            raise ValueError(f"close_px and ghost_edges: expected >= 0, got {close_px} and "
                             f"{ghost_edges}")
        self.spec = DetectorSpec(name="background", labels=("moving",))
        self._settings = (history, var_threshold, float(shadow_threshold))
        self._model = self._new_model()
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        # Closing joins a person's pieces; a larger kernel also joins nearby people.
        self._close = (cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close_px, close_px))
                       if close_px > 1 else None)
        self._ghost = float(ghost_edges)
        self._min_area_fraction = min_area_fraction
        self._warmup = warmup_frames
        # After the warm-up the background adapts slowly: with MOG2's automatic rate (1/n
        # early in a clip) a slow, evenly coloured object is absorbed within frames.
        self._rate = learning_rate
        self._seen = 0
        self._relearn: list[np.ndarray] | None = None  # frames since a new view, sampled

    def _new_model(self):
        history, var_threshold, shadow_threshold = self._settings
        model = cv2.createBackgroundSubtractorMOG2(history=history, varThreshold=var_threshold,
                                                   detectShadows=True)
        # A pixel darker than the background by a factor in [shadow_threshold, 1] is a
        # shadow (dropped); dark clothing on a light floor falls in there too at 0.5.
        model.setShadowThreshold(shadow_threshold)
        return model

    def prime(self, frames) -> None:
        """Start from the background of frames spread over the clip's start, before
        detecting: their per-pixel median, which is the ground wherever people cover a
        pixel less than half of the time. People standing in the first frames are then not
        learnt as background (they would leave "ghosts" behind when they walk off)."""
        frames = [f for f in frames if f.shape == frames[0].shape] if len(frames) else []
        if len(frames) < 3:
            return
        median = np.median(np.stack(frames), axis=0).astype(np.uint8)
        self._model = self._new_model()
        for n in range(1, self._warmup + 1):
            self._model.apply(median, learningRate=1.0 / n)
        self._seen = max(self._seen, self._warmup)

    def detect(self, frames) -> list[Boxes]:
        return [self._one(frame) for frame in frames]

    def _one(self, frame: np.ndarray) -> Boxes:
        self._seen += 1
        if self._relearn is not None:
            if self._seen % _RELEARN_STEP == 0:
                self._relearn.append(frame)
            if self._seen >= _RELEARN_FRAMES:
                frames, self._relearn = self._relearn, None
                seen = self._seen
                self.prime(frames)
                self._seen = seen
        mask = self._model.apply(frame, learningRate=-1 if self._seen <= self._warmup else self._rate)
        if self._seen <= self._warmup:  # the model has not seen the background yet
            return Boxes.empty()
        mask = np.where(mask == 255, 255, 0).astype(np.uint8)  # 127 = shadow
        if np.count_nonzero(mask) > _NEW_VIEW * mask.size:
            # Most of the frame changed at once: a shot cut or a camera jump, not objects.
            # Learn the new view from scratch rather than report it as one huge object.
            self._model = self._new_model()
            self._model.apply(frame, learningRate=1.0)
            self._seen, self._relearn = 1, [frame]
            return Boxes.empty()
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self._kernel)
        if self._close is not None:
            mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self._close)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        h, w = mask.shape
        min_area = self._min_area_fraction * w * h
        contours = [c for c in contours if _box_area(c) >= min_area]
        if contours and self._ghost:
            contours = self._without_ghosts(frame, contours)
        boxes, scores = [], []
        for contour in contours:
            x, y, bw, bh = cv2.boundingRect(contour)
            boxes.append((x, y, x + bw, y + bh))
            # How much of the box is foreground: solid blobs score high, wisps low.
            scores.append(float(np.count_nonzero(mask[y:y + bh, x:x + bw])) / (bw * bh))
        if not boxes:
            return Boxes.empty()
        return Boxes.of(boxes, scores, np.zeros(len(boxes), np.int32))

    def _without_ghosts(self, frame: np.ndarray, contours) -> list:
        now = _edges(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
        learnt = _edges(cv2.cvtColor(self._model.getBackgroundImage(), cv2.COLOR_RGB2GRAY))
        kept = []
        for contour in contours:
            xs, ys = contour[:, 0, 0], contour[:, 0, 1]
            if now[ys, xs].mean() >= self._ghost * learnt[ys, xs].mean():
                kept.append(contour)
        return kept


def _box_area(contour) -> int:
    _, _, bw, bh = cv2.boundingRect(contour)
    return bw * bh


def _edges(gray: np.ndarray) -> np.ndarray:
    return cv2.magnitude(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))


create = BackgroundSubtraction
