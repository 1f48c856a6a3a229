import numpy as np

from tasks.track.kalman import BoxKalman, to_box, to_state, warp_boxes


def test_state_round_trip_and_minimum_size():
    box = np.array([10.0, 20.0, 50.0, 100.0])
    assert np.allclose(to_box(to_state(box)), box)
    assert np.allclose(to_box(np.array([5.0, 5.0, -3.0, 0.2])), [4.5, 4.5, 5.5, 5.5])


def test_constant_motion_is_learnt_and_predicted():
    kf = BoxKalman(np.array([0.0, 0.0, 20.0, 40.0]))
    for step in range(1, 30):
        kf.predict()
        kf.update(np.array([2.0 * step, 0.0, 20.0 + 2.0 * step, 40.0]))
    kf.predict(5)
    assert np.allclose(kf.box, [68.0, 0.0, 88.0, 40.0], atol=0.5)
    assert abs(kf.mean[4] - 2.0) < 0.05


def test_warp_moves_position_velocity_and_uncertainty():
    kf = BoxKalman(np.array([0.0, 0.0, 20.0, 40.0]))
    kf.mean[4] = 1.0
    shift = np.array([[1.0, 0.0, 7.0], [0.0, 1.0, -3.0]])
    kf.warp(shift)
    assert np.allclose(kf.box, [7.0, -3.0, 27.0, 37.0]) and kf.mean[4] == 1.0
    half = np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])
    before = kf.cov[0, 0]
    kf.warp(half)
    assert np.isclose(kf.mean[4], 0.5) and np.isclose(kf.cov[0, 0], before / 4)
    assert np.allclose(warp_boxes(np.array([[0, 0, 10, 10]]), shift), [[7, -3, 17, 7]])


def test_smoothing_removes_jitter_and_keeps_motion():
    from tasks.track.kalman import smooth

    rng = np.random.default_rng(0)
    frames = np.array([f for f in range(80) if f % 7 != 3])  # gaps too
    truth = np.column_stack([100 + 2.0 * frames, 50 + 0.5 * frames,
                             160 + 2.0 * frames, 170 + 0.5 * frames]).astype(float)
    noisy = truth + rng.normal(0, 2.0, truth.shape)
    smoothed = smooth(frames, noisy)
    assert np.abs(smoothed - truth).mean() < 0.5 * np.abs(noisy - truth).mean()
    assert np.allclose(smooth(frames[:2], noisy[:2]), noisy[:2])  # too short: as given
