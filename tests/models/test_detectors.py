"""The OpenCV detectors that work on a fresh machine, through the validating driver."""

from __future__ import annotations

import av
import numpy as np
import pytest

from models import registry
from tasks.detect.driver import detect_checked


def _frames(path, count, every=1):
    frames = []
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i % every == 0:
                frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return frames


def test_registry_lists_and_refuses_unknown_names():
    assert {"hog", "background"} <= set(registry.available("detector"))
    with pytest.raises(ValueError, match="unknown detector 'yolo'; available: "):
        registry.create("detector", "yolo")


def test_hog_on_a_real_clip_returns_valid_boxes_per_frame(samples):
    detector = registry.create("detector", "hog")
    frames = _frames(samples["bikes"], 4, every=25)
    results = detect_checked(detector, frames)
    assert len(results) == 4
    assert all(len(b) == 0 or b.class_id.max() == 0 for b in results)


def _moving_square_clip(n=40, empty=10, size=(160, 120)):
    """A textured static background (a fixed camera); after ``empty`` frames a bright
    square enters and moves left to right. Truth is None while the scene is empty."""
    w, h = size
    rng = np.random.default_rng(7)
    background = rng.integers(40, 90, (h, w, 3), dtype=np.uint8)
    frames, truth = [], []
    for i in range(n):
        frame = background.copy()
        box = None
        if i >= empty:
            x = 10 + 3 * (i - empty)
            frame[40:70, x:x + 25] = 230
            box = (x, 40, x + 25, 70)
        frames.append(frame)
        truth.append(box)
    return frames, truth


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_background_subtraction_finds_the_moving_object():
    frames, truth = _moving_square_clip()
    detector = registry.create("detector", "background")
    results = detect_checked(detector, frames)
    assert all(len(b) == 0 for b in results[:10])  # warm-up, then an empty scene
    hits = [max((_iou(box, t) for box in b.xyxy.tolist()), default=0.0)
            for b, t in zip(results[10:], truth[10:])]
    assert min(hits) > 0.8, hits


def _standing_then_walking(n=60, size=(200, 120)):
    """A square stands at x=20 for the first frames, then walks right: where it stood the
    ground shows again (a "ghost" for a model that learnt the square as background)."""
    w, h = size
    rng = np.random.default_rng(3)
    background = rng.integers(40, 90, (h, w, 3), dtype=np.uint8)
    frames = []
    for i in range(n):
        frame = background.copy()
        x = 20 + max(0, i - 5) * 2
        frame[40:70, x:x + 25] = 220
        frames.append(frame)
    return frames


def test_priming_with_the_clips_start_leaves_no_ghost_where_an_object_stood():
    frames = _standing_then_walking()
    plain = registry.create("detector", "background", ghost_edges=0.0)
    primed = registry.create("detector", "background", ghost_edges=0.0)
    primed.prime(frames[::3])
    at = 25  # the square is at x=60 by now; x=20..45 shows ground
    ghosts = [[b for b in r.xyxy.tolist() if b[0] < 50]
              for r in (plain.detect(frames[:at + 1])[-1], primed.detect(frames[:at + 1])[-1])]
    assert ghosts[0] and not ghosts[1]


def test_ghost_edges_drop_the_ghost_without_priming():
    frames = _standing_then_walking()
    result = registry.create("detector", "background").detect(frames[:26])[-1]
    assert [b for b in result.xyxy.tolist() if b[0] >= 50]       # the square itself
    assert not [b for b in result.xyxy.tolist() if b[0] < 50]    # no ghost


def test_a_new_view_restarts_the_background_instead_of_one_huge_object():
    frames, _ = _moving_square_clip(n=30)
    other = [255 - f for f in frames]
    detector = registry.create("detector", "background")
    results = detector.detect(frames[:20] + other)
    assert all(len(r) == 0 for r in results[20:26])  # the cut frame and the warm-up after it
    assert all(r.xyxy[:, 2].max() - r.xyxy[:, 0].min() < 100 for r in results[26:] if len(r))


def test_background_options_are_checked():
    with pytest.raises(ValueError, match="close_px and ghost_edges"):
        registry.create("detector", "background", close_px=-1)
