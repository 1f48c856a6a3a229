"""Any detector exported to ONNX, on onnxruntime (CPU or CUDA) or OpenCV's DNN module.

Options (the recipe's keys, all passed to ``create``):

- ``model_path``: the ``.onnx`` file (relative to the recipe).
- ``labels``: class names in the model's class order, or a text file with one per line.
- ``format``: the output layout: ``yolov8``, ``yolov5``, ``ssd``, ``end2end`` (x1, y1, x2,
  y2, score, class rows), ``detr`` (RT-DETR, RF-DETR, D-FINE, DETR), ``centernet`` or
  ``gfl`` (NanoDet, PicoDet: our shipped model); see
  `models/detectors/_decoders.py` for each one's shapes. Per-format options:
  ``detr_scores`` (sigmoid | softmax | none), ``detr_boxes`` (cxcywh | xyxy),
  ``centernet_boxes`` (wh | ltrb), ``centernet_top_k``, ``gfl_strides``, ``gfl_offset``.
- ``input_size``: (width, height) the model takes; ``layout``: ``nchw`` or ``nhwc``.
- ``score_threshold``; ``nms_iou``: class-wise NMS drops the weaker of two same-class boxes
  overlapping more.
- ``letterbox``: keep the aspect ratio and pad, centred, with gray ``pad`` (114: how
  ultralytics trains; NanoDet pads with 0); False stretches the frame to ``input_size``.
- ``normalize`` (multiplied after ``mean`` is subtracted), ``mean`` (per channel, 0-255
  units, model channel order), ``rgb`` (False for BGR models).
- ``class_offset``: subtracted from the model's class ids (1 when id 0 is background).
- ``runtime``: ``auto`` (onnxruntime where installed, else OpenCV), ``onnxruntime`` or
  ``opencv``; ``threads``: intra-op threads (onnxruntime); ``outputs``: output names to
  read, in the order the format wants (default: the graph's order).
- ``device`` (from ``detect.device``): ``auto`` (CUDA where onnxruntime has it), ``cpu``,
  ``cuda``.

Returned boxes are in pixels of each given frame (letterbox scale and padding undone), clipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from models.boxes import Boxes
from models.contracts import DetectorSpec
from models.detectors._decoders import FORMATS, decode
from models.detectors._runtimes import open_runtime

PAD_GRAY = 114  # ultralytics letterboxes with this gray; models trained on it expect it
_FORMAT_OPTIONS = {"detr_scores": ("sigmoid", "softmax", "none"), "detr_boxes": ("cxcywh", "xyxy"),
                   "centernet_boxes": ("wh", "ltrb")}


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
                 mean=(0, 0, 0), rgb=True, class_offset=0, layout="nchw", runtime="auto",
                 device="auto", outputs=None, threads=None, detr_scores="sigmoid",
                 detr_boxes="cxcywh", centernet_boxes="wh", centernet_top_k=100,
                 gfl_strides=(8, 16, 32), gfl_offset=0.5, pad=PAD_GRAY):
        if format not in FORMATS:
            raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {format!r}")
        if len(input_size) != 2 or min(input_size) < 1:
            raise ValueError(f"input_size: expected (width, height) > 0, got {input_size!r}")
        if not (0 <= score_threshold <= 1 and 0 <= nms_iou <= 1):
            raise ValueError(f"score_threshold and nms_iou: expected values in [0, 1], got "
                             f"{score_threshold} and {nms_iou}")
        if layout not in ("nchw", "nhwc"):
            raise ValueError(f"layout: expected nchw or nhwc, got {layout!r}")
        self._decode_options = {"class_offset": int(class_offset), "detr_scores": detr_scores,
                                "detr_boxes": detr_boxes, "centernet_boxes": centernet_boxes,
                                "centernet_top_k": int(centernet_top_k),
                                "gfl_strides": tuple(gfl_strides), "gfl_offset": float(gfl_offset),
                                "gfl_min_score": float(score_threshold)}
        for key, allowed in _FORMAT_OPTIONS.items():
            if self._decode_options[key] not in allowed:
                raise ValueError(f"{key}: expected one of {', '.join(allowed)}, got "
                                 f"{self._decode_options[key]!r}")
        path = os.fspath(model_path)
        if not Path(path).is_file():
            raise ValueError(f"model_path: no such file {path!r}")
        self._runtime = open_runtime(runtime, path, device, outputs, threads)
        self._path, self._size = path, (int(input_size[0]), int(input_size[1]))
        self.spec = DetectorSpec(name=f"onnx:{Path(path).stem}", labels=read_labels(labels),
                                 input_size=self._size)
        self._format, self._threshold, self._iou = format, float(score_threshold), float(nms_iou)
        self._letterbox, self._normalize, self._mean = letterbox, float(normalize), tuple(mean)
        self._swap_rb, self._nhwc, self._pad = not rgb, layout == "nhwc", int(pad)
        # Exports often fix the batch at 1; the first batch that fails proves it (or the
        # runtime says so), and after that frames go one at a time.
        self._batched = self._runtime.fixed_batch in (None, -1) or self._runtime.fixed_batch > 1

    @property
    def runtime(self) -> str:
        return f"{self._runtime.name} ({self._runtime.device})"

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
        if self._nhwc:
            blob = np.ascontiguousarray(blob.transpose(0, 2, 3, 1))
        try:
            outputs = self._runtime.run(blob)
        except ValueError as e:
            raise ValueError(f"model_path {self._path!r}: {e}") from e
        parsed = decode(self._format, outputs, len(frames), len(self.spec.labels), self._size,
                        self._decode_options)
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
                                   W - nw - left, cv2.BORDER_CONSTANT, value=(self._pad,) * 3)
        return image, (nw / w, nh / h, left, top)  # the rounded size is the true scale

    def _boxes(self, xyxy, score, cls, transform, frame_shape) -> Boxes:
        xyxy, score, cls = (np.asarray(xyxy, np.float32).reshape(-1, 4),
                            np.asarray(score, np.float32).reshape(-1),
                            np.asarray(cls, np.int64).reshape(-1))
        keep = (score >= self._threshold) & np.isfinite(xyxy).all(1)  # NaN scores fail >= too
        xyxy, score, cls = xyxy[keep], np.clip(score[keep], 0, 1), cls[keep]
        bad = (cls < 0) | (cls >= len(self.spec.labels))
        if bad.any():
            raise ValueError(f"{self._format} output: class id {int(cls[bad][0])} does not index "
                             f"the {len(self.spec.labels)} labels (class_offset="
                             f"{self._decode_options['class_offset']})")
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
