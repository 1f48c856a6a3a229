"""Time to the first clip's exports and review task, against the whole run, on one recording
of many clips: what a reviewer waits before work arrives.

Input: one recording of ``--clips`` clips (default 12) made from the bundled samples
(`tasks.media.samples`), copied in turn as ``rec/clip-00.mp4``, ``rec/clip-01.mp4``, ... with the
demo recipe (`configs/demo.yaml`: HOG people detector, CSRT tracker, every export format,
review enqueue into ``OUT/review.db``) and the recipe's default parallelism.

Each run is ``preannotate run DATA --out OUT`` as a user starts it (a fresh process, its own
temporary Prefect server), from this checkout or from ``--baseline PATH`` (another checkout
of the project, e.g. a ``git worktree`` of an older commit), alternating baseline and this
checkout in pairs. Measured from the process start: the first export file written (its
mtime), the first review task (its ``created_at`` in the queue), and the process's end.

    python -m benchmarks.first_review [--clips 12] [--pairs 1] [--baseline PATH] [--api-url URL]

Results are printed and written as JSON to ``benchmarks/_work/first_review.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.media.samples import sample_dir  # noqa: E402

WORK = Path(__file__).resolve().parent / "_work" / "first_review"


def make_recording(folder: Path, clips: int) -> Path:
    samples = sorted(Path(sample_dir()).glob("*.mp4"))
    rec = folder / "rec"
    rec.mkdir(parents=True, exist_ok=True)
    for i in range(clips):
        shutil.copy(samples[i % len(samples)], rec / f"clip-{i:02d}.mp4")
    return folder


def one_run(checkout: Path, data: Path, out: Path, api_url: str | None) -> dict[str, float]:
    """Seconds from the start of ``preannotate run`` to its first export, first review task
    and end."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(checkout), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(data), "--out", str(out),
                           "--config", str(checkout / "configs" / "demo.yaml")],
                          cwd=checkout, env=env, capture_output=True, text=True)
    ended = time.time()
    if done.returncode != 0:
        raise SystemExit(f"run in {checkout} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    exports = [p.stat().st_mtime for p in (out / "exports").rglob("*") if p.is_file()]
    with sqlite3.connect(out / "review.db") as db:
        (first_task,) = db.execute("SELECT min(created_at) FROM review_tasks").fetchone()
    return {"first_export_s": min(exports) - started, "first_review_s": first_task - started,
            "total_s": ended - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--baseline", type=Path, help="another checkout to compare with")
    parser.add_argument("--api-url", help="a running Prefect server's API (as a deployment "
                        "runs); without it each run starts its temporary server")
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    data = make_recording(WORK / "data", args.clips)
    sides = {"this": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    for i in range(args.pairs):
        order = list(sides) if i % 2 else list(reversed(sides))
        for name in order:
            got = one_run(sides[name], data, WORK / f"out-{name}", args.api_url)
            got["first_review_share"] = got["first_review_s"] / got["total_s"]
            runs[name].append(got)
            print(f"{name:9} first export {got['first_export_s']:6.1f} s, first review task "
                  f"{got['first_review_s']:6.1f} s, total {got['total_s']:6.1f} s "
                  f"(first review at {100 * got['first_review_share']:.0f}% of the run)",
                  flush=True)
    summary = {name: {k: statistics.median(r[k] for r in got) for k in got[0]}
               for name, got in runs.items()}
    result = {"clips": args.clips, "pairs": args.pairs, "api_url": args.api_url, "runs": runs,
              "median": summary}
    (WORK.parent / "first_review.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
