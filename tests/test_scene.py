"""The synthetic tracking scene: its file decodes as described and its ground truth is true."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

try:  # tests/ as a package (rootdir on sys.path) or as a plain directory (pytest prepends it)
    from tests.scene import COLORS, IDS, render_scene
except ImportError:
    from scene import COLORS, IDS, render_scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return render_scene(tmp_path_factory.mktemp("scene") / "scene.mp4")


@pytest.fixture(scope="module")
def decoded(scene):
    with av.open(str(scene.path)) as container:
        stream = container.streams.video[0]
        frames = [(f.pts, f.time_base, f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
    return frames


def _runs(flags: np.ndarray) -> list[tuple[bool, int, int]]:
    """Runs of equal values as (value, first, last)."""
    edges = np.flatnonzero(np.diff(flags.astype(np.int8))) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges - 1, [len(flags) - 1]])
    return [(bool(flags[s]), int(s), int(e)) for s, e in zip(starts, ends)]


def _mask(size, boxes) -> np.ndarray:
    w, h = size
    mask = np.zeros((h, w), bool)
    for x1, y1, x2, y2 in boxes:
        mask[int(y1):int(y2), int(x1):int(x2)] = True
    return mask


def test_file_decodes_to_every_frame_with_pts_equal_to_its_index(scene, decoded):
    assert scene.frames == 150 and scene.size == (320, 240) and scene.rate == Fraction(30)
    assert len(decoded) == 150
    assert [pts for pts, _, _ in decoded] == list(range(150))
    assert {tb for _, tb, _ in decoded} == {Fraction(1, 30)}
    assert decoded[0][2].shape == (240, 320, 3)


def test_rendering_is_deterministic(tmp_path):
    a = render_scene(tmp_path / "a.mp4", frames=12)
    b = render_scene(tmp_path / "b.mp4", frames=12)
    assert a.path.read_bytes() == b.path.read_bytes()
    assert all(np.array_equal(a.boxes[o], b.boxes[o]) for o in IDS)


def test_ground_truth_boxes_are_where_the_objects_are(scene, decoded):
    occ = scene.occluder.astype(int)
    bg = scene.background.astype(np.int16)
    for i, (_, _, img) in enumerate(decoded):
        img = img.astype(np.int16)
        # Outside every object's box the picture is the background (coding noise only) ...
        covered = _mask(scene.size, [scene.boxes[o][i] for o in IDS])
        assert np.abs(img - bg)[~covered].mean() < 3, i
        ids, boxes = scene.gt_frame(i)
        for obj, (x1, y1, x2, y2) in zip(ids, boxes.astype(int)):
            # ... and the drawn part of each visible object's box (not behind the pillar)
            # has the object's colour, far from the background there.
            drawn = np.ones((y2 - y1, x2 - x1), bool)
            drawn[:, max(occ[0] - x1, 0):max(occ[2] - x1, 0)] = False
            assert drawn.mean() >= 0.5
            patch = img[y1:y2, x1:x2][drawn]
            mean = patch.mean(axis=0)
            assert np.abs(mean - COLORS[obj]).max() < 15, (i, obj, mean)
            assert np.abs(patch - bg[y1:y2, x1:x2][drawn]).mean() > 40, (i, obj)


def test_a_hidden_object_shows_the_occluder(scene, decoded):
    hidden = np.flatnonzero(scene.visibility["A"] == 0)
    assert len(hidden) >= 28
    occ = scene.occluder
    # The reference is the decoded first frame, when A is far from the pillar: its thin
    # mortar lines lose colour in 4:2:0 coding, so it differs from `background` by ~6 levels.
    pillar = decoded[0][2].astype(np.float32)
    for i in hidden:
        x1, y1, x2, y2 = scene.boxes["A"][i].astype(int)
        assert occ[0] <= x1 and x2 <= occ[2]
        img = decoded[i][2][y1:y2, x1:x2].astype(np.float32)
        assert np.abs(img - pillar[y1:y2, x1:x2]).mean() < 4, i
        assert np.abs(img.mean(axis=(0, 1)) - COLORS["A"]).max() > 40, i


def test_the_occlusion_exit_and_entry_happen(scene):
    a, b, c, d = (_runs(scene.visible[o]) for o in IDS)
    # A: visible, behind the pillar for ~1.6 s (fully hidden >= ~1 s), visible again.
    assert [v for v, _, _ in a] == [True, False, True]
    assert a[1][1] >= 40 and a[1][2] - a[1][1] + 1 >= 30 and a[2][2] - a[2][1] + 1 >= 20
    assert 28 <= int((scene.visibility["A"] == 0).sum()) <= 40
    assert np.all(scene.visibility["A"][scene.visible["A"]] >= 0.5)
    # B: visible, then out through the right edge for good.
    assert [v for v, _, _ in b] == [True, False] and b[0][2] >= 30
    assert scene.boxes["B"][-1][0] == scene.boxes["B"][-1][2] == 320  # wholly outside: zero width
    # C: absent, then in through the bottom edge for good.
    assert [v for v, _, _ in c] == [False, True] and 20 <= c[1][1] <= 60
    assert scene.visibility["C"][0] == 0
    # D: always visible and always wholly drawn.
    assert d == [(True, 0, 149)] and np.all(scene.visibility["D"] == 1)


def test_paths_are_curved_at_moderate_speed(scene):
    for obj in IDS:
        drawn = scene.visibility[obj] == 1  # wholly drawn: the box is the full object
        boxes = scene.boxes[obj][drawn]
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        # Over 5 frames (integer positions make single steps jumpy): 1-4 px/frame.
        step = np.linalg.norm(centres[5:] - centres[:-5], axis=1) / 5
        contiguous = np.flatnonzero(drawn)
        step = step[contiguous[5:] - contiguous[:-5] == 5]
        assert 0.7 <= step.min() and step.max() <= 4, (obj, step.min(), step.max())
        heading = np.arctan2(*(centres[10:] - centres[:-10]).T[::-1])
        assert np.ptp(np.unwrap(heading)) > 0.5, obj  # the direction turns by > ~30 degrees


def test_gt_frame_and_visible_box(scene):
    ids, boxes = scene.gt_frame(90)  # A fully behind the pillar, B gone, C and D in view
    assert ids == ["C", "D"] and boxes.shape == (2, 4) and boxes.dtype == np.float32
    assert scene.visible_box("A", 90) is None and scene.visible_box("B", 90) is None
    box = scene.visible_box("D", 0)
    assert box.dtype == np.float32 and box.shape == (4,)
    assert np.array_equal(box, scene.boxes["D"][0])
    assert box[2] - box[0] == 40 and box[3] - box[1] == 40
    ids, boxes = scene.gt_frame(0)
    assert ids == ["A", "B", "D"] and boxes.shape == (3, 4)
