import numpy as np
import pytest

from models.boxes import Boxes
from models.contracts import DetectorSpec, TrackerSpec


def test_shapes_and_dtypes_are_validated_with_clear_messages():
    with pytest.raises(ValueError, match=r"xyxy: expected shape \(n, 4\), got \(3, 5\)"):
        Boxes(np.zeros((3, 5), np.float32), np.zeros(3, np.float32), np.zeros(3, np.int32))
    with pytest.raises(ValueError, match=r"confidence: expected shape \(2\), got \(3,\)"):
        Boxes(np.zeros((2, 4), np.float32), np.zeros(3, np.float32), np.zeros(2, np.int32))
    with pytest.raises(ValueError, match="class_id: expected dtype int32, got int64"):
        Boxes(np.zeros((1, 4), np.float32), np.zeros(1, np.float32), np.zeros(1, np.int64))


def test_mask_index_merge_scale():
    boxes = Boxes.of([[0, 0, 10, 10], [5, 5, 20, 20]], [0.9, 0.2], [0, 1])
    strong = boxes[boxes.confidence > 0.5]
    assert len(strong) == 1 and strong.class_id.tolist() == [0]
    assert len(boxes) == 2  # the original is untouched
    merged = Boxes.merge([boxes, strong, Boxes.empty()])
    assert len(merged) == 3 and merged.xyxy.dtype == np.float32
    assert boxes.scaled(2, 0.5).xyxy[1].tolist() == [10, 2.5, 40, 10]
    assert len(Boxes.merge([])) == 0


def test_specs_validate_themselves():
    with pytest.raises(ValueError, match="unique"):
        DetectorSpec(name="x", labels=("a", "a"))
    with pytest.raises(ValueError, match="non-empty"):
        DetectorSpec(name="x", labels=())
    with pytest.raises(ValueError, match="input_size"):
        DetectorSpec(name="x", labels=("a",), input_size=(0, 10))
    with pytest.raises(ValueError, match="name"):
        TrackerSpec(name="")
