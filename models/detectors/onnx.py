"""Any detector exported to ONNX, run by OpenCV's DNN module (no torch, no onnxruntime).

Options (the recipe's keys, all passed to ``create``):

- ``model_path``: the ``.onnx`` file.
- ``labels``: class names in the model's class order, or a path to a text file with one
  name per line (blank lines ignored). Non-empty and unique.
- ``format``: how to read the model's first output (A anchors, C = len(labels)):
  ``"yolov8"`` (ultralytics v8/v11 export) (N, 4+C, A): cx, cy, w, h in input pixels, then
  C class scores; ``"yolov5"`` (N, A, 5+C): cx, cy, w, h, objectness, C class scores, the
  score being objectness x class score; ``"ssd"`` (OpenCV/TF ``detection_out``)
  (1, 1, K, 7): image_id, class_id, score, x1, y1, x2, y2 as fractions of the input.
- ``input_size``: (width, height) the model takes.
- ``score_threshold``: boxes scoring below it are dropped.
- ``nms_iou``: class-wise NMS drops the lower-scoring of two same-class boxes overlapping more.
- ``letterbox``: keep the aspect ratio and pad with gray 114 (how ultralytics trains);
  False stretches the frame to ``input_size``.
- ``normalize``: pixel values are multiplied by it after ``mean`` is subtracted.
- ``mean``: per channel, in 0-255 units and in the model's channel order.
- ``rgb``: the model takes RGB (ultralytics); False for BGR models (most Caffe/TF SSDs).
- ``class_offset``: ssd only, subtracted from the model's class ids (1 for SSDs whose id 0
  is background when ``labels`` leaves background out).

Returned boxes are in pixels of each given frame (letterbox scale and padding undone), clipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from models.boxes import Boxes
from models.contracts import DetectorSpec

FORMATS = ("yolov8", "yolov5", "ssd")
PAD_GRAY = 114  # ultralytics letterboxes with this gray; models trained on it expect it


def read_labels(labels) -> tuple[str, ...]:
    if isinstance(labels, (str, os.PathLike)):
        where = f"labels file {os.fspath(labels)!r}"
        if not Path(labels).is_file():
            raise ValueError(f"{where}: no such file")
        names = [line.strip() for line in Path(labels).read_text().splitlines() if line.strip()]
    else:
        where, names = "labels", [str(name) for name in labels]
    if not names:
        raise ValueError(f"{where}: expected at least one label, got none")
    dupes = sorted({name for name in names if names.count(name) > 1})
    if dupes:
        raise ValueError(f"{where}: expected unique labels, got duplicates {dupes}")
    return tuple(names)


class OnnxDetector:
    def __init__(self, model_path, labels, format="yolov8", input_size=(640, 640),
                 score_threshold=0.25, nms_iou=0.45, letterbox=True, normalize=1 / 255,
                 mean=(0, 0, 0), rgb=True, class_offset=0):
        if format not in FORMATS:
            raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {format!r}")
        if len(input_size) != 2 or min(input_size) < 1:
            raise ValueError(f"input_size: expected (width, height) > 0, got {input_size!r}")
        if not (0 <= score_threshold <= 1 and 0 <= nms_iou <= 1):
            raise ValueError(f"score_threshold and nms_iou: expected values in [0, 1], got "
                             f"{score_threshold} and {nms_iou}")
        path = os.fspath(model_path)
        if not Path(path).is_file():
            raise ValueError(f"model_path: no such file {path!r}")
        try:
            self._net = cv2.dnn.readNetFromONNX(path)
        except cv2.error as e:
            raise ValueError(f"model_path: OpenCV cannot load {path!r} as ONNX: {e}") from e
        self._path, self._size = path, (int(input_size[0]), int(input_size[1]))
        self.spec = DetectorSpec(name=f"onnx:{Path(path).stem}", labels=read_labels(labels),
                                 input_size=self._size)
        self._format, self._threshold, self._iou = format, float(score_threshold), float(nms_iou)
        self._letterbox, self._normalize, self._mean = letterbox, float(normalize), tuple(mean)
        self._swap_rb, self._offset = not rgb, int(class_offset)
        # Exports often fix the batch at 1; the first batch that fails proves it, and after
        # that frames go one at a time without paying for a failing forward again.
        self._batched = True

    def detect(self, frames) -> list[Boxes]:
        frames = list(frames)
        if self._batched and len(frames) > 1:
            try:
                return self._run(frames)
            except ValueError:
                self._batched = False  # a real fault reappears below, with one frame's message
        return [self._run([frame])[0] for frame in frames]

    def _run(self, frames) -> list[Boxes]:
        fitted = [self._fit(frame) for frame in frames]
        blob = cv2.dnn.blobFromImages([image for image, _ in fitted], self._normalize,
                                      self._size, self._mean, self._swap_rb, False)
        self._net.setInput(blob)
        try:
            out = np.asarray(self._net.forward(), np.float32)
        except cv2.error as e:  # loads fine, fails on data: wrong input layout or batch
            raise ValueError(f"model_path: OpenCV could not run {self._path!r} on a blob of "
                             f"shape {blob.shape}: {e}") from e
        parsed = self._parse(out, len(frames))
        return [self._boxes(*p, transform, frame.shape)
                for p, (_, transform), frame in zip(parsed, fitted, frames)]

    def _fit(self, frame):
        """The frame as the model takes it, and (sx, sy, dx, dy) with input = frame * s + d."""
        h, w = frame.shape[:2]
        W, H = self._size
        if not self._letterbox:
            return cv2.resize(frame, (W, H)), (W / w, H / h, 0, 0)
        r = min(W / w, H / h)
        nw, nh = max(1, round(w * r)), max(1, round(h * r))
        left, top = (W - nw) // 2, (H - nh) // 2
        image = cv2.copyMakeBorder(cv2.resize(frame, (nw, nh)), top, H - nh - top, left,
                                   W - nw - left, cv2.BORDER_CONSTANT, value=(PAD_GRAY,) * 3)
        return image, (nw / w, nh / h, left, top)  # the rounded size is the true scale

    def _parse(self, out, n):
        """Per frame: (xyxy in input pixels, score, class id)."""
        c, fmt, shape = len(self.spec.labels), self._format, tuple(out.shape)
        want, ok = {
            "yolov8": (f"(N, 4+{c}, A)", out.ndim == 3 and shape[:2] == (n, 4 + c)),
            "yolov5": (f"(N, A, 5+{c})", out.ndim == 3 and shape[0] == n and shape[2] == 5 + c),
            "ssd": ("(1, 1, K, 7)", out.ndim == 4 and shape[:2] == (1, 1) and shape[3] == 7),
        }[fmt]
        if not ok:
            raise ValueError(f"{fmt} output: expected {want} for {c} labels, got {shape} "
                             f"(N = {n} frames)")
        if fmt == "ssd":
            rows = out.reshape(-1, 7)
            size = np.array(self._size * 2, np.float32)
            return [(r[:, 3:7] * size, r[:, 2], r[:, 1].astype(np.int64) - self._offset)
                    for r in (rows[rows[:, 0] == i] for i in range(n))]
        parsed = []
        for p in out:
            p = p.T if fmt == "yolov8" else p  # rows = anchors either way
            scores = p[:, 4:] if fmt == "yolov8" else p[:, 4:5] * p[:, 5:]
            cls = scores.argmax(1)
            xy, half = p[:, :2], p[:, 2:4] / 2
            parsed.append((np.hstack([xy - half, xy + half]), scores.max(1), cls))
        return parsed

    def _boxes(self, xyxy, score, cls, transform, frame_shape) -> Boxes:
        keep = (score >= self._threshold) & np.isfinite(xyxy).all(1)  # NaN scores fail >= too
        xyxy, score, cls = xyxy[keep], np.clip(score[keep], 0, 1), cls[keep]
        bad = (cls < 0) | (cls >= len(self.spec.labels))
        if bad.any():
            raise ValueError(f"{self._format} output: class id {int(cls[bad][0])} does not index "
                             f"the {len(self.spec.labels)} labels (class_offset={self._offset})")
        sx, sy, dx, dy = transform
        h, w = frame_shape[:2]
        xyxy = np.clip((xyxy - [dx, dy, dx, dy]) / [sx, sy, sx, sy], 0, [w, h, w, h])
        # A box lying wholly in the letterbox padding clips to nothing: no object to keep.
        keep = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
        xyxy, score, cls = xyxy[keep], score[keep], cls[keep]
        xywh = np.hstack([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]]).astype(np.float64)
        idx = np.asarray(cv2.dnn.NMSBoxesBatched(xywh, score.astype(np.float32),
                                                  cls.astype(np.int32), self._threshold,
                                                  self._iou), np.int64).reshape(-1)
        return Boxes.of(xyxy[idx], score[idx], cls[idx])


create = OnnxDetector
