"""End to end: the whole pipeline as one Prefect flow against the sum of its stages run alone,
and the Dask runner against the default one.

Input: the bundled sample videos (`tasks.media.samples`), each its own recording, with the demo
recipe (`configs/demo.yaml`: HOG people detector at 640 px, CSRT tracker, every export
format, review enqueue).

(a) flow: `flows.run.run_pipeline` into a fresh OUT (Prefect's engine, one flow run whose
    stages submit one task per clip or object, previews and UI artifacts), one clip and one object at a
    time (`run.max_parallel_clips: 1`, `track.max_parallel: 1`) so that it does the same
    serial work as (b).
(b) stages alone: the same work as plain function calls in this process, stage after stage,
    no Prefect: `run_batch` (convert), `detect_clip` + `write_detections`, `plan_clip` +
    `run_object` + `assemble_clip` + `write_tracks`, `compact_clip` + `merge_keyframes`,
    `export_clip` + `finish`, `enqueue_reviews`, `clip_preview_uri`. Its time is the sum of the
    stages' times. The flow runs the stages of different clips at once (clip k detects while
    k+1 converts), so on several cores it can take less wall time than (b).

Pairs run side by side in one process in alternating order (a b, b a, ...) after a warm-up
of each (the Prefect server starts once per process, as in a long-lived worker). The figure
to quote is the median per-pair ratio a / b - 1: the orchestration overhead (goal: under
10%). Frames/s is the clips' frames over the wall time. Beside the wall time each run's CPU
seconds are counted: this process's (every thread) and, for the flow, the embedded Prefect
server's (a subprocess; read from /proc on Linux), the part of the overhead that competes
with the work for the same cores.

(c) runners: the same flow with the recipe's default parallelism (2 clips at once) on the
    thread runner and on `run.task_runner: dask` with 2 worker processes, alternating; wall
    times and their ratio (the Dask time includes starting its local cluster).

    python -m benchmarks.end_to_end [--pairs 3] [--runner-pairs 2] [--loops N]

``--loops N`` plays each sample N times back to back (packets copied, `benchmarks.media`):
the same content, N times the frames, to see how the overhead scales with the work.

Results are printed and written as JSON to ``benchmarks/_work/end_to_end.json``.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import yaml  # noqa: E402

from configs import recipe_path  # noqa: E402
from tasks.media.samples import sample_dir  # noqa: E402

WORK = Path(__file__).resolve().parent / "_work" / "end_to_end"


def write_recipe(name: str, **sections) -> Path:
    recipe = yaml.safe_load(recipe_path("demo").read_text())
    for section, values in sections.items():
        recipe.setdefault(section, {}).update(values)
    path = WORK / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def server_cpu_s() -> float:
    """CPU seconds the embedded Prefect server (this process's subprocess) has used so far;
    0.0 where it cannot be read (another OS, or a configured PREFECT_API_URL)."""
    from prefect.server.api.server import SubprocessASGIServer

    process = SubprocessASGIServer().server_process
    try:
        with open(f"/proc/{process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (AttributeError, OSError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def measured(fn, *args) -> tuple[dict[str, float], object]:
    """Wall seconds, this process's CPU seconds and the Prefect server's, around one call."""
    server, cpu, started = server_cpu_s(), time.process_time(), time.perf_counter()
    value = fn(*args)
    return {"wall": time.perf_counter() - started, "cpu": time.process_time() - cpu,
            "server_cpu": server_cpu_s() - server}, value


def flow_run(dataset: str, out: Path, config: Path) -> None:
    from flows.run import run_pipeline

    shutil.rmtree(out, ignore_errors=True)
    result = run_pipeline(dataset, str(out), str(config))
    assert result["outcomes"]["done"] == 4 and not result["outcomes"]["failed"], result["outcomes"]


def stages_alone(dataset: str, out_dir: Path, config: Path) -> tuple[float, dict[str, float]]:
    """The pipeline's work as plain calls, one stage after another; per-stage seconds."""
    from tasks.convert.batch import run_batch
    from tasks.compact.stage import compact_clip, merge_keyframes
    from tasks.detect.stage import converted_records, detect_clip, write_detections
    from tasks.store.items import is_converted
    from tasks.export.stage import export_clip, finish, parse_formats
    from tasks.recipe import load_recipe
    from tasks.report.rows import clip_preview_uri, clip_rows
    from tasks.review.handoff import enqueue_reviews
    from tasks.store.storage import open_location
    from tasks.track.chunks import run_object
    from tasks.track.plan import plan_clip
    from tasks.track.state import track_key
    from tasks.track.assemble import assemble_clip, write_tracks

    shutil.rmtree(out_dir, ignore_errors=True)
    recipe = load_recipe(str(config))
    out_uri = str(out_dir)
    times: dict[str, float] = {}

    def timed(stage, fn, *args):
        started = time.perf_counter()
        value = fn(*args)
        times[stage] = times.get(stage, 0.0) + time.perf_counter() - started
        return value

    timed("convert", run_batch, dataset, out_uri, recipe, "convert")
    out = open_location(out_uri)
    records = [r for r in converted_records(out_uri, recipe) if is_converted(r)]

    def detect():
        summaries = [detect_clip(r, out, recipe) for r in records]
        write_detections(out, summaries, records)
    timed("detect", detect)
    key = track_key(recipe, None)

    def track():
        summaries = []
        for r in records:
            plan = plan_clip(r, out, recipe, None, key)
            for tid in plan["objects"]:
                run_object(r, out, recipe, key, tid)
            summaries.append(assemble_clip(r, out, key, plan["objects"]))
        write_tracks(out, summaries, records, key)
    timed("track", track)
    items = converted_records(out_uri, recipe)

    def compact():
        kept = [compact_clip(r, out, recipe, key) for r in records]
        merge_keyframes(out, recipe, kept, items)
        return kept
    kept = timed("compact", compact)
    formats = parse_formats(recipe.export.formats)
    labels = sorted({label for k in kept for label in k["labels"]})

    def export():
        clips = [export_clip(r, out, formats, k, labels) for r, k in zip(records, kept)]
        finish(out, recipe, formats, clips)
        return clips
    clips = timed("export", export)
    review = timed("review", enqueue_reviews, out_uri, recipe, records, clips, dataset, None)

    def previews():
        for row in clip_rows(out, {"review": review}):
            if row["status"] == "done":
                clip_preview_uri(row, out_uri, recipe)
    timed("previews", previews)
    return sum(times.values()), times


def frames_of(out: Path) -> int:
    import pyarrow.parquet as pq

    return sum(r["output_frames"] or 0 for r in pq.read_table(out / "items.parquet").to_pylist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--runner-pairs", type=int, default=2)
    parser.add_argument("--loops", type=int, default=1)
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    dataset = str(sample_dir())
    if args.loops > 1:
        from benchmarks.media import loop_clip

        looped = WORK / "looped"
        for clip in sorted(Path(dataset).glob("*.mp4")):
            loop_clip(clip, looped / clip.name, args.loops)
        dataset = str(looped)
    serial = write_recipe("serial", run={"max_parallel_clips": 1}, track={"max_parallel": 1})
    # Warm-up: imports, the Prefect server, numba's compile cache, OpenCV's first calls.
    flow_run(dataset, WORK / "warm-flow", serial)
    stages_alone(dataset, WORK / "warm-alone", serial)
    frames = frames_of(WORK / "warm-flow")

    pairs = []
    for i in range(args.pairs):
        order = ("flow", "alone") if i % 2 == 0 else ("alone", "flow")
        got = {}
        for which in order:
            if which == "flow":
                got["flow"], _ = measured(flow_run, dataset, WORK / "flow", serial)
            else:
                got["alone"], (_, got["stages"]) = measured(stages_alone, dataset,
                                                            WORK / "alone", serial)
        got["overhead"] = got["flow"]["wall"] / got["alone"]["wall"] - 1
        # CPU: the flow's process and its server against the stages' process (its server idles).
        got["cpu_overhead"] = (got["flow"]["cpu"] + got["flow"]["server_cpu"]) / (
            got["alone"]["cpu"] + got["alone"]["server_cpu"]) - 1
        pairs.append(got)
        print(f"pair {i + 1}: flow {got['flow']['wall']:.2f} s, stages alone "
              f"{got['alone']['wall']:.2f} s (overhead {got['overhead']:+.1%}); CPU s: flow "
              f"{got['flow']['cpu']:.1f} + server {got['flow']['server_cpu']:.1f}, alone "
              f"{got['alone']['cpu']:.1f} (+{got['alone']['server_cpu']:.1f}; "
              f"{got['cpu_overhead']:+.1%})", flush=True)
    overheads = sorted(p["overhead"] for p in pairs)
    flow_s = statistics.median(p["flow"]["wall"] for p in pairs)
    alone_s = statistics.median(p["alone"]["wall"] for p in pairs)

    default = write_recipe("threads")
    dask = write_recipe("dask", run={"task_runner": "dask", "workers": 2})
    runners = []
    for i in range(args.runner_pairs):
        order = ("thread", "dask") if i % 2 == 0 else ("dask", "thread")
        got = {}
        for which in order:
            config = default if which == "thread" else dask
            got[which] = measured(flow_run, dataset, WORK / which, config)[0]["wall"]
        runners.append(got)
        print(f"runners pair {i + 1}: thread {got['thread']:.2f} s, dask (2 workers) "
              f"{got['dask']:.2f} s", flush=True)

    def median(values):
        values = list(values)
        return round(statistics.median(values), 4) if values else None

    result = {
        "clips": 4, "frames": frames, "loops": args.loops,
        "flow_s": round(flow_s, 3), "stages_alone_s": round(alone_s, 3),
        "overhead": median(overheads), "overhead_min": round(overheads[0], 4),
        "overhead_max": round(overheads[-1], 4),
        "cpu_overhead": median(p["cpu_overhead"] for p in pairs),
        "server_cpu_s": median(p["flow"]["server_cpu"] for p in pairs),
        "flow_fps": round(frames / flow_s, 2), "stages_alone_fps": round(frames / alone_s, 2),
        "stage_seconds": {k: round(v, 3) for k, v in pairs[-1]["stages"].items()},
        "pairs": [{k: v for k, v in p.items() if k != "stages"} for p in pairs],
        "thread_s": median(r["thread"] for r in runners),
        "dask_2_workers_s": median(r["dask"] for r in runners),
        "runner_pairs": runners,
    }
    if runners:
        result["dask_over_thread"] = round(result["dask_2_workers_s"] / result["thread_s"], 3)
    print(json.dumps(result, indent=2))
    name = "end_to_end.json" if args.loops == 1 else f"end_to_end_x{args.loops}.json"
    (WORK.parent / name).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
