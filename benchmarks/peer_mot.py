"""Run in the peer environment (`benchmarks/setup-trackers.sh`), never imported by us:
roboflow `trackers` (Apache-2.0) needs non-headless ``opencv-python``, which clashes with
our OpenCV. Two commands, both reading and writing MOTChallenge text files:

    python benchmarks/peer_mot.py track JOB.json   # their ByteTrack / OC-SORT / BoT-SORT
    python benchmarks/peer_mot.py eval JOB.json    # HOTA, MOTA, IDF1 for every result

``track`` jobs: {"sequences": [{"name", "detections", "frames", "video" (or null), "out"}],
"trackers": {label: {"kind": "bytetrack" | "ocsort" | "botsort", "options": {...}}}}; each
result goes to ``out/<label>.txt``. ``eval`` jobs: {"pairs": [{"gt", "result"}], "out": path}:
`trackers.eval.evaluate_mot_sequence` (written to match TrackEval) on each pair.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def _detections(path: Path, frames: int):
    import supervision as sv

    raw = np.loadtxt(path, delimiter=",", ndmin=2) if path.stat().st_size else np.zeros((0, 7))
    per_frame = []
    for f in range(1, frames + 1):
        at = raw[raw[:, 0] == f]
        xyxy = np.column_stack([at[:, 2], at[:, 3], at[:, 2] + at[:, 4], at[:, 3] + at[:, 5]])
        per_frame.append(sv.Detections(xyxy=xyxy.reshape(-1, 4).astype(np.float32),
                                       confidence=at[:, 6].astype(np.float32),
                                       class_id=np.zeros(len(at), int)))
    return per_frame


def _tracker(kind: str, options: dict):
    import trackers

    return {"bytetrack": trackers.ByteTrackTracker, "ocsort": trackers.OCSORTTracker,
            "botsort": trackers.BoTSORTTracker}[kind](**options)


def track(job: dict) -> None:
    for seq in job["sequences"]:
        dets = _detections(Path(seq["detections"]), seq["frames"])
        for label, spec in job["trackers"].items():
            tracker = _tracker(spec["kind"], spec.get("options", {}))
            frames = _frames(seq.get("video"), seq["frames"]) if spec["kind"] == "botsort" else None
            lines = []
            for f, d in enumerate(dets):
                image = next(frames) if frames is not None else None
                result = tracker.update(d, image) if image is not None else tracker.update(d)
                for (x1, y1, x2, y2), tid, conf in zip(result.xyxy, result.tracker_id,
                                                       result.confidence):
                    if tid >= 0:
                        lines.append(f"{f + 1},{tid},{x1:.2f},{y1:.2f},{x2 - x1:.2f},"
                                     f"{y2 - y1:.2f},{conf:.3f},-1,-1,-1")
            out = Path(seq["out"]) / f"{label}.txt"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("\n".join(lines) + ("\n" if lines else ""))


def _frames(video: str | None, count: int):
    """BGR frames of the sequence's video (BoT-SORT's camera-motion compensation reads them)."""
    if video is None:
        while True:
            yield None
    import cv2

    capture = cv2.VideoCapture(video)
    for _ in range(count):
        ok, frame = capture.read()
        yield frame if ok else None
    capture.release()


def evaluate(job: dict) -> None:
    from trackers.eval import evaluate_mot_sequence

    results = []
    for pair in job["pairs"]:
        r = evaluate_mot_sequence(pair["gt"], pair["result"], metrics=["CLEAR", "HOTA", "Identity"])
        results.append({**pair, "HOTA": r.HOTA.HOTA, "DetA": r.HOTA.DetA, "AssA": r.HOTA.AssA,
                        "MOTA": r.CLEAR.MOTA, "IDSW": r.CLEAR.IDSW, "IDF1": r.Identity.IDF1})
    Path(job["out"]).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    command, path = sys.argv[1], Path(sys.argv[2])
    {"track": track, "eval": evaluate}[command](json.loads(path.read_text()))
