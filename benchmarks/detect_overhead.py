"""Pre-annotation overhead: `detect_clip` against a bare decode + detect loop.

Both run the recipe's detector (default recipe: OpenCV HOG people at max_side 640) over
every frame of the same converted WebM (the `bikes` sample, 640x272 street footage,
repeated by stream copy and converted once). The pipeline (`tasks.detect.stage.detect_clip`)
decodes on a thread, batches frames, maps boxes back to WebM pixels, checks the frame
count against the parity proof and writes its state. The reference is the least code that
gives the same detections: PyAV decode (thread_type AUTO), ``frame.to_ndarray(rgb24)`` at
the model size and ``detector.detect([image])``, one frame after another, nothing else.

Pairs run side by side in one process, in alternating order (A B, B A, ...); the figure to
quote is the median of the per-pair ratios pipeline time / reference time; overhead is
that ratio minus 1. The goal is an overhead under 10%. The pipeline decodes the next
batch while the model works on the last, so on a machine with a core to spare it can be
*faster* than the sequential reference (a negative overhead).

    python -m benchmarks.detect_overhead [--pairs 3] [--loops 2] [--recipe configs/default.yaml]

Results are printed and written as JSON to ``benchmarks/_work/detect_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.media import loop_clip, sample  # noqa: E402
from tasks.convert.batch import run_batch  # noqa: E402
from tasks.detect.stage import detect_clip, make_detector
from tasks.media.webm import webm_path  # noqa: E402
from tasks.convert.geometry import fit_within  # noqa: E402
from tasks.store.items import read_records  # noqa: E402
from tasks.recipe import load_recipe  # noqa: E402
from tasks.store.storage import open_location  # noqa: E402

WORK = Path(__file__).resolve().parent / "_work"


def converted(loops: int, recipe) -> tuple[dict, object]:
    """The looped bikes clip, converted once (kept in _work between runs)."""
    src_dir = WORK / f"bikes_x{loops}"
    loop_clip(sample("bikes"), src_dir / "bikes.mp4", loops)
    out_dir = WORK / f"detect_overhead_x{loops}"
    out = open_location(str(out_dir))
    records = read_records(out) if out_dir.exists() else []
    if not records:
        run_batch(str(src_dir), str(out_dir), recipe, "convert")
        records = read_records(out)
    (record,) = records
    assert record.status in ("converted", "skipped") and record.parity_ok, record
    return record, out


def pipeline(record, out, recipe) -> tuple[float, int, int]:
    """`detect_clip` from scratch (its state removed first); (seconds, frames, boxes)."""
    shutil.rmtree(out.path("_state", "detect"), ignore_errors=True)
    started = time.perf_counter()
    summary = detect_clip(record, out, recipe)
    elapsed = time.perf_counter() - started
    assert summary["status"] == "detected", summary
    return elapsed, summary["frames"], summary["detections"]


def reference(path: str, recipe) -> tuple[float, int, int]:
    """Decode + resize + detect, sequential; (seconds, frames, raw boxes)."""
    started = time.perf_counter()
    detector = make_detector(recipe)
    frames = boxes = 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        size = None
        for frame in container.decode(stream):
            if size is None:
                size = fit_within((frame.width, frame.height), recipe.detect.max_side)
            image = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
            (found,) = detector.detect([image])
            boxes += len(found)
            frames += 1
    return time.perf_counter() - started, frames, boxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--loops", type=int, default=2, help="copies of the 250-frame bikes sample")
    parser.add_argument("--recipe", default=str(ROOT / "configs" / "default.yaml"))
    parser.add_argument("--json", default=str(WORK / "detect_overhead.json"))
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    record, out = converted(args.loops, recipe)
    path = webm_path(out, record)
    w, h = record.output_width, record.output_height
    model = fit_within((w, h), recipe.detect.max_side)
    print(f"input: {record.output_frames} frames {w}x{h} WebM; detector "
          f"{recipe.detect.backend} at {model[0]}x{model[1]}, batch {recipe.detect.batch_size}",
          flush=True)

    # Warm-up (imports, caches, the OS file cache) on a few frames.
    with av.open(path) as container:
        first = next(container.decode(video=0))
        make_detector(recipe).detect([first.to_ndarray(format="rgb24", width=model[0],
                                                        height=model[1])])
    pairs = []
    for i in range(args.pairs):
        if i % 2:
            t_ref, n_ref, b_ref = reference(path, recipe)
            t_pipe, n_pipe, b_pipe = pipeline(record, out, recipe)
        else:
            t_pipe, n_pipe, b_pipe = pipeline(record, out, recipe)
            t_ref, n_ref, b_ref = reference(path, recipe)
        assert n_pipe == n_ref, (n_pipe, n_ref)
        pair = {"order": "reference first" if i % 2 else "pipeline first",
                "frames": n_pipe, "pipeline_s": t_pipe, "reference_s": t_ref,
                "pipeline_fps": n_pipe / t_pipe, "reference_fps": n_ref / t_ref,
                "ratio_time": t_pipe / t_ref, "overhead_pct": 100 * (t_pipe / t_ref - 1),
                "pipeline_boxes": b_pipe, "reference_boxes": b_ref}
        pairs.append(pair)
        print(f"pair {i + 1} ({pair['order']}): pipeline {pair['pipeline_fps']:6.2f} fps, "
              f"reference {pair['reference_fps']:6.2f} fps, time ratio {pair['ratio_time']:.3f} "
              f"(overhead {pair['overhead_pct']:+.1f}%)", flush=True)

    ratios = [p["ratio_time"] for p in pairs]
    median = statistics.median(ratios)
    result = {
        "benchmark": "detect_overhead", "recipe": args.recipe, "detector": recipe.detect.backend,
        "frames": pairs[0]["frames"], "webm_size": [w, h], "model_size": list(model),
        "batch_size": recipe.detect.batch_size, "pairs": pairs,
        "median_pipeline_fps": statistics.median(p["pipeline_fps"] for p in pairs),
        "median_reference_fps": statistics.median(p["reference_fps"] for p in pairs),
        "median_ratio_time": median, "min_ratio_time": min(ratios), "max_ratio_time": max(ratios),
        "median_overhead_pct": 100 * (median - 1), "goal_overhead_pct": 10.0,
        "goal_met": median - 1 < 0.10,
    }
    print()
    print(f"{'':24}{'pipeline':>12}{'reference':>12}")
    print(f"{'median frames/s':24}{result['median_pipeline_fps']:12.2f}"
          f"{result['median_reference_fps']:12.2f}")
    print(f"{result['frames']} frames {w}x{h}, {recipe.detect.backend} at {model[0]}x{model[1]}; "
          f"median time ratio pipeline/reference {median:.3f} (min {min(ratios):.3f}, max "
          f"{max(ratios):.3f}): overhead {result['median_overhead_pct']:+.1f}% "
          f"(goal < 10%: {'met' if result['goal_met'] else 'NOT met'})")
    if median < 1:
        print("the pipeline is faster than the sequential reference: it decodes the next batch "
              "on a thread while the detector works")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"results: {args.json}")


if __name__ == "__main__":
    main()
