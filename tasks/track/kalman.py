"""A constant-velocity Kalman filter on boxes, as BoT-SORT models them.

State ``(cx, cy, w, h, vx, vy, vw, vh)``: centre, size and their velocities per frame.
Width and height are filtered separately (not area and aspect ratio as in SORT), which
keeps a box's size right when a person turns or is partly hidden. Noise scales with the
box's size, so one set of weights fits boxes of 20 and of 500 pixels: positions are
trusted to 1/20 of the size, velocities to 1/160 (the values ByteTrack and BoT-SORT use
on MOT17). Everything is float64 numpy on 8x8 matrices: a few microseconds per step.
"""

from __future__ import annotations

import numpy as np

_POSITION = 1 / 20
_VELOCITY = 1 / 160
_F = np.eye(8)
_F[:4, 4:] = np.eye(4)
_H = np.eye(4, 8)


def to_state(box: np.ndarray) -> np.ndarray:
    """xyxy -> (cx, cy, w, h)."""
    x1, y1, x2, y2 = np.asarray(box, np.float64)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])


def to_box(measure: np.ndarray) -> np.ndarray:
    """(cx, cy, w, h, ...) -> xyxy; a size the filter drove below one pixel stays one."""
    cx, cy = measure[0], measure[1]
    w, h = max(float(measure[2]), 1.0), max(float(measure[3]), 1.0)
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


class BoxKalman:
    """One object's filter: ``predict`` advances a frame, ``update`` takes a box."""

    __slots__ = ("mean", "cov", "process")

    def __init__(self, box: np.ndarray, process: float = 1.0):
        z = to_state(box)
        self.mean = np.concatenate([z, np.zeros(4)])
        w, h = z[2], z[3]
        std = np.array([2 * _POSITION * w, 2 * _POSITION * h, 2 * _POSITION * w, 2 * _POSITION * h,
                        10 * _VELOCITY * w, 10 * _VELOCITY * h, 10 * _VELOCITY * w,
                        10 * _VELOCITY * h])
        self.cov = np.diag(np.square(std))
        self.process = process  # scales the motion noise: below 1, motion is trusted more

    def copy(self) -> "BoxKalman":
        other = object.__new__(BoxKalman)
        other.mean, other.cov, other.process = self.mean.copy(), self.cov.copy(), self.process
        return other

    def predict(self, steps: int = 1) -> None:
        for _ in range(max(int(steps), 0)):
            w, h = max(self.mean[2], 1.0), max(self.mean[3], 1.0)
            q = np.square([_POSITION * w, _POSITION * h, _POSITION * w, _POSITION * h,
                           _VELOCITY * w, _VELOCITY * h, _VELOCITY * w, _VELOCITY * h]
                          ) * self.process ** 2
            self.mean = _F @ self.mean
            self.cov = _F @ self.cov @ _F.T + np.diag(q)

    def update(self, box: np.ndarray) -> None:
        z = to_state(box)
        w, h = max(self.mean[2], 1.0), max(self.mean[3], 1.0)
        r = np.diag(np.square([_POSITION * w, _POSITION * h, _POSITION * w, _POSITION * h]))
        s = _H @ self.cov @ _H.T + r
        gain = np.linalg.solve(s, _H @ self.cov).T  # cov H^T S^-1, without forming S^-1
        self.mean = self.mean + gain @ (z - _H @ self.mean)
        self.cov = self.cov - gain @ s @ gain.T

    def warp(self, affine: np.ndarray) -> None:
        """Move the state by a camera motion: ``affine`` (2, 3) maps the previous frame's
        pixels to this frame's (BoT-SORT's global motion compensation). Rotation and scale
        apply to positions, sizes and velocities alike; the translation to the centre."""
        rot = np.asarray(affine, np.float64)[:, :2]
        block = np.kron(np.eye(4), rot)
        self.mean = block @ self.mean
        self.mean[:2] += np.asarray(affine, np.float64)[:, 2]
        self.cov = block @ self.cov @ block.T

    @property
    def box(self) -> np.ndarray:
        return to_box(self.mean)


def warp_boxes(boxes: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """xyxy boxes (n, 4) moved by an affine (2, 3): the box around the moved corners."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    a = np.asarray(affine, np.float64)
    corners = boxes[:, [0, 1, 2, 1, 0, 3, 2, 3]].reshape(-1, 4, 2)
    moved = corners @ a[:, :2].T + a[:, 2]
    return np.column_stack([moved[..., 0].min(1), moved[..., 1].min(1),
                            moved[..., 0].max(1), moved[..., 1].max(1)])


def smooth(frames: np.ndarray, boxes: np.ndarray, process: float = 0.3) -> np.ndarray:
    """One object's observed boxes (frames increasing, gaps allowed) smoothed with the
    Rauch-Tung-Striebel smoother over this filter: a forward pass, then a backward one that
    lets later observations correct earlier boxes. Offline we know the whole track, so a
    box is estimated from both sides; detector jitter of a few pixels goes, real motion
    stays. ``process`` scales the association's motion noise: people and cars move smoothly
    between frames, detectors jitter."""
    frames = np.asarray(frames, np.int64)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(frames) < 3:
        return boxes.copy()
    kf = BoxKalman(boxes[0], process)
    means, covs, predicted, gaps = [kf.mean.copy()], [kf.cov.copy()], [None], [0]
    for i in range(1, len(frames)):
        gap = int(frames[i] - frames[i - 1])
        kf.predict(gap)
        predicted.append((kf.mean.copy(), kf.cov.copy()))
        kf.update(boxes[i])
        means.append(kf.mean.copy())
        covs.append(kf.cov.copy())
        gaps.append(gap)
    out = [means[-1]]
    smoothed_mean, smoothed_cov = means[-1], covs[-1]
    for i in range(len(frames) - 2, -1, -1):
        step = np.eye(8)
        step[:4, 4:] = np.eye(4) * gaps[i + 1]
        mean_p, cov_p = predicted[i + 1]
        gain = np.linalg.solve(cov_p, step @ covs[i]).T  # covs[i] F^T cov_p^-1
        smoothed_mean = means[i] + gain @ (smoothed_mean - mean_p)
        smoothed_cov = covs[i] + gain @ (smoothed_cov - cov_p) @ gain.T
        out.append(smoothed_mean)
    return np.array([to_box(m) for m in reversed(out)])
