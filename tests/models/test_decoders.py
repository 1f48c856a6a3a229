"""Output decoders of the ONNX backend on hand-made outputs (exact numbers), and a two-output
DETR graph through both runtimes (output order and plumbing)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.detectors._decoders import decode
from models.detectors.onnx import create

SIZE = (640, 640)


def test_end2end_rows_drop_nan_padding_and_apply_the_class_offset():
    rows = np.array([[[10, 20, 110, 220, 0.9, 1], [np.nan] * 6, [0, 0, 5, 5, 0.1, 2]]], np.float32)
    [(xyxy, score, cls)] = decode("end2end", [rows], 1, 3, SIZE, {"class_offset": 1})
    np.testing.assert_allclose(xyxy, [[10, 20, 110, 220], [0, 0, 5, 5]])
    assert score.tolist() == pytest.approx([0.9, 0.1]) and cls.tolist() == [0, 1]


def test_detr_sigmoid_logits_and_normalised_centre_boxes():
    boxes = np.array([[[0.5, 0.5, 0.25, 0.5], [0.1, 0.1, 0.1, 0.1]]], np.float32)
    logits = np.array([[[2.0, -3.0], [-4.0, -1.0]]], np.float32)
    for outputs in ([boxes, logits], [logits, boxes], [np.concatenate([boxes, logits], -1)]):
        [(xyxy, score, cls)] = decode("detr", outputs, 1, 2, SIZE, {"detr_scores": "sigmoid"})
        np.testing.assert_allclose(xyxy[0], [240, 160, 400, 480])
        assert score.tolist() == pytest.approx([1 / (1 + np.exp(-2)), 1 / (1 + np.exp(1))])
        assert cls.tolist() == [0, 1]


def test_detr_softmax_drops_the_no_object_class_and_corner_boxes():
    boxes = np.array([[[0.1, 0.2, 0.3, 0.4]]], np.float32)
    logits = np.array([[[1.0, 0.0, 3.0]]], np.float32)  # 2 classes + "no object"
    [(xyxy, score, cls)] = decode("detr", [boxes, logits], 1, 2, SIZE,
                                  {"detr_scores": "softmax", "detr_boxes": "xyxy"})
    e = np.exp([1.0, 0.0, 3.0])
    np.testing.assert_allclose(xyxy, [[64, 128, 192, 256]])
    assert score[0] == pytest.approx(e[0] / e.sum()) and cls.tolist() == [0]


def _heatmap(c=3, h=16, w=16):
    heat = np.zeros((1, c, h, w), np.float32)
    heat[0, 2, 4, 6] = 0.9   # a peak of class 2 at cell (x 6, y 4)
    heat[0, 2, 4, 7] = 0.5   # its neighbour: not a peak
    heat[0, 0, 10, 3] = 0.7  # class 0 at (3, 10)
    return heat


def test_centernet_sizes_and_offsets_on_a_grid():
    heat = _heatmap()
    wh = np.zeros((1, 2, 16, 16), np.float32)
    wh[0, :, 4, 6] = (80, 120)
    wh[0, :, 10, 3] = (40, 40)
    offset = np.full((1, 2, 16, 16), 0.25, np.float32)
    [(xyxy, score, cls)] = decode("centernet", [heat, wh, offset], 1, 3, SIZE, {})
    # stride 40: peak (6, 4) + 0.25 -> centre (250, 170)
    np.testing.assert_allclose(xyxy[:2], [[210, 110, 290, 230], [110, 390, 150, 430]])
    assert score.tolist()[:2] == pytest.approx([0.9, 0.7]) and cls.tolist()[:2] == [2, 0]
    assert 0.5 not in score.tolist()  # a neighbour of a stronger cell is no peak


def test_centernet_channels_last_with_edge_distances():
    heat = _heatmap().transpose(0, 2, 3, 1)
    ltrb = np.zeros((1, 16, 16, 4), np.float32)
    ltrb[0, 4, 6] = (10, 20, 30, 40)
    [(xyxy, score, cls)] = decode("centernet", [ltrb, heat], 1, 3, SIZE,
                                  {"centernet_boxes": "ltrb", "centernet_top_k": 1})
    np.testing.assert_allclose(xyxy, [[260 - 10, 180 - 20, 260 + 30, 180 + 40]])
    assert cls.tolist() == [2] and len(score) == 1


def test_a_layout_that_does_not_fit_names_what_was_expected():
    with pytest.raises(ValueError, match=r"centernet output: expected a box map of 2 channels"):
        decode("centernet", [_heatmap()], 1, 3, SIZE, {})
    with pytest.raises(ValueError, match=r"detr output: expected boxes \(N, Q, 4\) and logits"):
        decode("detr", [np.zeros((1, 5, 4)), np.zeros((1, 6, 3))], 1, 3, SIZE, {})


def _two_output_detr(path):
    """boxes (N, 2, 4) constant; logits (N, 2, 3): class c's logit = 8 x channel c's mean - 4."""
    mean = [helper.make_node("ReduceMean", ["images"], ["m4"], axes=[2, 3], keepdims=1),
            helper.make_node("Reshape", ["m4", "shape"], ["m"]),            # (N, 1, 3)
            helper.make_node("Mul", ["m", "eight"], ["m8"]),
            helper.make_node("Sub", ["m8", "four"], ["l1"]),
            helper.make_node("Mul", ["l1", "ones"], ["logits"]),            # (N, 2, 3)
            helper.make_node("ReduceMean", ["m"], ["m1"], axes=[2], keepdims=1),
            helper.make_node("Mul", ["m1", "zero"], ["z"]),
            helper.make_node("Add", ["anchors", "z"], ["boxes"])]
    inits = {"shape": np.array([0, 1, 3], np.int64), "eight": np.float32(8),
             "four": np.float32(4), "ones": np.ones((1, 2, 1), np.float32),
             "zero": np.zeros(1, np.float32),
             "anchors": np.array([[[0.5, 0.5, 0.5, 0.25], [0.2, 0.2, 0.1, 0.1]]], np.float32)}
    graph = helper.make_graph(
        mean, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2, 3]),
         helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 2, 4])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    import onnx

    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("runtime", ["onnxruntime", "opencv"])
def test_a_two_output_detr_graph_on_both_runtimes(tmp_path, runtime):
    path = _two_output_detr(tmp_path / "detr.onnx")
    detector = create(model_path=path, labels=["red", "green", "blue"], format="detr",
                      input_size=(64, 64), letterbox=False, runtime=runtime)
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[..., 1] = 255  # green: its logit is 4, the others -4
    red_frame = np.zeros((100, 200, 3), np.uint8)
    red_frame[..., 0] = 255
    green, red = detector.detect([frame, red_frame])
    np.testing.assert_allclose(green.xyxy, [[50, 37.5, 150, 62.5], [30, 15, 50, 25]], atol=1e-3)
    assert green.class_id.tolist() == [1, 1] and red.class_id.tolist() == [0, 0]
    assert green.confidence[0] == pytest.approx(1 / (1 + np.exp(-4)), abs=1e-4)
