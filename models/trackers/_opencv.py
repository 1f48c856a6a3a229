"""OpenCV's single-object trackers behind the tracker contract (shared by csrt, kcf, mosse).

OpenCV says only whether it still follows the target. The score is ours and the same for
every backend: the grey patch under the init box, resized to 32 x 32, is the template; after
each update it is searched for within +-25% of the box size around the returned box (on the
template's scale, normalised cross-correlation), and the best match, clamped to [0, 1], is
the score. The score is 0, and the box None, when OpenCV reports a failure or when less than
half of its box lies inside the frame. The template is never updated, so a tracker that
drifts onto something else (an occluder) scores low even while OpenCV reports success.

Frames are RGB uint8 (h, w, 3); boxes are xyxy float pixels. OpenCV's boxes are (x, y, w, h)
and the new-style trackers take whole pixels, so an init box is rounded (0.5 px at most).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np

from models.contracts import TrackerSpec

_TEMPLATE = (32, 32)  # (width, height) both patches are resized to before comparing
_MIN_INSIDE = 0.5  # a box less than this fraction inside the frame is lost (and refused by init)
_MIN_SIDE = 2  # pixels: MOSSE and CSRT raise on a 1-px box
_SEARCH_MARGIN = 0.25  # the score looks this fraction of the box size around it
_FLAT = 1.0  # grey-level standard deviation below which a template is flat


@dataclass(eq=False)
class OpenCVState:
    """One target's state. Mutable: ``update`` advances it in place and returns the same
    object, so keep one state per target and do not share it between threads (the OpenCV
    tracker inside cannot be copied).

    ``box`` is the last box found (the init box at first, clipped to the frame), ``lost``
    the number of updates since then that found nothing; OpenCV keeps searching around the
    last position, so a later update may find the target again.
    """

    tracker: Any
    template: np.ndarray  # (32, 32) float32 grey patch under the init box
    frame_shape: tuple[int, int, int]
    box: np.ndarray
    extent: tuple[float, float]  # (width, height) of the last box before clipping
    lost: int = 0


def _check_frame(frame, shape: tuple[int, ...] | None = None) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        got = (f"{frame.dtype.name} array of shape {frame.shape}" if isinstance(frame, np.ndarray)
               else type(frame).__name__)
        raise ValueError(f"frame: expected an RGB uint8 array (h, w, 3), got {got}")
    if shape is not None and frame.shape != shape:
        raise ValueError(f"frame: expected shape {shape} (the init frame's), got {frame.shape}")
    return frame


def _check_box(box, frame_shape: tuple[int, ...]) -> np.ndarray:
    """The box clipped to the frame, float32 (4,); a box mostly outside or too small is refused."""
    values = np.asarray(box, np.float64)
    if values.shape != (4,) or not np.all(np.isfinite(values)):
        raise ValueError(f"box: expected 4 finite numbers (x1, y1, x2, y2), got {box!r}")
    x1, y1, x2, y2 = values
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"box: expected x2 > x1 and y2 > y1, got {values.tolist()}")
    h, w = frame_shape[:2]
    clipped = _clip(values, w, h)
    if _area(clipped) < _MIN_INSIDE * _area(values):
        raise ValueError(f"box {values.tolist()} lies mostly outside the {w}x{h} frame")
    if round(clipped[2]) - round(clipped[0]) < _MIN_SIDE or round(clipped[3]) - round(clipped[1]) < _MIN_SIDE:
        raise ValueError(f"box {values.tolist()}: expected sides of at least {_MIN_SIDE} px inside the frame")
    return clipped.astype(np.float32)


def _clip(box: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.clip(box, 0, [w, h, w, h])


def _unclipped(box: np.ndarray, extent: tuple[float, float], frame_shape) -> np.ndarray:
    """``box`` grown back to the last size where it ends exactly at a frame edge.

    KCF clips its box to the image, so a target leaving the frame gets a shrinking box that
    always lies inside it (and would never count as mostly outside). A side that ends
    exactly on the frame edge, in a box smaller than the last one, is taken to be such a
    cut and is moved outwards to restore the last size. CSRT and MOSSE do not clip.
    """
    box = box.copy()
    h, w = frame_shape[:2]
    for lo, hi, limit, size in ((0, 2, w, extent[0]), (1, 3, h, extent[1])):
        if box[hi] - box[lo] < size - 0.5:
            if abs(box[hi] - limit) < 0.5:
                box[hi] = box[lo] + size
            elif abs(box[lo]) < 0.5:
                box[lo] = box[hi] - size
    return box


def _area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 0) * max(box[3] - box[1], 0))


def _patch(grey: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The grey pixels under ``box`` (inside the frame) resized to the template size."""
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    return cv2.resize(grey[y1:y2, x1:x2], _TEMPLATE, interpolation=cv2.INTER_AREA).astype(np.float32)


def _similarity(state: OpenCVState, grey: np.ndarray, raw: np.ndarray) -> float:
    """Best NCC of the template within +-25% of the box around ``raw`` (the box OpenCV
    returned, possibly partly outside the frame), on the template's scale, clamped to [0, 1].

    Searching a little around the box makes the score about the target's presence, not the
    tracker's pixel accuracy: the NCC of a finely textured patch falls to ~0.4 at a 2 px
    offset. Where the box sticks out of the frame only the matching part of the template is
    compared, so a target leaving the frame keeps its score while it is mostly inside.
    """
    h, w = grey.shape
    tw, th = _TEMPLATE
    bw, bh = raw[2] - raw[0], raw[3] - raw[1]
    sx, sy = tw / bw, th / bh
    # The part of the template that lies inside the frame.
    inside = _clip(raw, w, h)
    t_x1, t_y1 = round((inside[0] - raw[0]) * sx), round((inside[1] - raw[1]) * sy)
    t_x2, t_y2 = round((inside[2] - raw[0]) * sx), round((inside[3] - raw[1]) * sy)
    template = state.template[t_y1:t_y2, t_x1:t_x2]
    # The search window: the box grown by the margin, inside the frame, on the template's scale.
    mx, my = _SEARCH_MARGIN * bw, _SEARCH_MARGIN * bh
    x1, y1, x2, y2 = (round(float(v)) for v in _clip(raw + [-mx, -my, mx, my], w, h))
    size = (max(round((x2 - x1) * sx), template.shape[1]), max(round((y2 - y1) * sy), template.shape[0]))
    search = cv2.resize(grey[y1:y2, x1:x2], size, interpolation=cv2.INTER_AREA).astype(np.float32)
    if template.std() < _FLAT:
        # NCC is undefined for a flat template (OpenCV answers 1 everywhere): compare the
        # grey level of the best-matching flat spot instead (same level -> 1).
        means = cv2.blur(search, (template.shape[1], template.shape[0]))
        return max(0.0, 1.0 - float(np.abs(means - template.mean()).min()) / 64.0)
    found = cv2.matchTemplate(search, template, cv2.TM_CCOEFF_NORMED)
    return float(np.clip(found.max(), 0.0, 1.0))


class OpenCVTracker:
    """``make()`` returns a fresh OpenCV tracker; ``grey`` feeds it grey frames (MOSSE),
    otherwise BGR; ``legacy`` marks the ``cv2.legacy`` API (float boxes, init returns bool)."""

    def __init__(self, name: str, make: Callable[[], Any], *, grey: bool = False, legacy: bool = False):
        self.spec = TrackerSpec(name=name)
        self._make, self._grey, self._legacy = make, grey, legacy

    def init(self, frame: np.ndarray, box: np.ndarray,
             reference: tuple[np.ndarray, np.ndarray] | None = None) -> OpenCVState | None:
        """Start on ``box``; the score compares with ``reference`` = (frame, box), the
        object's look at its last keyframe, when given (a tracker restarted mid-track keeps
        judging against the keyframe, so a drifted box cannot become its own template)."""
        frame = _check_frame(frame)
        box = _check_box(box, frame.shape)
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if reference is not None:
            ref_frame = _check_frame(reference[0], frame.shape)
            ref_box = _check_box(reference[1], ref_frame.shape)
            template = _patch(cv2.cvtColor(ref_frame, cv2.COLOR_RGB2GRAY), ref_box)
        else:
            template = _patch(grey, box)
        x, y = round(float(box[0])), round(float(box[1]))
        rect = (x, y, round(float(box[2])) - x, round(float(box[3])) - y)
        tracker = self._make()
        image = grey if self._grey else cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        if self._legacy:
            if not tracker.init(image, tuple(float(v) for v in rect)):
                return None  # the contract's "cannot start on this box"
        else:
            tracker.init(image, rect)
        extent = (float(box[2] - box[0]), float(box[3] - box[1]))
        return OpenCVState(tracker=tracker, template=template, frame_shape=frame.shape, box=box,
                           extent=extent)

    def update(self, state: OpenCVState, frame: np.ndarray) -> tuple[OpenCVState, np.ndarray | None, float]:
        frame = _check_frame(frame, state.frame_shape)
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        ok, (x, y, w, h) = state.tracker.update(grey if self._grey else cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        if not ok or w <= 0 or h <= 0:
            state.lost += 1
            return state, None, 0.0
        raw = _unclipped(np.array([x, y, x + w, y + h], np.float64), state.extent, frame.shape)
        box = _clip(raw, frame.shape[1], frame.shape[0])
        if _area(box) < _MIN_INSIDE * _area(raw) or min(box[2] - box[0], box[3] - box[1]) < 1:
            state.lost += 1
            return state, None, 0.0
        box = box.astype(np.float32)
        state.box, state.extent, state.lost = box, (raw[2] - raw[0], raw[3] - raw[1]), 0
        return state, box.copy(), _similarity(state, grey, raw)


def with_params(params: Any, options: dict[str, Any]) -> Any:
    """``params`` (an OpenCV ``Params`` object) with ``options`` set on it; unknown names are
    a caller mistake (ValueError naming the known ones)."""
    known = sorted(n for n in dir(params) if not n.startswith("_"))
    unknown = [name for name in options if name not in known]
    if unknown:
        raise ValueError(f"unknown option{'s' * (len(unknown) > 1)} "
                         f"{', '.join(map(repr, unknown))}; known: {', '.join(known)}")
    for name, value in options.items():
        setattr(params, name, value)
    return params
