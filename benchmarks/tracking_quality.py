"""Tracking quality against ground truth: HOTA, MOTA and IDF1, ours beside roboflow
`trackers` (ByteTrack, OC-SORT, BoT-SORT) on the same detections.

    bash benchmarks/setup-trackers.sh                      # the peer environment, once
    .venv/bin/python -m benchmarks.tracking_quality [--seeds 3] [--no-pipeline]

Sequences:
- rendered scenes with exact ground truth (`tests/mot_scenes.py`): ``overlap`` (a person
  hidden behind another for a second, a head-on crossing, an exit, a late entry), ``cut``
  (two shots, people of the second standing where the first shot's were), ``pan`` (a
  hand-held panning camera);
- real pedestrian trajectories: the MOTChallenge ground truth that `motmetrics` ships
  (TUD-Campus, TUD-Stadtmitte; 640x480, 71 and 179 frames).

Two kinds of runs:
- association only: detector-like input made from the ground truth (20% of people missed,
  fewer found when partly hidden, boxes jittered by 4% of their size, 0.2 false boxes per
  frame; one input per seed), given alike to our association (`tasks.track.associate`: shot cuts
  and camera motion measured on the decoded video, as the pipeline does) and to theirs.
  ``ours + gaps`` also fills gaps of up to 60 frames by interpolation, as the pipeline does
  without a tracker (offline, we know where the object is found again);
- the whole pipeline (convert, detect with background subtraction, associate, track with
  CSRT) on the fixed-camera scenes with the shipped ``configs/moving-objects.yaml``.

Every result is scored by the peer environment's `trackers.eval` (written to match
TrackEval), people less than half visible counting as distractors (MOT17's rule). Figures
go to stdout as a table and to ``benchmarks/_work/tracking/results.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasks.track.associate import associate  # noqa: E402
from tasks.media.motion import CameraMotion  # noqa: E402
from tasks.recipe import AssociateConfig, ShotsConfig  # noqa: E402
from tasks.detect.shots import ANALYSIS_SIDE, CutFinder, cuts_of  # noqa: E402
from tasks.convert.geometry import fit_within  # noqa: E402
from tests.mot_scenes import render  # noqa: E402
from tests.mot_score import RowsTruth, load_mot_gt, noisy_detections, write_mot  # noqa: E402

WORK = ROOT / "benchmarks" / "_work" / "tracking"
PEER = ROOT / ".venv-trackers" / "bin" / "python"
MAX_GAP = 60
# Theirs twice: their defaults, and set to our recipe's thresholds (the better counts).
THEIRS = {
    "bytetrack": {"kind": "bytetrack", "options": {}},
    "bytetrack (our thresholds)": {"kind": "bytetrack", "options": {
        "high_conf_det_threshold": 0.5, "track_activation_threshold": 0.5,
        "minimum_consecutive_frames": 3, "lost_track_buffer": 30}},
    "ocsort": {"kind": "ocsort", "options": {}},
    "ocsort (our thresholds)": {"kind": "ocsort", "options": {
        "high_conf_det_threshold": 0.5, "minimum_consecutive_frames": 3,
        "minimum_iou_threshold": 0.2, "lost_track_buffer": 30}},
}


def _gt_file(truth, path: Path) -> Path:
    """Ground truth as MOT lines: class 1 when at least half visible, else 8 (distractor)."""
    lines = []
    for f, pid, (x1, y1, x2, y2), v in truth.rows():
        lines.append(f"{f + 1},{pid},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},1,"
                     f"{1 if v >= 0.5 else 8},{v:.3f}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _video_analysis(video: Path, size: tuple[int, int]):
    """Shot cuts and camera motion measured on the decoded video, as the detect stage does."""
    cuts, motion, affines = CutFinder(ShotsConfig()), CameraMotion(), []
    w, h = fit_within(size, ANALYSIS_SIDE)
    with av.open(str(video)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            rgb = frame.to_ndarray(format="rgb24", width=w, height=h)
            cuts.feed(i, float(frame.time or 0), rgb[..., ::-1])
            affines.append(motion.feed(rgb, size))
    return cuts_of(cuts.shots()), np.array(affines)


def _ours(frames, boxes, scores, count: int, cuts, motion) -> tuple[list, list]:
    config = AssociateConfig(camera_motion=motion is not None)
    ids = associate(frames, boxes, scores, np.zeros(len(frames), int), np.arange(count), config,
                    cuts=cuts, motion=motion)
    rows = [(int(f), int(t), b, float(s)) for f, t, b, s in zip(frames, ids, boxes, scores) if t]
    return rows, _with_gaps(rows, cuts)


def _with_gaps(rows: list, cuts) -> list:
    """Each track's gaps of up to MAX_GAP frames filled by linear interpolation."""
    out = list(rows)
    by_track: dict[int, list] = {}
    for r in rows:
        by_track.setdefault(r[1], []).append(r)
    for tid, mine in by_track.items():
        mine.sort(key=lambda r: r[0])
        for (f0, _, b0, _), (f1, _, b1, _) in zip(mine, mine[1:]):
            if 1 < f1 - f0 <= MAX_GAP and not any(f0 < c <= f1 for c in cuts):
                for f in range(f0 + 1, f1):
                    t = (f - f0) / (f1 - f0)
                    out.append((f, tid, (1 - t) * np.asarray(b0) + t * np.asarray(b1), 0.0))
    return out


def _sequences():
    scenes = WORK / "scenes"
    for name in ("overlap", "cut", "pan"):
        video = scenes / name / "data" / "cam" / "1.mp4"
        video.parent.mkdir(parents=True, exist_ok=True)
        truth = render(name, video)
        yield name, truth, truth.size, video
    import motmetrics

    data = Path(motmetrics.__file__).parent / "data"
    for seq in ("TUD-Campus", "TUD-Stadtmitte"):
        yield seq, RowsTruth(load_mot_gt(data / seq / "gt.txt")), (640, 480), None


def _peer(command: str, job: dict, name: str) -> None:
    path = WORK / f"{name}.json"
    path.write_text(json.dumps(job))
    subprocess.run([str(PEER), str(ROOT / "benchmarks" / "peer_mot.py"), command, str(path)],
                   check=True)


def _pipeline(name: str, video: Path) -> Path:
    """The whole pipeline with the moving-objects recipe; its visible boxes as MOT lines."""
    import pyarrow.parquet as pq

    from configs import recipe_path
    from tasks.convert.batch import run_batch
    from tasks.detect.stage import detect_clip
    from tasks.store.items import read_items
    from tasks.recipe import load_recipe
    from tasks.store.storage import open_location
    from tasks.track.chunks import run_object
    from tasks.track.plan import plan_clip
    from tasks.track.state import clip_dir, track_key
    from tasks.track.assemble import assemble_clip

    out_dir = WORK / "pipeline" / name
    shutil.rmtree(out_dir, ignore_errors=True)
    recipe = load_recipe(recipe_path("moving-objects"))
    run_batch(str(video.parent.parent), str(out_dir), recipe, "convert")
    out = open_location(str(out_dir))
    (record,) = read_items(out).to_pylist()
    detect_clip(record, out, recipe)
    key = track_key(recipe, None)
    plan = plan_clip(record, out, recipe, None, key)
    for tid in plan["objects"]:
        run_object(record, out, recipe, key, tid)
    assemble_clip(record, out, key, plan["objects"])
    tracks = pq.read_table(f"{clip_dir(out, record, key)}/tracks.parquet").to_pylist()
    rows = [(r["frame"], r["track_id"], (r["x1"], r["y1"], r["x2"], r["y2"]), r["score"])
            for r in tracks if not r["hidden"]]
    path = out_dir / "result.txt"
    write_mot(path, rows)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="detector-like inputs per sequence")
    parser.add_argument("--no-pipeline", action="store_true", help="association only")
    args = parser.parse_args()
    if not PEER.exists():
        sys.exit(f"no peer environment at {PEER}: run bash benchmarks/setup-trackers.sh")
    WORK.mkdir(parents=True, exist_ok=True)
    jobs, pairs = [], []
    for name, truth, size, video in _sequences():
        gt = _gt_file(truth, WORK / name / "gt.txt")
        cuts, motion = _video_analysis(video, size) if video is not None else ([], None)
        moving = name == "pan"
        for seed in range(args.seeds):
            where = WORK / name / f"seed{seed}"
            frames, boxes, scores = noisy_detections(truth.rows(), size, seed, frames=truth.frames)
            write_mot(where / "det.txt", [(f, -1, b, s) for f, b, s in zip(frames, boxes, scores)])
            plain, gaps = _ours(frames, boxes, scores, truth.frames, cuts,
                                motion if moving else None)
            write_mot(where / "ours.txt", plain)
            write_mot(where / "ours + gaps.txt", gaps)
            trackers = dict(THEIRS)
            if moving:
                trackers["botsort (cmc)"] = {"kind": "botsort", "options": {}}
            jobs.append(({"name": name, "detections": str(where / "det.txt"),
                          "frames": truth.frames, "video": str(video) if video else None,
                          "out": str(where)}, trackers))
            for label in ["ours", "ours + gaps", *trackers]:
                pairs.append({"sequence": name, "tracker": label, "seed": seed, "gt": str(gt),
                              "result": str(where / f"{label}.txt")})
        if video is not None and not moving and not args.no_pipeline:
            pairs.append({"sequence": name, "tracker": "pipeline (moving-objects.yaml)",
                          "seed": None, "gt": str(gt), "result": str(_pipeline(name, video))})
    for sequence, trackers in jobs:
        _peer("track", {"sequences": [sequence], "trackers": trackers}, "track-job")
    _peer("eval", {"pairs": pairs, "out": str(WORK / "results.json")}, "eval-job")
    _report(json.loads((WORK / "results.json").read_text()))


def _report(results: list[dict]) -> None:
    table: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        table.setdefault((r["sequence"], r["tracker"]), []).append(r)
    print("| sequence | tracker | HOTA | MOTA | IDF1 | ID switches |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (seq, tracker), rows in table.items():
        mean = {k: float(np.mean([r[k] for r in rows])) for k in ("HOTA", "MOTA", "IDF1", "IDSW")}
        print(f"| {seq} | {tracker} | {mean['HOTA']:.3f} | {mean['MOTA']:.3f} | "
              f"{mean['IDF1']:.3f} | {mean['IDSW']:.1f} |")


if __name__ == "__main__":
    main()
