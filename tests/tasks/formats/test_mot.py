"""MOTChallenge text: round trips, motmetrics and datumaro reading our files, and a clear
error for each kind of bad line."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tasks.formats import mot
from tasks.errors import FormatError
from tasks.annotations.keyframes import KEYFRAME_SCHEMA, expand, normalise_dense, sort_tracks
from tests.peer import run_peer
from tests.tasks.formats.test_native import (assert_round_trip, clip_frames, compacted,
                                             dense_tracks, make_clip, standin_keyframes)

PRECISION = 2e-4  # x, y, w, h are rounded to 4 decimals; x2 = x + w adds two roundings


def mm():
    # motmetrics 1.4 calls np.asfarray, which numpy 2 removed.
    np.asfarray = lambda a, dtype=np.float64: np.asarray(a, dtype=dtype)
    import motmetrics
    return motmetrics


@pytest.fixture
def clip():
    return make_clip()


@pytest.fixture
def dense(clip):
    return dense_tracks(clip, attributes=False)


@pytest.fixture
def keyframes(clip, dense):
    return standin_keyframes(dense, clip)


def with_labels(keyframes, clip):
    labels = mot.write_labels(keyframes, clip)
    return lambda data, c: mot.read(data, c, labels)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("mode", ["linear", "none"])
def test_round_trip(clip, seed, mode):
    dense = dense_tracks(clip, seed, attributes=False, held=mode == "none")
    kf = standin_keyframes(dense, clip, mode)
    back = assert_round_trip(kf, dense, clip, mot.write, with_labels(kf, clip),
                             precision=PRECISION)
    # Every visible frame is a keyframe, and each gap starts with a hidden one.
    visible = normalise_dense(dense).filter(pc.invert(normalise_dense(dense)["hidden"]))
    shown = back.filter(pc.invert(back["hidden"]))
    assert shown["frame"].to_pylist() == visible["frame"].to_pylist()
    kinds = dict(zip(zip(back["track_id"].to_pylist(), back["frame"].to_pylist()),
                     back["kind"].to_pylist()))
    assert (kinds[(1, 0)], kinds[(1, 40)], kinds[(1, 55)], kinds[(1, 70)]) == \
        ("start", "hidden", "shown", "label")
    assert (kinds[(2, 93)], kinds[(6, 13)], kinds[(6, 15)]) == ("end", "hidden", "shown")
    ends = dict(zip(back["track_id"].to_pylist(), back["end_frame"].to_pylist()))
    assert ends[1] is None and ends[2] == 93 and ends[5] == 120


def test_round_trip_of_compacted_tracks(clip):
    dense = dense_tracks(clip, 4, attributes=False, jitter=0.2)
    kf = compacted(dense, clip, 0.5)
    assert_round_trip(kf, dense, clip, mot.write, with_labels(kf, clip), precision=PRECISION,
                      tolerance=0.5)


def test_lines_are_1_based_dense_and_sorted(clip, keyframes):
    lines = mot.write(keyframes, clip).decode().splitlines()
    states = expand(keyframes, clip_frames(clip))
    assert len(lines) == states.num_rows - pc.sum(states["hidden"]).as_py()
    rows = [line.split(",") for line in lines]
    assert all(len(r) == 9 for r in rows)
    keys = [(int(r[0]), int(r[1])) for r in rows]
    assert keys == sorted(keys) and min(k[0] for k in keys) == 1
    assert {r[6] for r in rows} == {"1"} and {r[8] for r in rows} == {"1"}
    labels = mot.write_labels(keyframes, clip).decode().splitlines()
    assert labels == sorted(set(keyframes["label"].to_pylist()))


def test_labels_file_and_its_absence(clip, keyframes):
    names = ["car", "person", "tool/grasper", "tool/scissors"]
    data = mot.write(keyframes, clip, labels=names)
    back = mot.read(data, clip, mot.write_labels(keyframes, clip, labels=names))
    assert sorted(set(back["label"].to_pylist())) == sorted(set(keyframes["label"].to_pylist()))
    bare = mot.read(data, clip)  # without labels.txt a label is its class id
    ids = {names.index(x) + 1 for x in keyframes["label"].to_pylist()}
    assert set(bare["label"].to_pylist()) == {str(i) for i in ids}
    with pytest.raises(ValueError, match=r"labels \['person'\] are not in the labels list"):
        mot.write(keyframes, clip, labels=["tool/grasper", "tool/scissors"])
    with pytest.raises(ValueError, match="single lines"):
        mot.write_labels(keyframes, clip, labels=names + ["two\nlines"])


def test_ignored_flag_and_track_ids(clip, keyframes):
    flagged = keyframes.set_column(keyframes.schema.get_field_index("attributes"), "attributes",
                                   pa.array(['{"ignored":true}' if t == 3 else "{}"
                                             for t in keyframes["track_id"].to_pylist()]))
    back = mot.read(mot.write(flagged, clip), clip)
    got = {(t, a) for t, a in zip(back["track_id"].to_pylist(), back["attributes"].to_pylist())}
    assert (3, '{"ignored":true}') in got and (3, "{}") not in got and (1, "{}") in got
    zero = keyframes.set_column(keyframes.schema.get_field_index("track_id"), "track_id",
                                pc.subtract(keyframes["track_id"], pa.scalar(1, pa.int32())))
    with pytest.raises(ValueError, match="1-based"):
        mot.write(zero, clip)
    assert mot.write(KEYFRAME_SCHEMA.empty_table(), clip) == b""
    assert mot.read(b"", clip).num_rows == 0


def test_motmetrics_reads_every_row_and_scores_it_perfect(clip, dense, keyframes, tmp_path):
    metrics = mm()
    path = tmp_path / "gt.txt"
    path.write_bytes(mot.write(keyframes, clip))
    gt = metrics.io.loadtxt(str(path), fmt="mot15-2D")
    truth = normalise_dense(dense)
    truth = sort_tracks(truth.filter(pc.invert(truth["hidden"])))
    x1, y1 = truth["x1"].to_numpy(), truth["y1"].to_numpy()
    expected = {(f + 1, t): (x, y, x2 - x, y2 - y) for f, t, x, y, x2, y2 in zip(
        truth["frame"].to_pylist(), truth["track_id"].to_pylist(), x1, y1,
        truth["x2"].to_numpy(), truth["y2"].to_numpy())}
    assert set(gt.index) == set(expected)  # hidden frames absent, frames and ids 1-based
    found = gt.loc[list(expected)]
    # motmetrics reads x and y as the devkit's 1-based pixels and subtracts 1.
    got = np.column_stack([found["X"] + 1, found["Y"] + 1, found["Width"], found["Height"]])
    assert np.abs(got - np.array(list(expected.values()))).max() <= PRECISION

    hyp = gt.copy()
    mh = metrics.metrics.create()
    acc = metrics.utils.compare_to_groundtruth(gt, hyp, "iou", distth=0.5)
    summary = mh.compute(acc, metrics=["mota", "idf1", "num_switches"], name="self")
    assert summary.loc["self", "mota"] == 1.0 and summary.loc["self", "idf1"] == 1.0
    # The same check sees an identity switch (so the 1.0 above means something).
    swapped = hyp.reset_index()
    late = (swapped["Id"] == 3) & (swapped["FrameId"] > 100)
    swapped.loc[late, "Id"] = 99
    acc = metrics.utils.compare_to_groundtruth(gt, swapped.set_index(["FrameId", "Id"]), "iou",
                                               distth=0.5)
    worse = mh.compute(acc, metrics=["idf1", "num_switches"], name="swap")
    assert worse.loc["swap", "num_switches"] == 1 and worse.loc["swap", "idf1"] < 1.0


DATUMARO_SNIPPET = r"""
import json, sys
from datumaro.components.annotation import AnnotationType
from datumaro.components.dataset import Dataset
ds = Dataset.import_from(sys.argv[1], "mot_seq")
names = [c.name for c in ds.categories()[AnnotationType.label]]
rows = [[int(item.id), a.attributes["track_id"], names[a.label], *a.points]
        for item in ds for a in item.annotations]
print(json.dumps(sorted(rows)))
"""


def test_datumaro_reads_the_cvat_mot_layout(clip, keyframes, tmp_path):
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "gt.txt").write_bytes(mot.write(keyframes, clip))
    (tmp_path / "gt" / mot.LABELS_FILE).write_bytes(mot.write_labels(keyframes, clip))
    rows = run_peer(DATUMARO_SNIPPET, str(tmp_path))
    states = sort_tracks(expand(keyframes, clip_frames(clip)))
    states = states.filter(pc.invert(states["hidden"]))
    expected = sorted([f + 1, t, lab, x1, y1, x2, y2] for f, t, lab, x1, y1, x2, y2 in
                      zip(*(states[c].to_pylist() for c in ("frame", "track_id", "label", "x1",
                                                            "y1", "x2", "y2"))))
    assert [r[:3] for r in rows] == [e[:3] for e in expected]
    # datumaro keeps corners to 2 decimals (COORDINATE_ROUNDING_DIGITS), as float32.
    assert np.abs(np.array([r[3:] for r in rows]) - np.array([e[3:] for e in expected])).max() \
        <= 0.005 + PRECISION


@pytest.mark.parametrize("text, message", [
    ("1,1,10,20,30,40,1,1,1\n\n2,1,1O,20,30,40,1,1,1\n", r"MOT line 3: x '1O' is not a number"),
    ("1,1,10,20,30,40,1,1,1\n2,x,10,20,30,40,1,1,1\n", r"MOT line 2: id 'x' is not an integer"),
    ("1,1,10,20,30,40,1,1\n", "expected 9 comma-separated values per line"),
    ("1,1,10,20,30,40,1,1,1\n2,1,10,20,30,40,1,1,1,0\n", "expected 9 comma-separated values"),
    ("0,1,10,20,30,40,1,1,1\n", r"MOT line 1 \(id 1, frame 0\): frame is outside the clip's 1 "
     "to 150 \\(MOT frames are 1-based\\)"),
    ("151,1,10,20,30,40,1,1,1\n", "frame is outside the clip's 1 to 150"),
    ("1,0,10,20,30,40,1,1,1\n", "id must be a positive 32-bit integer"),
    ("1,1,10,20,-30,40,1,1,1\n", r"MOT line 1 \(id 1, frame 1\): negative width or height"),
    ("1,1,10,20,30,nan,1,1,1\n", "MOT line 1: h is not a finite number"),
    ("1,1,10,20,30,,1,1,1\n", "MOT line 1: h '' is not a number"),
    ("1,1,10,20,30,40,2,1,1\n", "not_ignored must be 0 or 1"),
    ("1,1,10,20,30,40,1,1,1.5\n", r"visibility must be in \[0, 1\]"),
    ("1,1,10,20,30,40,1,-1,1\n", "class_id must be 1 to"),
    ("1,1,10,20,30,40,1,1,1\n1,1,11,20,30,40,1,1,1\n", "id 1 has two boxes on frame 1"),
])
def test_bad_lines_are_refused_with_their_place(clip, text, message):
    with pytest.raises(FormatError, match=message):
        mot.read(text.encode(), clip)


def test_bad_labels_are_refused(clip):
    line = b"1,1,10,20,30,40,1,3,1\n"
    with pytest.raises(FormatError, match=r"class_id must be 1 to 2 \(the lines of labels.txt\)"):
        mot.read(line, clip, b"a\nb\n")
    with pytest.raises(FormatError, match="labels.txt is not UTF-8"):
        mot.read(line, clip, b"\xff\xfe")
    with pytest.raises(FormatError, match="class_id names an empty line of labels.txt"):
        mot.read(line, clip, b"a\nb\n\nc\n")
