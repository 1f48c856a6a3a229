"""The tracking scenes: deterministic files whose ground truth says what the module says."""

from __future__ import annotations

import av
import numpy as np

from tests.mot_scenes import render


def test_overlap_scene_events_and_determinism(tmp_path):
    truth = render("overlap", tmp_path / "a.mp4")
    assert render("overlap", tmp_path / "b.mp4").path.read_bytes() == truth.path.read_bytes()
    v = truth.visibility
    hidden = np.flatnonzero((v[2] > 0) & (v[2] < 0.5))       # P2 behind P1
    assert len(hidden) >= 25 and np.all(np.diff(hidden) == 1)
    assert v[5][0] == 1 and v[5][-1] == 0                      # P5 walks out
    assert v[6][:90].max() == 0 and v[6][-1] == 1              # P6 walks in late
    with av.open(str(truth.path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == truth.frames and frames[0].shape == (272, 480, 3)
    # The drawn person is where the truth says: P1's box holds its red shirt.
    x1, y1, x2, y2 = truth.boxes[1][0].astype(int)
    shirt = frames[0][y1 + (y2 - y1) // 3, x1 + 3:x2 - 3].mean(axis=0)
    assert shirt[0] > 150 and shirt[2] < 110


def test_cut_and_pan_scenes(tmp_path):
    cut = render("cut", tmp_path / "cut.mp4")
    assert cut.cuts == (75,)
    assert all(cut.visibility[p][75:].max() == 0 for p in (1, 2, 3))
    assert all(cut.visibility[p][:75].max() == 0 for p in (4, 5, 6))
    pan = render("pan", tmp_path / "pan.mp4")
    steps = np.abs(np.diff(np.round(pan.camera[:, 0])))
    assert steps.max() >= 8 and pan.camera[-1, 0] - pan.camera[0, 0] > 300


def test_mot_file_marks_partly_hidden_people_as_distractors(tmp_path):
    truth = render("overlap", tmp_path / "o.mp4")
    lines = truth.write_mot(tmp_path / "gt.txt").read_text().splitlines()
    classes = {int(line.split(",")[7]) for line in lines}
    assert classes == {1, 8}
    assert len(lines) == sum(int((truth.visibility[p] > 0).sum()) for p in truth.visibility)
