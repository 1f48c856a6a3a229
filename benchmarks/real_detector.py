"""The whole pipeline with the shipped detector on real footage: counts and contact sheets.

    .venv/bin/python -m benchmarks.real_detector [--vtest PATH]

Runs ``preannotate run`` (the product, as users run it) on the four bundled samples with the
demo recipe, and on OpenCV's pedestrian video ``vtest.avi`` (Debian ``opencv-doc``:
``apt-get install opencv-doc``; skipped when absent) with the default recipe. There is no
ground truth for these: the figures are counts per clip (detections, tracks, shots,
keyframes per 1,000 visible frames, review priority) and the contact sheets and timelines
under ``benchmarks/_work/real/<name>/previews/``, which are for looking at.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / "_work" / "real"
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def _run(args: list[str], out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([str(ROOT / ".venv" / "bin" / "preannotate"), *args, "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _report(name: str, out: Path, seconds: float) -> None:
    items = pq.read_table(out / "items.parquet").to_pylist()
    dets = pq.read_table(out / "detections.parquet").to_pandas()
    tracks = pq.read_table(out / "tracks.parquet").to_pandas()
    keyframes = pq.read_table(out / "keyframes.parquet").to_pandas()
    shots = pq.read_table(out / "shots.parquet").to_pandas()
    with sqlite3.connect(out / "review.db") as db:
        priority = dict(db.execute("select key, priority from review_tasks").fetchall())
    frames = sum(r["output_frames"] or 0 for r in items)
    print(f"\n{name}: {len(items)} clip(s), {frames} frames in {seconds:.0f} s "
          f"({frames / seconds:.1f} frames/s end to end)")
    print("| clip | frames | detections | tracks (labels) | shots | keyframes per 1,000 | review priority |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in items:
        mine = tracks[(tracks.recording == r["recording"]) & (tracks.clip_index == r["clip_index"])]
        visible = int((~mine.hidden).sum())
        kf = keyframes[(keyframes.recording == r["recording"]) & (keyframes.clip_index == r["clip_index"])]
        labels = mine.groupby("track_id")["label"].first().value_counts().to_dict()
        n_dets = int(((dets.recording == r["recording"]) & (dets.clip_index == r["clip_index"])).sum())
        n_shots = int(((shots.recording == r["recording"]) & (shots.clip_index == r["clip_index"])).sum())
        key = f"clip:{r['recording']}:{r['clip_index']}"
        per_k = 1000 * len(kf) / visible if visible else 0.0
        print(f"| {r['recording']}/{r['clip_name']} | {r['output_frames']} | {n_dets} | "
              f"{mine.track_id.nunique()} ({', '.join(f'{v} {k}' for k, v in labels.items())}) | "
              f"{n_shots} | {per_k:.0f} | {priority.get(key, float('nan')):.2f} |")
    print(f"previews: {out / 'previews'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vtest", type=Path, default=VTEST)
    args = parser.parse_args()
    out = WORK / "samples"
    _report("samples (demo recipe)", out, _run(["demo"], out))
    if args.vtest.exists():
        data = WORK / "vtest-data"
        data.mkdir(parents=True, exist_ok=True)
        shutil.copy(args.vtest, data / "vtest.avi")
        out = WORK / "vtest"
        _report("vtest.avi (default recipe)", out, _run(["run", str(data)], out))
    else:
        print(f"\n{args.vtest} not found: apt-get install opencv-doc for the pedestrian video")


if __name__ == "__main__":
    main()
