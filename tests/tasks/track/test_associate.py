import numpy as np

from tasks.track.associate import associate
from tasks.annotations.boxmath import interpolate, iou_matrix, iou_pairs
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


def _ids_by(names, ids):
    return {n: [int(i) for i, m in zip(ids, names) if m == n] for n in set(names)}


def test_a_merged_detection_updates_no_track_and_identities_survive_it():
    # Two people walk side by side, then a background-subtraction blob joins them for 20
    # frames (one box around both), then they part: each keeps its id.
    frames = np.arange(60)
    a = _moving((0, 50), (1, 0), frames, size=20.0)
    b = _moving((26, 50), (1, 0), frames, size=20.0)
    rows = []
    for f in frames:
        if 20 <= f < 40:
            rows.append((f, np.array([a[f][0], 50, b[f][2], 70]), 0.9, "merged"))
        else:
            rows.append((f, a[f], 0.9, "a"))
            rows.append((f, b[f], 0.9, "b"))
    f = np.array([r[0] for r in rows])
    ids = associate(f, np.array([r[1] for r in rows]), np.array([r[2] for r in rows]),
                    np.zeros(len(rows)), frames, AssociateConfig(min_hits=3))
    by = _ids_by([r[3] for r in rows], ids)
    assert set(by["a"]) == {1} and set(by["b"]) == {2}
    assert set(by["merged"]) == {0}  # neither track took the joint box


def test_without_the_merge_rule_a_joint_box_takes_one_identity():
    frames = np.arange(60)
    a = _moving((0, 50), (1, 0), frames, size=20.0)
    b = _moving((26, 50), (1, 0), frames, size=20.0)
    rows = [(f, np.array([a[f][0], 50, b[f][2], 70]), 0.9, "merged") if 20 <= f < 40 else None
            for f in frames]
    data = []
    for f in frames:
        if rows[f] is not None:
            data.append(rows[f])
        else:
            data += [(f, a[f], 0.9, "a"), (f, b[f], 0.9, "b")]
    f = np.array([r[0] for r in data])
    ids = associate(f, np.array([r[1] for r in data]), np.array([r[2] for r in data]),
                    np.zeros(len(data)), frames, AssociateConfig(min_hits=3, merged_ioa=None))
    assert set(_ids_by([r[3] for r in data], ids)["merged"]) - {0}  # the rule is what helps


def test_tracks_end_at_a_shot_cut():
    frames = np.arange(40)
    boxes = np.array([[10, 10, 40, 80]] * 40, float)  # the same place before and after
    ids = associate(frames, boxes, np.full(40, 0.9), np.zeros(40), frames,
                    AssociateConfig(min_hits=2), cuts=[20])
    assert set(ids[:20].tolist()) == {1} and set(ids[20:].tolist()) == {2}


def test_camera_motion_keeps_identities_through_a_jolt():
    # A standing person; the camera jumps 40 px right at frame 10 (the person moves 40 px
    # left in the image): no overlap with the last box, but the measured motion moves the
    # track with the view.
    frames = np.arange(20)
    boxes = np.array([[100, 10, 130, 80] if f < 10 else [60, 10, 90, 80] for f in frames], float)
    motion = np.tile(np.eye(2, 3), (20, 1, 1))
    motion[10, 0, 2] = -40.0
    still = associate(frames, boxes, np.full(20, 0.9), np.zeros(20), frames,
                      AssociateConfig(min_hits=2))
    moved = associate(frames, boxes, np.full(20, 0.9), np.zeros(20), frames,
                      AssociateConfig(min_hits=2, camera_motion=True), motion=motion)
    assert set(still.tolist()) == {1, 2}
    assert set(moved.tolist()) == {1}


def test_a_track_seen_again_after_a_miss_is_re_updated_along_a_straight_path():
    # Missed for 10 frames while moving at 3 px/frame: found again, and its velocity comes
    # from the two observations (so it follows on at 3 px/frame, not at a coasting guess).
    frames = np.arange(40)
    box = _moving((0, 0), (3, 0), frames)
    seen = np.array([f < 15 or f >= 25 for f in frames])
    ids = associate(frames[seen], box[seen], np.full(seen.sum(), 0.9), np.zeros(seen.sum()),
                    frames, AssociateConfig(min_hits=3))
    assert set(ids.tolist()) == {1}


def test_crossing_people_at_different_depths_keep_their_ids():
    # Head-on crossing with the near one partly covering the far one.
    frames = np.arange(80)
    near = _moving((0, 60), (3, 0), frames, size=40.0)
    far = _moving((220, 50), (-3, 0), frames, size=30.0)
    names, rows = [], []
    for f in frames:
        rows.append((f, near[f], 0.9)); names.append("near")
        if not 34 <= f < 40:  # hidden behind the near one for a few frames
            rows.append((f, far[f], 0.8)); names.append("far")
    f = np.array([r[0] for r in rows])
    ids = associate(f, np.array([r[1] for r in rows]), np.array([r[2] for r in rows]),
                    np.zeros(len(rows)), frames, AssociateConfig(min_hits=3))
    by = _ids_by(names, ids)
    assert set(by["near"]) == {1} and set(by["far"]) == {2}
