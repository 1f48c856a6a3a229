"""Chunked tracking: `run_object` in resumable chunks against one unchunked pass per object.

Input: the synthetic scene of the tests (`tests.scene.render_scene`: four textured objects
"A".."D" moving over a textured background, one passing behind a pillar, one leaving and
one entering the frame, exact ground-truth boxes), converted to WebM with `run_batch`.
Each object gets a person's keyframe at the first frame where it is visible (optionally
more, every ``--keyframe-every`` frames while visible); the plan has no detector tracks.

(a) chunked: `tasks.track.chunks.run_object` for every object with the recipe's
    ``frames_per_execution`` (10). Each chunk is persisted; the next one re-initialises
    the tracker on the frame before it, with the box reached, scoring against the last
    keyframe's look (``reference=``).
(b) unchunked: one reader (`tasks.media.frames.open_reader`) and one tracker (the same backend)
    per object over the same frames the chunked run covered: init at each keyframe, update
    on every other frame, lost (hidden until the next keyframe) below ``lost_score``, as
    the pipeline decides. No state written, no re-initialisation.

Pairs run side by side in one process in alternating order (A B, B A, ...); the figure to
quote is the median per-pair time ratio chunked / unchunked (goal: at most 1.2). Boxes are
compared over frames where both give a (not hidden) box: mean IoU chunked vs unchunked,
and each against the ground truth where the object is visible. Last, a run that is
interrupted every ``--interrupt-after`` chunks (``stop_after_chunks``, as a crash would)
and resumed until done must give tables identical (``pyarrow.Table.equals``) to the
uninterrupted run's.

    python -m benchmarks.chunked_tracking [--pairs 3] [--frames 300] [--size 320x240]

Results are printed and written as JSON to ``benchmarks/_work/chunked_tracking.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import registry  # noqa: E402
from tasks.convert.batch import run_batch  # noqa: E402
from tasks.media.webm import webm_path  # noqa: E402
from tasks.media.frames import open_reader  # noqa: E402
from tasks.store.items import read_records  # noqa: E402
from tasks.recipe import load_recipe  # noqa: E402
from tasks.store.storage import open_location  # noqa: E402
from tasks.store.tables import read_table  # noqa: E402
from tasks.track.chunks import run_object
from tasks.track.plan import plan_clip
from tasks.track.state import clip_dir, track_key  # noqa: E402
from tests.scene import render_scene  # noqa: E402

WORK = Path(__file__).resolve().parent / "_work"


def prepare(args, recipe):
    """Render and convert the scene, plan it with one keyframe per object (or more)."""
    base = WORK / "chunked_tracking"
    shutil.rmtree(base, ignore_errors=True)
    src_dir, out_dir = base / "src", base / "out"
    src_dir.mkdir(parents=True)
    scene = render_scene(src_dir / "scene.mp4", size=args.size, frames=args.frames)
    run_batch(str(src_dir), str(out_dir), recipe, "convert")
    out = open_location(str(out_dir))
    (record,) = read_records(out)
    assert record.status == "converted" and record.parity_ok, record
    assert record.output_frames == scene.frames, (record.output_frames, scene.frames)
    rows = []
    for track_id, obj in enumerate(scene.ids, start=1):
        visible = np.flatnonzero(scene.visible[obj])
        frames = [int(visible[0])]
        if args.keyframe_every:
            frames += [int(f) for f in visible if f > frames[0] and (f - frames[0]) % args.keyframe_every == 0]
        for f in frames:
            x1, y1, x2, y2 = (float(v) for v in scene.boxes[obj][f])
            rows.append({"recording": record.recording, "clip_index": record.clip_index,
                         "track_id": track_id, "frame": f, "label": obj,
                         "x1": x1, "y1": y1, "x2": x2, "y2": y2})
    keyframes = pa.Table.from_pylist(rows, schema=pa.schema([
        ("recording", pa.string()), ("clip_index", pa.int32()), ("track_id", pa.int32()),
        ("frame", pa.int64()), ("label", pa.string()), ("x1", pa.float64()),
        ("y1", pa.float64()), ("x2", pa.float64()), ("y2", pa.float64())]))
    key = track_key(recipe, None)
    plan = plan_clip(record, out, recipe, keyframes, key)
    return scene, record, out, key, plan["objects"]


def chunked(record, out, recipe, key, objects) -> tuple[float, dict[int, pa.Table]]:
    objects_dir = Path(clip_dir(out, record, key)) / "objects"
    shutil.rmtree(objects_dir, ignore_errors=True)
    started = time.perf_counter()
    for track_id in objects:
        summary = run_object(record, out, recipe, key, track_id)
        assert summary["status"] == "tracked", summary
    elapsed = time.perf_counter() - started
    return elapsed, _tables(record, out, key, objects)


def _tables(record, out, key, objects) -> dict[int, pa.Table]:
    base = clip_dir(out, record, key)
    return {t: read_table(out, f"{base}/objects/{t}.parquet") for t in objects}


def resumed(record, out, recipe, key, objects, every: int) -> tuple[dict[int, pa.Table], int]:
    """Every object run ``every`` chunks at a time (stopped, then resumed) until done."""
    shutil.rmtree(Path(clip_dir(out, record, key)) / "objects", ignore_errors=True)
    calls = 0
    for track_id in objects:
        while True:
            calls += 1
            summary = run_object(record, out, recipe, key, track_id, stop_after_chunks=every)
            if summary["status"] != "interrupted":
                assert summary["status"] == "tracked", summary
                break
    return _tables(record, out, key, objects), calls


def unchunked(record, out, recipe, key, ranges) -> tuple[float, dict[int, dict]]:
    """One pass per object over ``ranges[track_id] = (first, last)``; no state written."""
    cfg = recipe.track
    plan = read_table(out, f"{clip_dir(out, record, key)}/plan.parquet")
    path = webm_path(out, record)
    started = time.perf_counter()
    results = {}
    for track_id, (first, last) in ranges.items():
        anchors = plan.filter(pc.equal(plan["track_id"], track_id))
        anchor_at = {int(f): np.array([anchors[c][i].as_py() for c in ("x1", "y1", "x2", "y2")])
                     for i, f in enumerate(anchors["frame"].to_pylist())}
        tracker = registry.create("tracker", cfg.tracker, **cfg.options)
        frames, boxes, hidden = [], [], []
        state, box = None, None
        with open_reader(path) as reader:
            for index, _, frame in reader.read(first, last - first + 1):
                image = frame.to_ndarray(format="rgb24")
                if index in anchor_at:
                    box = anchor_at[index]
                    try:
                        state = tracker.init(image, box)
                    except ValueError:
                        state = None
                    lost = state is None
                elif state is not None:
                    state, found, score = tracker.update(state, image)
                    lost = found is None or score < cfg.lost_score
                    if lost:
                        state = None
                    else:
                        box = np.asarray(found, np.float64)
                else:
                    lost = True
                frames.append(index)
                boxes.append(box)
                hidden.append(lost)
        results[track_id] = {"frame": np.array(frames), "box": np.array(boxes, np.float64),
                             "hidden": np.array(hidden)}
    return time.perf_counter() - started, results


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of (n, 4) xyxy boxes."""
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = w * h
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def compare(scene, tables: dict[int, pa.Table], passes: dict[int, dict]) -> dict:
    per_object, all_cu, all_cg, all_ug = {}, [], [], []
    for track_id, table in tables.items():
        obj = scene.ids[track_id - 1]
        c_frame = table["frame"].to_numpy()
        c_box = np.column_stack([table[c].to_numpy() for c in ("x1", "y1", "x2", "y2")]).astype(np.float64)
        c_hidden = table["hidden"].to_numpy(zero_copy_only=False)
        u = passes[track_id]
        assert np.array_equal(u["frame"], c_frame), track_id
        both = ~c_hidden & ~u["hidden"] & scene.visible[obj][c_frame]
        gt = scene.boxes[obj][c_frame[both]].astype(np.float64)
        cu = iou(c_box[both], u["box"][both])
        cg, ug = iou(c_box[both], gt), iou(u["box"][both], gt)
        all_cu.append(cu), all_cg.append(cg), all_ug.append(ug)
        per_object[obj] = {
            "track_id": track_id, "frames": [int(c_frame[0]), int(c_frame[-1])],
            "shown_chunked": int((~c_hidden).sum()), "shown_unchunked": int((~u["hidden"]).sum()),
            "common_visible": int(both.sum()),
            "iou_chunked_unchunked": float(cu.mean()) if len(cu) else None,
            "iou_chunked_gt": float(cg.mean()) if len(cg) else None,
            "iou_unchunked_gt": float(ug.mean()) if len(ug) else None}
    cat = lambda parts: float(np.concatenate(parts).mean())  # noqa: E731
    return {"objects": per_object, "common_visible": int(sum(len(p) for p in all_cu)),
            "iou_chunked_unchunked": cat(all_cu), "iou_chunked_gt": cat(all_cg),
            "iou_unchunked_gt": cat(all_ug)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--frames", type=int, default=300, help="length of the rendered scene")
    parser.add_argument("--size", default="320x240",
                        help="WIDTHxHEIGHT of the scene (even; 320x240 is its design size)")
    parser.add_argument("--recipe", default=str(ROOT / "configs" / "default.yaml"))
    parser.add_argument("--frames-per-execution", type=int, default=None,
                        help="chunk length (default: the recipe's)")
    parser.add_argument("--keyframe-every", type=int, default=0,
                        help="also a keyframe every N frames while visible (0: first frame only)")
    parser.add_argument("--interrupt-after", type=int, default=3,
                        help="chunks per call in the interrupted-and-resumed run")
    parser.add_argument("--json", default=str(WORK / "chunked_tracking.json"))
    args = parser.parse_args()
    args.size = tuple(int(v) for v in args.size.lower().split("x"))
    recipe = load_recipe(args.recipe)
    track = {"from_detections": False,  # a person's keyframes only
             # carry each object to the end of the clip (or until lost): with one keyframe
             # the recipe's carry_frames (30) would stop every object 30 frames after it
             "carry_frames": args.frames}
    if args.frames_per_execution:
        track["frames_per_execution"] = args.frames_per_execution
    recipe = recipe.model_copy(update={"track": recipe.track.model_copy(update=track)})
    scene, record, out, key, objects = prepare(args, recipe)
    cfg = recipe.track
    print(f"input: synthetic scene {args.size[0]}x{args.size[1]}, {scene.frames} frames, "
          f"objects {', '.join(scene.ids)} (track ids {objects}); tracker {cfg.tracker}, "
          f"frames_per_execution {cfg.frames_per_execution}, lost_score {cfg.lost_score}",
          flush=True)

    # Warm-up: one chunked run gives the frame ranges the unchunked pass covers.
    _, reference_tables = chunked(record, out, recipe, key, objects)
    ranges = {t: (int(tab["frame"][0].as_py()), int(tab["frame"][-1].as_py()))
              for t, tab in reference_tables.items()}
    unchunked(record, out, recipe, key, {t: (a, min(a + 5, b)) for t, (a, b) in ranges.items()})
    tracked_frames = sum(b - a + 1 for a, b in ranges.values())

    pairs, deterministic, passes = [], True, None
    for i in range(args.pairs):
        if i % 2:
            t_u, passes = unchunked(record, out, recipe, key, ranges)
            t_c, tables = chunked(record, out, recipe, key, objects)
        else:
            t_c, tables = chunked(record, out, recipe, key, objects)
            t_u, passes = unchunked(record, out, recipe, key, ranges)
        deterministic &= all(tables[t].equals(reference_tables[t]) for t in objects)
        pair = {"order": "unchunked first" if i % 2 else "chunked first",
                "chunked_s": t_c, "unchunked_s": t_u, "ratio": t_c / t_u,
                "chunked_fps": tracked_frames / t_c, "unchunked_fps": tracked_frames / t_u}
        pairs.append(pair)
        print(f"pair {i + 1} ({pair['order']}): chunked {t_c:6.2f} s, unchunked {t_u:6.2f} s, "
              f"ratio {pair['ratio']:.3f}", flush=True)

    quality = compare(scene, reference_tables, passes)
    resumed_tables, calls = resumed(record, out, recipe, key, objects, args.interrupt_after)
    identical = all(resumed_tables[t].equals(reference_tables[t]) for t in objects)
    ratios = [p["ratio"] for p in pairs]
    median = statistics.median(ratios)
    result = {
        "benchmark": "chunked_tracking", "size": list(args.size), "frames": scene.frames,
        "tracker": cfg.tracker, "frames_per_execution": cfg.frames_per_execution,
        "keyframe_every": args.keyframe_every, "object_frames": tracked_frames,
        "ranges": {scene.ids[t - 1]: list(r) for t, r in ranges.items()}, "pairs": pairs,
        "median_ratio": median, "min_ratio": min(ratios), "max_ratio": max(ratios),
        "goal_ratio": 1.2, "goal_met": median <= 1.2, "chunked_deterministic": deterministic,
        **quality,
        "resume": {"chunks_per_call": args.interrupt_after, "calls": calls,
                   "objects": len(objects), "identical": identical},
    }
    print()
    print(f"{'object':8}{'frames':>12}{'shown c/u':>12}{'common':>8}{'IoU c-u':>9}"
          f"{'IoU c-gt':>10}{'IoU u-gt':>10}")
    fmt = lambda v: f"{v:.3f}" if v is not None else "-"  # noqa: E731
    for obj, o in quality["objects"].items():
        print(f"{obj:8}{o['frames'][0]:>5}-{o['frames'][1]:<6}"
              f"{o['shown_chunked']:>6}/{o['shown_unchunked']:<5}{o['common_visible']:>8}"
              f"{fmt(o['iou_chunked_unchunked']):>9}{fmt(o['iou_chunked_gt']):>10}"
              f"{fmt(o['iou_unchunked_gt']):>10}")
    print(f"{'all':8}{tracked_frames:>12}{'':12}{quality['common_visible']:>8}"
          f"{quality['iou_chunked_unchunked']:>9.3f}{quality['iou_chunked_gt']:>10.3f}"
          f"{quality['iou_unchunked_gt']:>10.3f}")
    print()
    print(f"{tracked_frames} object-frames; median time ratio chunked/unchunked {median:.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}; goal <= 1.2: "
          f"{'met' if median <= 1.2 else 'NOT met'}); chunked {statistics.median(p['chunked_fps'] for p in pairs):.1f} "
          f"object-frames/s, unchunked {statistics.median(p['unchunked_fps'] for p in pairs):.1f}")
    print(f"interrupted every {args.interrupt_after} chunks and resumed ({calls} calls for "
          f"{len(objects)} objects): tables identical to the uninterrupted run: "
          f"{'yes' if identical else 'NO'}; repeated chunked runs identical: "
          f"{'yes' if deterministic else 'NO'}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"results: {args.json}")


if __name__ == "__main__":
    main()
