"""The ONNX detector on tiny graphs built here whose outputs are a function of the image.

Class scores are channel means of the network input (class "red" = mean of channel 0,
"green" = channel 1, "blue" = channel 2) times a per-anchor weight, and anchor boxes are
constants in input pixels, so a wrong channel order, letterbox unmapping or parse fails.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models import registry
from models.detectors.onnx import create as _create
from tasks.detect.driver import detect_checked

RUNTIME = "onnxruntime"


@pytest.fixture(params=["onnxruntime", "opencv"], autouse=True)
def runtime(request, monkeypatch):
    """Every test runs on both runtimes: the same model must give the same boxes."""
    monkeypatch.setattr(sys.modules[__name__], "RUNTIME", request.param)
    return request.param


def create(**options):
    return _create(**{"runtime": RUNTIME, **options})

LABELS = ["red", "green", "blue"]
RED, GREEN, BLUE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 0, 0)
# A 320x180 frame letterboxed into 640x640 fills 640x360 (scale 2, 140 rows of gray 114
# above and below), so a full channel averages to this over the network input:
LB_MEAN = 360 / 640 + (280 / 640) * 114 / 255
PAD_MEAN = (280 / 640) * 114 / 255  # what an empty channel averages to (the padding)
# OpenCV's ReduceMean sums 640x640 floats in float32 and lands ~4e-4 off: compare to 1e-3,
# still far tighter than a wrong padding value would be (gray 0 gives 0.5625, 127 0.780).
TOL = 1e-3

# Anchors in 640x640 input pixels (cx, cy, w, h) and their weights; with a 320x180 frame:
ANCHORS = np.array([
    [320, 320, 200, 100],  # 0: frame box (110, 65, 210, 115)
    [325, 322, 200, 100],  # 1: IoU 0.915 with anchor 0, weaker: NMS removes it
    [600, 150, 80, 40],    # 2: top 10 px lie in the padding: frame box (280, 0, 320, 15)
    [100, 200, 60, 40],    # 3: too weak for the 0.25 threshold
    [320, 50, 100, 40],    # 4: wholly in the padding of a landscape frame
], np.float32)
WEIGHTS = np.array([1.0, 0.9, 0.8, 0.2, 1.0], np.float32)


def _frame(rgb, w=320, h=180):
    frame = np.zeros((h, w, 3), np.uint8)
    frame[:] = rgb
    return frame


def _save(nodes, inits, inp_shape, out_shape, path):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, inp_shape)],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    # Opset 17 (ReduceMean axes as an attribute) loads in OpenCV 5's DNN importer.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _means(batch):
    """Nodes giving "m": channel means of the input, (N, 3, 1)."""
    shape = [0 if batch == "N" else 1, 3, 1]  # a baked batch of 1, like many real exports
    return ([helper.make_node("ReduceMean", ["images"], ["m4"], axes=[2, 3], keepdims=1),
             helper.make_node("Reshape", ["m4", "shape"], ["m"]),
             # zeros (N, 1, 1) so constants can follow the batch size
             helper.make_node("ReduceMean", ["m"], ["m1"], axes=[1], keepdims=1),
             helper.make_node("Mul", ["m1", "zero"], ["z"])],
            {"shape": np.array(shape, np.int64), "zero": np.zeros(1, np.float32)})


def yolov8_model(path, anchors=ANCHORS, weights=WEIGHTS, batch="N"):
    """(N, 4+3, A): anchors, then score[c, a] = mean of channel c x weights[a] (or
    weights[c, a] when given per class)."""
    nodes, inits = _means(batch)
    w = np.broadcast_to(np.asarray(weights, np.float32), (3, len(anchors)))
    inits.update(anchors=anchors.T[None].copy(), w=w[None].copy())
    nodes += [helper.make_node("Mul", ["m", "w"], ["scores"]),
              helper.make_node("Add", ["anchors", "z"], ["boxes"]),
              helper.make_node("Concat", ["boxes", "scores"], ["output0"], axis=1)]
    return _save(nodes, inits, [batch, 3, 640, 640], [batch, 7, len(anchors)], path)


def yolov5_model(path, anchors, objectness):
    """(N, A, 5+3): anchors, objectness, then class c's score = mean of channel c."""
    nodes, inits = _means("N")
    inits.update(anchors=anchors[None].copy(),
                 obj=np.asarray(objectness, np.float32)[None, :, None],
                 ones=np.ones((1, len(anchors), 1), np.float32))
    nodes += [helper.make_node("Transpose", ["m"], ["mt"], perm=[0, 2, 1]),  # (N, 1, 3)
              helper.make_node("Mul", ["mt", "ones"], ["cls"]),              # (N, A, 3)
              helper.make_node("Add", ["anchors", "z"], ["boxes"]),
              helper.make_node("Add", ["obj", "z"], ["objn"]),
              helper.make_node("Concat", ["boxes", "objn", "cls"], ["output0"], axis=2)]
    return _save(nodes, inits, ["N", 3, 640, 640], ["N", len(anchors), 8], path)


def ssd_model(path, size=(300, 300)):
    """(1, 1, 2, 7), batch fixed at 1: class 1 scored by channel 0's mean, class 3 by
    channel 2's, boxes as fractions of the input."""
    nodes, inits = _means(1)
    inits.update(rows=np.array([[[[0, 1, 0, .25, .5, .5, 1.], [0, 3, 0, .5, 0, 1., .5]]]],
                               np.float32),
                 pick=np.array([0, 2], np.int64), shape4=np.array([1, 1, 3, 1], np.int64),
                 onehot=np.array([0, 0, 1, 0, 0, 0, 0], np.float32))
    nodes += [helper.make_node("Reshape", ["m", "shape4"], ["m13"]),
              helper.make_node("Gather", ["m13", "pick"], ["s"], axis=2),  # (1, 1, 2, 1)
              helper.make_node("Mul", ["s", "onehot"], ["scores"]),
              helper.make_node("Add", ["rows", "scores"], ["output0"])]
    return _save(nodes, inits, [1, 3, size[1], size[0]], [1, 1, 2, 7], path)


@pytest.fixture
def yolov8(tmp_path):
    return yolov8_model(tmp_path / "y8.onnx")


def _as_tuples(boxes):
    return [(round(float(c), 3), [round(float(v), 2) for v in xy])
            for xy, c in zip(boxes.xyxy, boxes.confidence)], boxes.class_id.tolist()


def test_yolov8_boxes_are_unletterboxed_into_frame_pixels(yolov8):
    detector = create(model_path=yolov8, labels=LABELS)
    [boxes] = detector.detect([_frame(RED)])
    # anchor 1 lost to NMS, 3 to the threshold, 4 clipped to nothing, green/blue score PAD_MEAN
    np.testing.assert_allclose(boxes.xyxy, [[110, 65, 210, 115], [280, 0, 320, 15]], atol=1e-3)
    np.testing.assert_allclose(boxes.confidence, [LB_MEAN, 0.8 * LB_MEAN], atol=TOL)
    assert boxes.class_id.tolist() == [0, 0]
    assert PAD_MEAN < 0.25 and 0.2 * LB_MEAN < 0.25  # the hand-computed premises hold


def test_yolov8_dynamic_batch_of_mixed_frames_gives_per_frame_answers(yolov8):
    detector = create(model_path=yolov8, labels=LABELS)
    frames = [_frame(RED), _frame(BLUE, w=180, h=320), _frame(BLACK), _frame(GREEN)]
    red, blue, black, green = detect_checked(detector, frames)
    assert red.class_id.tolist() == [0, 0] and green.class_id.tolist() == [1, 1]
    np.testing.assert_allclose(green.xyxy, red.xyxy)
    # portrait 180x320: scale 2, 140 columns of padding left and right; anchor 2 falls in
    # the right padding, anchor 4 is now inside the frame
    np.testing.assert_allclose(blue.xyxy, [[40, 135, 140, 185], [65, 15, 115, 35]], atol=1e-3)
    np.testing.assert_allclose(blue.confidence, [LB_MEAN, LB_MEAN], atol=TOL)
    assert blue.class_id.tolist() == [2, 2]
    assert len(black) == 0
    assert detector._batched  # the batch went through in one forward


def _by_x(boxes):
    order = np.argsort(boxes.xyxy[:, 0])
    return boxes.xyxy[order], boxes.confidence[order]


def test_stretch_without_letterbox_and_mean_normalisation(yolov8):
    detector = create(model_path=yolov8, labels=LABELS, letterbox=False)
    xyxy, confidence = _by_x(detector.detect([_frame(RED)])[0])
    # x scaled by 2, y by 640/180 (no padding, so anchor 4 is now inside the frame)
    sy = 180 / 640
    np.testing.assert_allclose(xyxy, [[110, 270 * sy, 210, 370 * sy], [135, 30 * sy, 185, 70 * sy],
                                      [280, 130 * sy, 320, 170 * sy]], atol=1e-3)
    np.testing.assert_allclose(confidence, [1.0, 1.0, 0.8], atol=TOL)  # red mean exactly 1
    shifted = create(model_path=yolov8, labels=LABELS, letterbox=False, mean=(127.5, 0, 0))
    np.testing.assert_allclose(_by_x(shifted.detect([_frame(RED)])[0])[1], [0.5, 0.5, 0.4],
                               atol=TOL)


def test_channel_order_follows_the_rgb_option(yolov8):
    assert create(model_path=yolov8, labels=LABELS).detect(
        [_frame(RED)])[0].class_id.tolist() == [0, 0]
    bgr_model = create(model_path=yolov8, labels=LABELS, rgb=False)
    # a BGR model sees the red frame's red in its channel 2
    assert bgr_model.detect([_frame(RED)])[0].class_id.tolist() == [2, 2]


def test_nms_is_class_wise_and_follows_nms_iou(yolov8, tmp_path):
    # two near-identical boxes: anchor 0 scores only "red", anchor 1 only "blue"
    weights = np.array([[1, 0], [0, 0], [0, 0.9]], np.float32)
    path = yolov8_model(tmp_path / "two.onnx", anchors=ANCHORS[:2], weights=weights)
    magenta = _frame((255, 0, 255))
    [boxes] = create(model_path=path, labels=LABELS).detect([magenta])
    assert boxes.class_id.tolist() == [0, 2]  # overlapping, but of different classes
    [red] = create(model_path=path, labels=LABELS).detect([_frame(RED)])
    assert red.class_id.tolist() == [0]
    [loose] = create(model_path=yolov8, labels=LABELS, nms_iou=0.95).detect([_frame(RED)])
    np.testing.assert_allclose(loose.confidence, np.array([1, 0.9, 0.8]) * LB_MEAN, atol=TOL)


def test_score_threshold_drops_weak_boxes(yolov8):
    [boxes] = create(model_path=yolov8, labels=LABELS, score_threshold=0.7).detect([_frame(RED)])
    assert len(boxes) == 1 and boxes.confidence[0] == pytest.approx(LB_MEAN, abs=TOL)
    [low] = create(model_path=yolov8, labels=LABELS, score_threshold=0.1).detect([_frame(RED)])
    assert 0.2 * LB_MEAN == pytest.approx(sorted(low.confidence[low.class_id == 0])[0], abs=TOL)


def test_yolov8_with_a_fixed_batch_falls_back_to_one_frame_at_a_time(tmp_path):
    detector = create(model_path=yolov8_model(tmp_path / "b1.onnx", batch=1), labels=LABELS)
    frames = [_frame(RED), _frame(BLUE), _frame(GREEN)]
    results = detect_checked(detector, frames)
    assert [b.class_id.tolist() for b in results] == [[0, 0], [2, 2], [1, 1]]
    assert detector._batched is False  # remembered: the next batch skips the failing forward
    assert [b.class_id.tolist() for b in detector.detect(frames[::-1])] == [[1, 1], [2, 2], [0, 0]]


def test_yolov5_score_is_objectness_times_class_score(tmp_path):
    anchors = np.array([[320, 320, 200, 100], [100, 100, 40, 40]], np.float32)
    path = yolov5_model(tmp_path / "y5.onnx", anchors, objectness=[0.8, 0.2])
    detector = create(model_path=path, labels=LABELS, format="yolov5", letterbox=False)
    red, blue = detect_checked(detector, [_frame(RED), _frame(BLUE)])
    # channel means are exactly 1 and 0 without padding; anchor 1's 0.2 is under threshold
    np.testing.assert_allclose(red.xyxy, [[110, 270 * 180 / 640, 210, 370 * 180 / 640]],
                               atol=1e-3)
    np.testing.assert_allclose(red.confidence, [0.8], atol=1e-5)
    assert red.class_id.tolist() == [0] and blue.class_id.tolist() == [2]


def test_ssd_with_class_offset_and_fixed_batch(tmp_path):
    detector = create(model_path=ssd_model(tmp_path / "ssd.onnx"), labels=LABELS,
                      format="ssd", input_size=(300, 300), letterbox=False, class_offset=1)
    red, blue, black = detect_checked(detector, [_frame(RED), _frame(BLUE), _frame(BLACK)])
    np.testing.assert_allclose(red.xyxy, [[80, 90, 160, 180]], atol=1e-3)
    np.testing.assert_allclose(red.confidence, [1.0], atol=1e-5)
    np.testing.assert_allclose(blue.xyxy, [[160, 0, 320, 90]], atol=1e-3)
    assert red.class_id.tolist() == [0] and blue.class_id.tolist() == [2] and len(black) == 0
    assert detector._batched is False
    bad = create(model_path=tmp_path / "ssd.onnx", labels=LABELS, format="ssd",
                 input_size=(300, 300))
    with pytest.raises(ValueError, match=r"ssd output: class id 3 does not index the 3 labels"):
        bad.detect([_frame(BLUE)])


def test_labels_from_a_file_and_through_the_registry(yolov8, tmp_path):
    names = tmp_path / "labels.txt"
    names.write_text("red\n\n  green \nblue\n\n")
    assert "onnx" in registry.available("detector")
    detector = registry.create("detector", "onnx", model_path=str(yolov8), labels=str(names))
    assert detector.spec.labels == ("red", "green", "blue")
    assert detector.spec.input_size == (640, 640)
    assert [b.class_id.tolist() for b in detect_checked(detector, [_frame(GREEN)])] == [[1, 1]]


@pytest.mark.parametrize("options, message", [
    ({"model_path": "missing.onnx"}, r"model_path: no such file '.*missing.onnx'"),
    ({"labels": []}, r"labels: expected at least one label, got none"),
    ({"labels": ["a", "b", "a"]}, r"labels: expected unique labels, got duplicates \['a'\]"),
    ({"labels": "nope.txt"}, r"labels file 'nope.txt': no such file"),
    ({"format": "yolov7"}, r"format: expected one of yolov8, yolov5, ssd, end2end, detr, "
                           r"centernet, gfl, got 'yolov7'"),
    ({"layout": "chw"}, r"layout: expected nchw or nhwc, got 'chw'"),
    ({"detr_scores": "relu"}, r"detr_scores: expected one of sigmoid, softmax, none"),
    ({"runtime": "tensorrt"}, r"runtime: expected auto, onnxruntime, opencv, got 'tensorrt'"),
    ({"outputs": ["nope"]}, r"outputs: \['nope'\] not among the model's outputs \['output0'\]"),
    ({"input_size": (0, 640)}, r"input_size: expected \(width, height\) > 0"),
])
def test_bad_options_are_value_errors_naming_the_option(yolov8, options, message):
    with pytest.raises(ValueError, match=message):
        create(**{"model_path": yolov8, "labels": LABELS, **options})


def test_empty_labels_file_and_unloadable_model(yolov8, tmp_path):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n \n")
    with pytest.raises(ValueError, match=r"labels file '.*blank.txt': expected at least one"):
        create(model_path=yolov8, labels=blank)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"model_path: (OpenCV|onnxruntime) cannot load "
                                         r"'.*junk.onnx'"):
        create(model_path=junk, labels=LABELS)


@pytest.mark.parametrize("format, labels, message", [
    ("yolov8", LABELS + ["cyan"], r"yolov8 output: expected \(N, 4\+4, A\), got \(1, 7, 5\)"),
    ("yolov5", LABELS, r"yolov5 output: expected \(N, A, 5\+3\), got \(1, 7, 5\)"),
    ("ssd", LABELS, r"ssd output: expected \(1, 1, K, 7\), got \(1, 7, 5\)"),
    ("end2end", LABELS, r"end2end output: expected \(N, K, 6\), got \(1, 7, 5\)"),
    ("detr", LABELS, r"detr output: expected one output \(N, Q, 4\+3\)"),
    ("centernet", LABELS, r"centernet output: expected a heatmap"),
])
def test_output_shape_not_matching_the_format(yolov8, format, labels, message):
    detector = create(model_path=yolov8, labels=labels, format=format)
    with pytest.raises(ValueError, match=message):
        detector.detect([_frame(RED)])
    # in a batch the same fault is reported with one frame's message, not hidden
    with pytest.raises(ValueError, match=message):
        detector.detect([_frame(RED), _frame(BLUE)])


def test_a_model_that_loads_but_cannot_run_is_a_value_error_naming_the_file(tmp_path, runtime):
    # 3*640*640 values cannot be reshaped into rows of 7*5: OpenCV only finds out on forward,
    # onnxruntime when it loads the graph
    reshape = [helper.make_node("Reshape", ["images", "shape"], ["output0"])]
    path = _save(reshape, {"shape": np.array([1, 7, -1, 5], np.int64)}, [1, 3, 640, 640],
                 [1, 7, "A", 5], tmp_path / "broken.onnx")
    if runtime == "onnxruntime":
        with pytest.raises(ValueError, match=r"model_path: onnxruntime cannot load '.*broken.onnx'"):
            create(model_path=path, labels=LABELS)
        return
    detector = create(model_path=path, labels=LABELS)
    with pytest.raises(ValueError, match=r"model_path '.*broken.onnx': OpenCV could not run the "
                                         r"model on a blob of shape \(1, 3, 640, 640\)"):
        detector.detect([_frame(RED), _frame(BLUE)])
