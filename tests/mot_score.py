"""MOTA and IDF1 of a tracks table against a scene's ground truth, with motmetrics.

Distractors are handled as TrackEval does for MOT17: per frame, tracker boxes are matched
to every ground-truth box (IoU >= 0.5, Hungarian); a tracker box matched to a distractor
(a person less than half visible) is dropped, then the distractors are. So a box on a
partly hidden person is neither a hit nor a false positive, and a miss on one is no miss.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from tasks.annotations.boxmath import iou_matrix

np.asfarray = getattr(np, "asfarray", lambda a, dtype=float: np.asarray(a, dtype=dtype))  # motmetrics on numpy 2


def frames_of(truth, predictions: dict[int, list[tuple[int, np.ndarray]]]):
    """Per frame: (gt ids, gt boxes, predicted ids, predicted boxes) with distractors out.
    ``predictions[frame]`` lists (track id, xyxy) of visible predicted boxes."""
    for f in range(truth.frames):
        gt = [(pid, truth.boxes[pid][f], float(truth.visibility[pid][f]))
              for pid in sorted(truth.boxes) if truth.visibility[pid][f] > 0]
        pred = predictions.get(f, [])
        pb = np.array([b for _, b in pred], np.float64).reshape(-1, 4)
        gb = np.array([b for _, b, _ in gt], np.float64).reshape(-1, 4)
        keep = np.ones(len(pred), bool)
        if len(pred) and len(gt):
            iou = iou_matrix(gb, pb)
            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols):
                if iou[r, c] >= 0.5 and gt[r][2] < 0.5:
                    keep[c] = False
        real = [(pid, box) for pid, box, v in gt if v >= 0.5]
        yield ([p for p, _ in real], np.array([b for _, b in real], np.float64).reshape(-1, 4),
               [pred[i][0] for i in np.flatnonzero(keep)], pb[keep])


def score(truth, predictions) -> dict[str, float]:
    """MOTA, IDF1, id switches, false positives and misses at IoU 0.5."""
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=True)
    for gt_ids, gt_boxes, ids, boxes in frames_of(truth, predictions):
        iou = iou_matrix(gt_boxes, boxes)
        acc.update(gt_ids, ids, np.where(iou >= 0.5, 1 - iou, np.nan))
    m = mm.metrics.create().compute(acc, metrics=["mota", "idf1", "num_switches",
                                                 "num_false_positives", "num_misses",
                                                 "num_objects", "num_unique_objects"], name="s")
    row = m.iloc[0]
    return {"mota": float(row["mota"]), "idf1": float(row["idf1"]),
            "switches": int(row["num_switches"]), "fp": int(row["num_false_positives"]),
            "misses": int(row["num_misses"]), "objects": int(row["num_objects"])}


def from_tracks(table) -> dict[int, list[tuple[int, np.ndarray]]]:
    """Visible rows of a tracks table, by frame."""
    out: dict[int, list] = {}
    visible = table.filter(np.logical_not(table["hidden"].to_numpy()))
    box = np.column_stack([visible[c].to_numpy() for c in ("x1", "y1", "x2", "y2")])
    for f, tid, b in zip(visible["frame"].to_pylist(), visible["track_id"].to_pylist(), box):
        out.setdefault(f, []).append((tid, b))
    return out


def noisy_detections(rows, size: tuple[int, int], seed: int, *, miss: float = 0.2,
                     jitter: float = 0.04, false_per_frame: float = 0.2, frames: int | None = None):
    """Detector-like input from ground truth ``rows`` of (frame, id, xyxy, visibility):
    each person is found with probability ``1 - miss`` (less when partly hidden, never when
    under 30% visible), its box jittered by ``jitter`` x its size, scores around 0.75
    (some below 0.5, as ByteTrack's weak stage expects); ``false_per_frame`` false boxes
    per frame on average, scoring 0.1-0.6. Returns (frames, boxes, scores) by frame."""
    rng = np.random.default_rng(seed)
    w, h = size
    out = []
    sizes = []
    last = 0
    for f, _, box, v in rows:
        box = np.asarray(box, np.float64)
        bw, bh = box[2] - box[0], box[3] - box[1]
        sizes.append((bw, bh))
        last = max(last, int(f))
        p = (1 - miss) * float(np.clip((v - 0.3) / 0.4, 0, 1))
        if rng.random() >= p:
            continue
        noisy = box + rng.normal(0, jitter, 4) * [bw, bh, bw, bh]
        out.append((int(f), noisy, float(np.clip(rng.normal(0.75, 0.12), 0.15, 0.99))))
    typical = np.median(np.array(sizes), axis=0) if sizes else np.array([30.0, 70.0])
    for f in range(frames if frames is not None else last + 1):
        for _ in range(rng.poisson(false_per_frame)):
            bw, bh = typical * rng.uniform(0.6, 1.4)
            x, y = rng.uniform(0, max(w - bw, 1)), rng.uniform(0, max(h - bh, 1))
            out.append((f, np.array([x, y, x + bw, y + bh]), float(rng.uniform(0.1, 0.6))))
    out.sort(key=lambda r: r[0])
    boxes = np.array([np.clip(b, 0, [w, h, w, h]) for _, b, _ in out]).reshape(-1, 4)
    return (np.array([f for f, _, _ in out], np.int64), boxes,
            np.array([s for _, _, s in out], np.float64))


def load_mot_gt(path) -> list[tuple[int, int, np.ndarray, float]]:
    """A MOTChallenge gt.txt as (0-based frame, id, xyxy, visibility) rows. Where the file
    has no visibility (TUD's -1), it is computed: the share of a box not covered by boxes
    whose bottom edge is lower in the frame (nearer the camera)."""
    raw = np.loadtxt(path, delimiter=",", ndmin=2)
    rows = []
    for f in np.unique(raw[:, 0]).astype(int):
        at = raw[raw[:, 0] == f]
        boxes = np.column_stack([at[:, 2], at[:, 3], at[:, 2] + at[:, 4], at[:, 3] + at[:, 5]])
        for i, r in enumerate(at):
            v = float(r[8]) if raw.shape[1] > 8 and r[8] >= 0 else _unoccluded(boxes, i)
            rows.append((int(f) - 1, int(r[1]), boxes[i], v))
    return rows


def _unoccluded(boxes: np.ndarray, i: int, step: int = 2) -> float:
    x1, y1, x2, y2 = boxes[i]
    xs, ys = np.arange(x1, x2, step), np.arange(y1, y2, step)
    if not len(xs) or not len(ys):
        return 0.0
    gx, gy = np.meshgrid(xs, ys)
    covered = np.zeros(gx.shape, bool)
    for j, (a1, b1, a2, b2) in enumerate(boxes):
        if j != i and b2 > y2:
            covered |= (gx >= a1) & (gx < a2) & (gy >= b1) & (gy < b2)
    return float(1 - covered.mean())


def write_mot(path, rows) -> None:
    """MOT result lines from (0-based frame, id, xyxy[, score]) rows."""
    lines = []
    for row in rows:
        f, tid, (x1, y1, x2, y2) = row[:3]
        score = row[3] if len(row) > 3 else 1.0
        lines.append(f"{f + 1},{tid},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{score:.3f},-1,-1,-1")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + ("\n" if lines else ""))


class RowsTruth:
    """Ground truth rows as `score` takes them (what a rendered scene's truth offers)."""

    def __init__(self, rows, frames: int | None = None):
        rows = list(rows)
        self.frames = frames if frames is not None else max(r[0] for r in rows) + 1
        ids = sorted({r[1] for r in rows})
        self.boxes = {i: np.zeros((self.frames, 4), np.float32) for i in ids}
        self.visibility = {i: np.zeros(self.frames, np.float32) for i in ids}
        for f, i, box, v in rows:
            self.boxes[i][f], self.visibility[i][f] = box, max(v, 1e-3)

    def rows(self):
        for f in range(self.frames):
            for i in sorted(self.boxes):
                if self.visibility[i][f] > 0:
                    yield f, i, self.boxes[i][f], float(self.visibility[i][f])
