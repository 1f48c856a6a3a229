"""The shipped detector, offline, on the bundled street and car-phone samples."""

from __future__ import annotations

import hashlib

import av
import numpy as np
import pytest

from models import registry
from models.detectors import nanodet
from tasks.annotations.boxmath import iou_matrix
from tasks.detect.driver import detect_checked


def _frames(path, wanted):
    with av.open(str(path)) as container:
        return {i: f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0))
                if i in wanted}


def test_the_weights_are_the_converted_file():
    digest = hashlib.sha256(nanodet.MODEL.read_bytes()).hexdigest()
    assert digest == "598d76d17ab9d6bde7d6748b5b4de0cead6329b77e124db1acfe89c79ec46119"
    assert nanodet.LABELS.read_text().splitlines()[:3] == ["person", "bicycle", "car"]


def test_the_man_filling_the_frame_is_found(samples):
    detector = registry.create("detector", "nanodet")
    frames = _frames(samples["carphone_pristine"], set(range(0, 120, 20)))
    for boxes in detect_checked(detector, list(frames.values())):
        people = boxes[boxes.class_id == 0]
        assert len(people) >= 1 and people.confidence.max() >= 0.6
        x1, y1, x2, y2 = people.xyxy[people.confidence.argmax()]
        assert (x2 - x1) * (y2 - y1) > 0.4 * 176 * 144  # he fills the frame


def test_street_people_and_cars_on_both_runtimes(samples):
    frames = _frames(samples["bikes"], {30, 46, 140})
    found = {}
    for runtime in ("onnxruntime", "opencv"):
        detector = registry.create("detector", "nanodet", runtime=runtime)
        found[runtime] = detect_checked(detector, [frames[30], frames[46], frames[140]])
    man, street, cars = found["onnxruntime"]
    labels = nanodet.LABELS.read_text().splitlines()
    assert labels[man.class_id[man.confidence.argmax()]] == "person"  # the man at frame 30
    assert man.confidence.max() >= 0.6
    assert (cars.class_id == labels.index("car")).sum() >= 2           # parked cars
    for a, b in zip(found["onnxruntime"], found["opencv"]):
        assert len(a) == len(b) and a.class_id.tolist() == b.class_id.tolist()
        assert np.diag(iou_matrix(a.xyxy, b.xyxy)).min() > 0.98


def test_cuda_where_there_is_none_is_refused():
    with pytest.raises(ValueError, match="device cuda: onnxruntime has no CUDA provider"):
        registry.create("detector", "nanodet", device="cuda")
