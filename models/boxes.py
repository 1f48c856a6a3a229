"""`Boxes`: one frame's detections as parallel arrays (the shape supervision made common).

Lives in `models/` because backends return it and `models/` imports nothing from `tasks/`;
`tasks/` uses the same type. Validation errors say what was expected and what came, e.g.
"xyxy: expected shape (n, 4), got (3, 5)".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


def _check_array(name: str, value, shape: tuple, dtype) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(value).__name__}")
    if value.ndim != len(shape) or any(want is not None and got != want
                                       for want, got in zip(shape, value.shape)):
        want = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(value.shape)}")
    if value.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {np.dtype(dtype).name}, got {value.dtype.name}")
    return value


@dataclass(frozen=True, eq=False)
class Boxes:
    """Boxes in pixels of the frame a person sees: ``xyxy`` (n, 4) float32, ``confidence``
    (n,) float32 in [0, 1], ``class_id`` (n,) int32 indexing the backend's labels."""

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray

    def __post_init__(self) -> None:
        _check_array("xyxy", self.xyxy, (None, 4), np.float32)
        n = len(self.xyxy)
        _check_array("confidence", self.confidence, (n,), np.float32)
        _check_array("class_id", self.class_id, (n,), np.int32)

    @classmethod
    def empty(cls) -> "Boxes":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    @classmethod
    def of(cls, xyxy, confidence, class_id) -> "Boxes":
        """Build from anything array-like, converting dtypes (for backends)."""
        xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
        return cls(xyxy, np.asarray(confidence, np.float32).reshape(-1),
                   np.asarray(class_id, np.int32).reshape(-1))

    @classmethod
    def merge(cls, parts: Sequence["Boxes"]) -> "Boxes":
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.xyxy for p in parts]),
                   np.concatenate([p.confidence for p in parts]),
                   np.concatenate([p.class_id for p in parts]))

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index) -> "Boxes":
        """Mask or index selection returns a new value (``boxes[boxes.confidence > 0.5]``)."""
        if isinstance(index, (int, np.integer)):
            index = [index]
        return Boxes(self.xyxy[index], self.confidence[index], self.class_id[index])

    def scaled(self, sx: float, sy: float) -> "Boxes":
        """Boxes mapped from a resized frame back to full size (x by sx, y by sy)."""
        factor = np.array([sx, sy, sx, sy], np.float32)
        return Boxes(self.xyxy * factor, self.confidence.copy(), self.class_id.copy())
