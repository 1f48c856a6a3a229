"""What an exported detector's outputs mean: one decoder per output layout.

Each decoder takes the model's outputs for a batch of N frames and returns, per frame,
``(xyxy in input pixels (k, 4), score (k,), class id (k,))``, before thresholds and NMS
(the ONNX backend applies those). A layout that does not match raises ``ValueError``
saying what was expected and what came, so a wrong ``format`` fails on the first batch.

Layouts (C = number of labels):

- ``yolov8``: one output (N, 4+C, A): cx, cy, w, h in input pixels, then C class scores
  (ultralytics YOLOv8 / YOLO11 exports).
- ``yolov5``: one output (N, A, 5+C): cx, cy, w, h, objectness, C class scores.
- ``ssd``: one output (1, 1, K, 7): image id, class id, score, x1, y1, x2, y2 as fractions
  of the input (OpenCV / TF ``detection_out``).
- ``end2end``: one output (N, K, 6): x1, y1, x2, y2, score, class id in input pixels (exports
  with NMS inside: YOLOv10, ultralytics ``nms=True``, CenterNet graphs that decode inside).
- ``detr``: DETR-family set predictions (RT-DETR, RF-DETR, D-FINE, DETR): boxes (N, Q, 4)
  and class logits (N, Q, C or C+1), as two outputs (either order; with 4 classes, boxes
  first) or one (N, Q, 4+C). Boxes are cx, cy,
  w, h as fractions of the input (``detr_boxes: xyxy`` for corners, still fractions).
  ``detr_scores``: ``sigmoid`` (RT-DETR, RF-DETR, D-FINE logits), ``softmax`` (original
  DETR: the last class is "no object") or ``none`` (already probabilities).
- ``centernet``: CenterNet-style heads on a grid of stride S: a class heatmap (N, C, H, W)
  or (N, H, W, C), and either sizes (w, h) with an optional sub-cell offset (Objects as
  Points) or distances to the four edges (``centernet_boxes: ltrb``), in input pixels.
  Peaks are local maxima of the heatmap (3x3), the top ``centernet_top_k`` kept.
- ``gfl``: generalised-focal-loss heads (NanoDet, our shipped model; NanoDet-Plus, PicoDet):
  one output (N, A, C + 4 x (R+1)): per grid point of every stride in turn (``gfl_strides``,
  row-major), C class probabilities, then for each side (left, top, right, bottom) R+1
  logits over distances 0..R strides; the distance is their softmax's expected value.
  Points sit at (x + ``gfl_offset``) x stride: 0.5 for NanoDet (v0.x), 0 for NanoDet-Plus.
"""

from __future__ import annotations

import numpy as np

FORMATS = ("yolov8", "yolov5", "ssd", "end2end", "detr", "centernet", "gfl")

Decoded = list[tuple[np.ndarray, np.ndarray, np.ndarray]]


def decode(fmt: str, outputs: list[np.ndarray], n: int, classes: int, input_size: tuple[int, int],
           options: dict) -> Decoded:
    return _DECODERS[fmt](outputs, n, classes, input_size, options)


def _expect(ok: bool, fmt: str, want: str, outputs: list[np.ndarray], n: int) -> None:
    if not ok:
        shapes = ", ".join(str(tuple(o.shape)) for o in outputs)
        raise ValueError(f"{fmt} output: expected {want}, got {shapes} (N = {n} frames)")


def _yolov8(outputs, n, c, size, options) -> Decoded:
    out = outputs[0]
    _expect(out.ndim == 3 and out.shape[:2] == (n, 4 + c), "yolov8", f"(N, 4+{c}, A)", outputs, n)
    return [_centre_boxes(p.T[:, :4], p.T[:, 4:]) for p in out]


def _yolov5(outputs, n, c, size, options) -> Decoded:
    out = outputs[0]
    _expect(out.ndim == 3 and out.shape[0] == n and out.shape[2] == 5 + c, "yolov5",
            f"(N, A, 5+{c})", outputs, n)
    return [_centre_boxes(p[:, :4], p[:, 4:5] * p[:, 5:]) for p in out]


def _centre_boxes(cxcywh: np.ndarray, scores: np.ndarray):
    cls = scores.argmax(1)
    xy, half = cxcywh[:, :2], cxcywh[:, 2:4] / 2
    return np.hstack([xy - half, xy + half]), scores.max(1), cls


def _ssd(outputs, n, c, size, options) -> Decoded:
    out = outputs[0]
    _expect(out.ndim == 4 and out.shape[:2] == (1, 1) and out.shape[3] == 7, "ssd",
            "(1, 1, K, 7)", outputs, n)
    rows = out.reshape(-1, 7)
    scale = np.array(size * 2, np.float32)
    offset = int(options.get("class_offset", 0))
    return [(r[:, 3:7] * scale, r[:, 2], r[:, 1].astype(np.int64) - offset)
            for r in (rows[rows[:, 0] == i] for i in range(n))]


def _end2end(outputs, n, c, size, options) -> Decoded:
    out = outputs[0]
    _expect(out.ndim == 3 and out.shape[0] == n and out.shape[2] == 6, "end2end", "(N, K, 6)",
            outputs, n)
    offset = int(options.get("class_offset", 0))
    decoded = []
    for p in out:
        finite = np.isfinite(p).all(1)  # padding rows of some exports are NaN
        p = p[finite]
        decoded.append((p[:, :4], p[:, 4], np.round(p[:, 5]).astype(np.int64) - offset))
    return decoded


def _detr(outputs, n, c, size, options) -> Decoded:
    activation = options.get("detr_scores", "sigmoid")
    if len(outputs) == 1:
        out = outputs[0]
        _expect(out.ndim == 3 and out.shape[0] == n and out.shape[2] >= 4 + c, "detr",
                f"one output (N, Q, 4+{c}) or boxes (N, Q, 4) and logits (N, Q, {c}[+1])",
                outputs, n)
        boxes, logits = out[..., :4], out[..., 4:]
    else:
        # The boxes are the output 4 wide; when both are (4 classes), the first given is
        # (name them in ``outputs`` to be sure).
        first, second = outputs[:2]
        boxes, logits = (second, first) if second.shape[-1] == 4 != first.shape[-1] else (first, second)
        _expect(boxes.ndim == 3 and boxes.shape[0] == n and boxes.shape[2] == 4
                and logits.shape[:2] == boxes.shape[:2] and logits.shape[2] in (c, c + 1),
                "detr", f"boxes (N, Q, 4) and logits (N, Q, {c}) or (N, Q, {c + 1})", outputs, n)
    if activation == "softmax":
        e = np.exp(logits - logits.max(-1, keepdims=True))
        probs = (e / e.sum(-1, keepdims=True))[..., :c]  # the last class is "no object"
    elif activation == "sigmoid":
        probs = 1 / (1 + np.exp(-logits[..., :c]))
    else:
        probs = logits[..., :c]
    w, h = size
    scale = np.array([w, h, w, h], np.float32)
    decoded = []
    for b, p in zip(boxes, probs):
        if options.get("detr_boxes", "cxcywh") == "xyxy":
            xyxy = b * scale
        else:
            xyxy = np.hstack([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2]) * scale
        decoded.append((xyxy, p.max(1), p.argmax(1)))
    return decoded


def _centernet(outputs, n, c, size, options) -> Decoded:
    heat = next((o for o in outputs if o.ndim == 4 and c in (o.shape[1], o.shape[3])), None)
    _expect(heat is not None and heat.shape[0] == n, "centernet",
            f"a heatmap (N, {c}, H, W) or (N, H, W, {c}) and box maps on the same grid", outputs, n)
    channels_last = heat.shape[3] == c and heat.shape[1] != c
    if channels_last:
        heat = heat.transpose(0, 3, 1, 2)
    grid = heat.shape[2:]
    maps = [(o.transpose(0, 3, 1, 2) if channels_last else o) for o in outputs
            if o is not heat and o.ndim == 4]
    maps = [m for m in maps if m.shape[2:] == grid]
    ltrb = options.get("centernet_boxes", "wh") == "ltrb"
    sizes = next((m for m in maps if m.shape[1] == (4 if ltrb else 2)), None)
    _expect(sizes is not None, "centernet",
            f"a box map of {4 if ltrb else 2} channels on the heatmap's {grid} grid", outputs, n)
    offsets = next((m for m in maps if m.shape[1] == 2 and m is not sizes), None)
    stride = (size[0] / grid[1], size[1] / grid[0])
    top_k = int(options.get("centernet_top_k", 100))
    decoded = []
    for i in range(n):
        peaks = _peaks(heat[i])
        flat = np.flatnonzero(peaks)
        order = flat[np.argsort(-peaks.reshape(-1)[flat], kind="stable")][:top_k]
        cls, ys, xs = np.unravel_index(order, peaks.shape)
        score = heat[i][cls, ys, xs]
        if ltrb:
            cx, cy = (xs + 0.5) * stride[0], (ys + 0.5) * stride[1]
            l, t, r, b = (sizes[i][k, ys, xs] for k in range(4))
            xyxy = np.column_stack([cx - l, cy - t, cx + r, cy + b])
        else:
            dx, dy = ((offsets[i][0, ys, xs], offsets[i][1, ys, xs]) if offsets is not None
                      else (0.5, 0.5))
            cx, cy = (xs + dx) * stride[0], (ys + dy) * stride[1]
            bw, bh = sizes[i][0, ys, xs], sizes[i][1, ys, xs]
            xyxy = np.column_stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
        decoded.append((xyxy.astype(np.float32), score.astype(np.float32), cls.astype(np.int64)))
    return decoded


def _peaks(heat: np.ndarray) -> np.ndarray:
    """The heatmap where a cell is the maximum of its 3x3 neighbourhood, else 0."""
    padded = np.pad(heat, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    h, w = heat.shape[1:]
    best = np.max([padded[:, y:y + h, x:x + w] for y in range(3) for x in range(3)], axis=0)
    return np.where(heat >= best, heat, 0.0)


def _gfl(outputs, n, c, size, options) -> Decoded:
    out = outputs[0]
    strides = [int(v) for v in options.get("gfl_strides", (8, 16, 32))]
    offset = float(options.get("gfl_offset", 0.5))
    w, h = size
    grids = [(-(-w // s), -(-h // s), s) for s in strides]
    points = sum(gw * gh for gw, gh, _ in grids)
    bins4 = out.shape[2] - c if out.ndim == 3 else 0
    _expect(out.ndim == 3 and out.shape[0] == n and out.shape[1] == points and bins4 > 0
            and bins4 % 4 == 0, "gfl", f"(N, {points}, {c} + 4 x bins) for strides {strides} "
            f"on a {w}x{h} input", outputs, n)
    xy, step = [], []
    for gw, gh, s in grids:
        yy, xx = np.mgrid[0:gh, 0:gw]
        xy.append((np.column_stack([xx.ravel(), yy.ravel()]) + offset) * s)
        step.append(np.full(gw * gh, s, np.float32))
    xy, step = np.concatenate(xy).astype(np.float32), np.concatenate(step)
    bins = np.arange(bins4 // 4, dtype=np.float32)
    decoded = []
    for p in out:
        scores = p[:, :c]
        best = scores.max(1)
        # Only points that could pass any threshold are decoded (most of 3,549 are empty).
        keep = best >= float(options.get("gfl_min_score", 0.05))
        logits = p[keep, c:].reshape(-1, 4, len(bins))
        e = np.exp(logits - logits.max(2, keepdims=True))
        distance = (e / e.sum(2, keepdims=True) * bins).sum(2) * step[keep, None]
        centre = xy[keep]
        xyxy = np.hstack([centre - distance[:, :2], centre + distance[:, 2:]])
        decoded.append((xyxy, best[keep], scores[keep].argmax(1)))
    return decoded


_DECODERS = {"yolov8": _yolov8, "yolov5": _yolov5, "ssd": _ssd, "end2end": _end2end,
             "detr": _detr, "centernet": _centernet, "gfl": _gfl}
