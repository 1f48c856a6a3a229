import numpy as np

from tasks.media.motion import IDENTITY, CameraMotion


def _ground(rng, w=900, h=300):
    import cv2

    grid = rng.uniform(0, 255, (h // 6, w // 6)).astype(np.float32)
    big = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.repeat(np.clip(big, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def test_a_shifting_view_gives_its_translation_in_full_size_pixels():
    rng = np.random.default_rng(0)
    ground = _ground(rng)
    motion = CameraMotion(side=320)
    offsets = [0, 6, 11, 11, 3]
    found = []
    for x in offsets:
        view = ground[20:260, x:x + 640]          # 640 x 240, analysed at 320 x 120
        small = view[::2, ::2]
        found.append(motion.feed(np.ascontiguousarray(small), (640, 240)))
    assert np.array_equal(found[0], IDENTITY)
    for (a, b), affine in zip(zip(offsets, offsets[1:]), found[1:]):
        # The view moved right by b - a: content moves left by as much.
        assert abs(affine[0, 2] - (a - b)) < 1.0 and abs(affine[1, 2]) < 1.0
        assert np.allclose(affine[:, :2], np.eye(2), atol=0.02)


def test_a_blank_view_gives_no_motion():
    motion = CameraMotion()
    flat = np.full((120, 160, 3), 90, np.uint8)
    assert np.array_equal(motion.feed(flat, (320, 240)), IDENTITY)
    assert np.array_equal(motion.feed(flat, (320, 240)), IDENTITY)
