"""Backend contracts: a frozen, self-validating spec plus one method per kind.

A detector MUST return exactly one `Boxes` per input frame, in input order, with boxes in
pixels of that frame and class ids indexing ``spec.labels``; it MUST NOT keep references to
the frames it was given. A tracker splits ``init`` from ``update`` and keeps its state
opaque; ``update`` returns a box in pixels of the frame and a score in [0, 1]. `tasks/` validates what backends return (one error type, `BadBackendError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from models.boxes import Boxes


@dataclass(frozen=True)
class DetectorSpec:
    name: str
    labels: tuple[str, ...]
    input_size: tuple[int, int] | None = None  # (width, height) the model prefers, if any

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a detector spec needs a name")
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be non-empty and unique, got {self.labels!r}")
        if self.input_size is not None and (len(self.input_size) != 2 or min(self.input_size) < 1):
            raise ValueError(f"input_size must be (width, height) > 0, got {self.input_size!r}")


@runtime_checkable
class Detector(Protocol):
    spec: DetectorSpec

    def detect(self, frames: Sequence[np.ndarray]) -> list[Boxes]:
        """One `Boxes` per RGB frame (h, w, 3) uint8, in order.

        A backend that learns the scene (background subtraction) MAY also have
        ``prime(frames)``: before the clip's first batch it is given frames spread over the
        clip's first seconds, at the size ``detect`` will get."""


@dataclass(frozen=True)
class TrackerSpec:
    name: str

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a tracker spec needs a name")


@runtime_checkable
class Tracker(Protocol):
    spec: TrackerSpec

    def init(self, frame: np.ndarray, box: np.ndarray) -> Any:
        """Start following ``box`` (x1, y1, x2, y2) in ``frame``; returns opaque state, or
        None when it cannot start on this box (any exception is a bug, not a refusal).

        A backend MAY accept ``reference=(frame, box)``: the object's look at its last
        keyframe, to score against when restarted mid-track (chunk boundaries)."""

    def update(self, state: Any, frame: np.ndarray) -> tuple[Any, np.ndarray | None, float]:
        """Advance one frame: (state, box or None when lost, score in [0, 1])."""
