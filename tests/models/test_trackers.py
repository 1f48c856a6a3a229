"""OpenCV's CSRT, KCF and MOSSE behind the tracker contract, on the synthetic scene.

The floors below sit a little under what was measured (opencv-contrib-python-headless
5.0.0.93, the scene of ``tests/scene.py`` with seed 0); the measured values are in comments.
Everything is deterministic: the same frames give the same boxes.
"""

from __future__ import annotations

import av
import numpy as np
import pytest

from models import registry
from models.contracts import Tracker

try:  # tests/ as a package (rootdir on sys.path) or as a plain directory
    from tests.scene import render_scene
except ImportError:
    from scene import render_scene

NAMES = ("csrt", "kcf", "mosse")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return render_scene(tmp_path_factory.mktemp("trackers") / "scene.mp4")


@pytest.fixture(scope="module")
def frames(scene):
    with av.open(str(scene.path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _track(name, frames, box, stop):
    """Init on frame 0, update through frame ``stop - 1``: [(box or None, score)] for 1..stop-1."""
    tracker = registry.create("tracker", name)
    state = tracker.init(frames[0], box)
    out = []
    for frame in frames[1:stop]:
        new_state, found, score = tracker.update(state, frame)
        assert new_state is state  # documented: the state is advanced in place
        assert 0.0 <= score <= 1.0
        if found is None:
            assert score == 0.0
        else:
            assert found.dtype == np.float32 and found.shape == (4,)
        out.append((found, score))
    return out


@pytest.fixture(scope="module")
def runs(scene, frames):
    """``runs(name, obj, stop)``: :func:`_track` on object ``obj``, computed once per module."""
    cache = {}

    def get(name, obj, stop):
        if (name, obj, stop) not in cache:
            cache[name, obj, stop] = _track(name, frames, scene.boxes[obj][0], stop)
        return cache[name, obj, stop]

    return get


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def _confident(result) -> bool:
    box, score = result
    return box is not None and score >= 0.5


# ---------------------------------------------------------------------------
# registry and contract
# ---------------------------------------------------------------------------


def test_registry_lists_exactly_the_opencv_trackers():
    assert registry.available("tracker") == list(NAMES)
    for name in NAMES:
        tracker = registry.create("tracker", name)
        assert isinstance(tracker, Tracker) and tracker.spec.name == name


def test_options_pass_through_and_unknown_options_are_refused(scene, frames):
    csrt = registry.create("tracker", "csrt", use_segmentation=False)
    state = csrt.init(frames[0], scene.boxes["D"][0])
    assert csrt.update(state, frames[1])[1] is not None
    assert registry.create("tracker", "kcf", detect_thresh=0.3).spec.name == "kcf"
    with pytest.raises(ValueError, match="unknown option 'use_scale'; known: .*psr_threshold"):
        registry.create("tracker", "csrt", use_scale=True)
    with pytest.raises(ValueError, match="mosse takes no options"):
        registry.create("tracker", "mosse", detect_thresh=0.3)


@pytest.mark.parametrize("name", NAMES)
def test_init_refuses_bad_boxes_and_frames(name, frames):
    tracker = registry.create("tracker", name)
    frame = frames[0]
    for box, message in [
        ((50, 50, 50, 80), "x2 > x1"),  # empty
        ((80, 50, 50, 80), "x2 > x1"),  # inverted
        ((50, 80, 90, 60), "y2 > y1"),
        ((400, 50, 440, 90), "mostly outside"),
        ((-30, 50, 10, 90), "mostly outside"),  # 25% inside
        ((50, 50, 51, 90), "at least 2 px"),
        ((0, 0, 10), "4 finite numbers"),
        ((0, 0, np.nan, 10), "4 finite numbers"),
    ]:
        with pytest.raises(ValueError, match=message):
            tracker.init(frame, np.array(box, np.float32))
    box = np.array([10, 10, 50, 50], np.float32)
    for bad in [frame[..., 0], frame.astype(np.float32), np.dstack([frame, frame[..., :1]]), frame.tolist()]:
        with pytest.raises(ValueError, match="expected an RGB uint8 array"):
            tracker.init(bad, box)
    state = tracker.init(frame, box)
    with pytest.raises(ValueError, match=r"expected shape \(240, 320, 3\)"):
        tracker.update(state, frame[:120])


@pytest.mark.parametrize("name", NAMES)
def test_boxes_are_clipped_and_inputs_untouched(name, scene, frames):
    tracker = registry.create("tracker", name)
    before = [f.copy() for f in frames[:3]]
    # A box partly outside the frame (75% inside) is accepted and clipped.
    state = tracker.init(frames[0], np.array([-10, 100, 30, 140], np.float32))
    assert np.array_equal(state.box, np.array([0, 100, 30, 140], np.float32))
    state = tracker.init(frames[0], scene.boxes["D"][0])
    for frame in frames[1:3]:
        state, box, _ = tracker.update(state, frame)
        assert box is not None and np.all(box >= 0) and np.all(box <= [320, 240, 320, 240])
    assert all(np.array_equal(a, b) for a, b in zip(before, frames[:3]))


@pytest.mark.parametrize("name", NAMES)
def test_two_runs_give_identical_boxes(name, scene, frames, runs):
    one = runs(name, "D", 60)[:29]
    two = _track(name, frames, scene.boxes["D"][0], 30)
    assert [(None if b is None else b.tolist(), s) for b, s in one] == \
           [(None if b is None else b.tolist(), s) for b, s in two]


# ---------------------------------------------------------------------------
# quality on the scene
# ---------------------------------------------------------------------------

# Object D (40x40, an ellipse at ~1.1-2.4 px/frame), frames 1-59. Measured mean / minimum
# IoU: csrt 0.867 / 0.81, kcf 0.905 / 0.905 (its box sits 2 px behind in x, every frame),
# mosse 1.000 / 1.000; minimum score csrt 0.64, kcf 0.94, mosse 0.98.
STEADY = {"csrt": (0.82, 0.75), "kcf": (0.85, 0.85), "mosse": (0.95, 0.95)}


@pytest.mark.parametrize("name", NAMES)
def test_follows_a_visible_object(name, scene, runs):
    results = runs(name, "D", 60)
    ious = [0.0 if box is None else _iou(box, scene.boxes["D"][i]) for i, (box, _) in enumerate(results, 1)]
    mean_floor, min_floor = STEADY[name]
    assert np.mean(ious) >= mean_floor and min(ious) >= min_floor, (np.mean(ious), min(ious))
    assert min(score for _, score in results) >= 0.55


# Object A before it nears the pillar (frames 1-45). Measured mean IoU: csrt 0.962,
# kcf 0.832, mosse 1.000. MOSSE loses A at frame 46, while A is still wholly visible 12 px from the
# pillar (its peak-to-sidelobe ratio drops below 5.7), and never finds it again.
APPROACH = {"csrt": 0.9, "kcf": 0.78, "mosse": 0.95}


@pytest.mark.parametrize("name", NAMES)
def test_occlusion_makes_the_tracker_let_go(name, scene, runs):
    first_hidden = int(np.flatnonzero(~scene.visible["A"])[0])  # 65: A more than half behind the pillar
    fully_hidden = np.flatnonzero(scene.visibility["A"] == 0)  # 74-104
    results = runs(name, "A", int(fully_hidden[-1]) + 1)
    ious = [0.0 if box is None else _iou(box, scene.boxes["A"][i]) for i, (box, _) in enumerate(results[:45], 1)]
    assert np.mean(ious) >= APPROACH[name], np.mean(ious)
    # Measured first frame with no box or a score < 0.5: csrt 64 (0.75 at 60 falling to 0.50
    # at 64 as A slides behind, 0.28-0.43 for 65-70, then it stays on the bricks), kcf 63
    # (None from there on, with A 40% hidden), mosse 46.
    let_go = next(i for i, r in enumerate(results, 1) if not _confident(r))
    assert let_go <= first_hidden + 2, let_go
    # While A is wholly hidden nothing is reported with confidence (csrt's best is 0.22).
    assert not any(_confident(results[i - 1]) for i in fully_hidden)
    if name != "csrt":  # KCF and MOSSE report a failure; CSRT keeps a box, scored low
        assert all(results[i - 1][0] is None for i in fully_hidden)


@pytest.mark.parametrize("name", NAMES)
def test_an_object_leaving_the_frame_is_let_go(name, scene, runs):
    gone = int(np.flatnonzero(~scene.visible["B"])[0])  # 44: B more than half outside
    results = runs(name, "B", 60)
    # Followed while mostly inside. Measured minimum IoU over frames 1-43: csrt 0.81, kcf 0.85,
    # mosse 1.00; minimum score csrt 0.66, kcf 0.56, mosse 0.91.
    assert all(r[0] is not None and _iou(r[0], scene.boxes["B"][i]) >= 0.7 for i, r in enumerate(results[:gone - 1], 1))
    # Let go within two frames. Measured: csrt keeps a box pinned at the edge (51% inside)
    # scored 0.84 at frame 44, then 0.15-0.43; kcf None from 45 (KCF clips its box to the
    # image; see _opencv._unclipped); mosse None from 44.
    assert not any(_confident(r) for r in results[gone + 1:])
