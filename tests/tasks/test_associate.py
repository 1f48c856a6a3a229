import numpy as np

from tasks.associate import associate
from tasks.boxmath import interpolate, iou_matrix, iou_pairs
from tasks.recipe import AssociateConfig


def _moving(start, velocity, frames, size=20.0):
    x, y = start
    return np.array([[x + velocity[0] * f, y + velocity[1] * f,
                      x + velocity[0] * f + size, y + velocity[1] * f + size] for f in frames])


def _flatten(objects, frames):
    """Rows sorted by frame from {name: (boxes per frame or None)}."""
    rows = []
    for f in frames:
        for name, (boxes, score) in objects.items():
            if boxes[f] is not None:
                rows.append((f, boxes[f], score, name))
    return (np.array([r[0] for r in rows]), np.array([r[1] for r in rows]),
            np.array([r[2] for r in rows]), [r[3] for r in rows])


def test_iou_helpers():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], float)
    b = np.array([[5, 0, 15, 10]], float)
    assert np.allclose(iou_matrix(a, b), [[50 / 150], [0]])
    assert np.allclose(iou_pairs(a[:1], b), [50 / 150])
    assert np.allclose(interpolate([0, 0, 10, 10], [10, 0, 20, 10], 0, 10, np.array([5])),
                       [[5, 0, 15, 10]])


def test_two_crossing_objects_keep_their_ids_with_gaps():
    frames = np.arange(0, 60)
    a = _moving((0, 50), (3, 0), frames)
    b = _moving((180, 56), (-3, 0), frames)   # crosses a around frame 30
    boxes_a = [a[f] for f in frames]
    boxes_b = [b[f] if not 20 <= f < 26 else None for f in frames]  # b missed for 6 frames
    f, boxes, scores, names = _flatten({"a": (boxes_a, 0.9), "b": (boxes_b, 0.9)}, frames)
    ids = associate(f, boxes, scores, np.zeros(len(f)), frames, AssociateConfig(min_hits=3))
    by_name = {n: set(ids[[i for i, m in enumerate(names) if m == n]].tolist()) for n in "ab"}
    # The first min_hits - 1 detections of each object precede its confirmation: they get
    # the id too (rows of a confirmed track are labelled retroactively).
    assert by_name["a"] == {1} and by_name["b"] == {2}


def test_every_nth_frames_use_motion_prediction():
    # Detector on frames 0, 1, 2, then every 5th: 15 px per step for a 20 px box, so the
    # last box overlaps the next by IoU 0.14 only; the predicted box overlaps it exactly.
    processed = np.array([0, 1, 2] + list(range(5, 100, 5)))
    box = _moving((0, 0), (3, 0), processed)
    assert iou_pairs(box[4], box[5])[0] < 0.3
    ids = associate(processed, box, np.full(len(processed), 0.9), np.zeros(len(processed)),
                    processed, AssociateConfig(min_hits=2, match_iou=0.3))
    assert set(ids.tolist()) == {1}


def test_noise_and_low_scores():
    frames = np.arange(10)
    # A lone low-score box never starts a track; a one-frame blip is dropped (min_hits).
    f = np.array([0, 3, 5])
    boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [80, 80, 90, 90]], float)
    ids = associate(f, boxes, np.array([0.2, 0.9, 0.2]), np.zeros(3), frames, AssociateConfig())
    assert ids.tolist() == [0, 0, 0]


def test_low_score_detections_extend_a_track():
    frames = np.arange(8)
    boxes = _moving((0, 0), (1, 0), frames)
    scores = np.array([0.9, 0.9, 0.9, 0.2, 0.2, 0.9, 0.9, 0.9])
    ids = associate(frames, boxes, scores, np.zeros(8), frames, AssociateConfig(min_hits=3))
    assert ids.tolist() == [1] * 8


def test_class_aware_matching_and_max_age():
    frames = np.arange(40)
    boxes = np.array([[0, 0, 10, 10]] * 40, float)
    labels = np.array([0] * 20 + [1] * 20)
    ids = associate(frames, boxes, np.full(40, 0.9), labels, frames, AssociateConfig(min_hits=1))
    assert set(ids[:20]) == {1} and set(ids[20:]) == {2}
    # Seen again after more than max_age frames: a new object.
    f = np.array([0, 1, 2, 50, 51, 52])
    ids = associate(f, np.array([[0, 0, 10, 10]] * 6, float), np.full(6, 0.9), np.zeros(6),
                    np.arange(60), AssociateConfig(min_hits=2, max_age=30))
    assert ids.tolist() == [1, 1, 1, 2, 2, 2]


def test_deterministic():
    rng = np.random.default_rng(0)
    frames = np.sort(rng.integers(0, 50, 300))
    boxes = rng.uniform(0, 200, (300, 2))
    boxes = np.column_stack([boxes, boxes + rng.uniform(5, 40, (300, 2))])
    args = (frames, boxes, rng.uniform(0, 1, 300), rng.integers(0, 2, 300), np.arange(50),
            AssociateConfig(min_hits=1))
    assert np.array_equal(associate(*args), associate(*args))
