"""Per-clip cost of a rerun that has nothing to do (issue 15, point 12).

Makes a recording of N one-second clips (the first second of a bundled sample, re-encoded
once with H.264 and copied N times), runs `preannotate run` on it as a user does (a new
process with its own temporary Prefect server), then runs it again with nothing changed.
Reported: the first run's time, the no-op rerun's time, and the no-op time per clip beyond
a rerun of a 4-clip recording made the same way, measured in the same session (the fixed
cost of a process and its server is not per clip).

    python -m benchmarks.noop_rerun [--clips 300] [--small 4] [--reuse]

``--reuse`` keeps an OUT a previous invocation made (its first run is skipped).

Results are printed and written as JSON to ``benchmarks/_work/noop_rerun.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.media import sample  # noqa: E402

WORK = Path(__file__).resolve().parent / "_work" / "noop_rerun"
RECIPE = "detect: {every_nth: 5}\nexport: {formats: [json, cvat]}\n"


def one_second_clip(target: Path) -> Path:
    """The first second of the carphone sample, H.264 (so every copy converts for real)."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(sample("carphone_pristine"))) as src, av.open(str(target), "w") as out:
        stream_in = src.streams.video[0]
        rate = stream_in.average_rate or Fraction(30)
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = stream_in.width, stream_in.height, "yuv420p"
        for i, frame in enumerate(src.decode(stream_in)):
            if i >= round(rate):
                break
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1) / rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return target


def dataset(root: Path, clips: int, clip: Path) -> Path:
    folder = root / "recording"
    if not folder.exists() or len(list(folder.iterdir())) != clips:
        shutil.rmtree(root, ignore_errors=True)
        folder.mkdir(parents=True)
        for i in range(clips):
            shutil.copy(clip, folder / f"{i:05d}.mp4")
    return root


def run(data: Path, out: Path, config: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(data), "--out", str(out),
                           "--config", str(config)], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--small", type=int, default=4)
    parser.add_argument("--reuse", action="store_true",
                        help="rerun existing OUTs (skip their first run)")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    clip = one_second_clip(WORK / "one-second.mp4")
    config = WORK / "recipe.yaml"
    config.write_text(RECIPE)
    result = {"clips": args.clips, "small": args.small}
    for name, n in (("small", args.small), ("large", args.clips)):
        data = dataset(WORK / f"data-{n}", n, clip)
        out = WORK / f"out-{n}"
        if not (args.reuse and (out / "items.parquet").exists()):
            shutil.rmtree(out, ignore_errors=True)
            result[f"{name}_first_s"] = round(run(data, out, config), 2)
        result[f"{name}_noop_s"] = round(run(data, out, config), 2)
        print(f"{n} clips: first run {result.get(f'{name}_first_s', '(reused)')} s, no-op rerun "
              f"{result[f'{name}_noop_s']} s", flush=True)
    per_clip = (result["large_noop_s"] - result["small_noop_s"]) / (args.clips - args.small)
    result["noop_s_per_clip"] = round(per_clip, 4)
    result["noop_10000_clips_s_estimate"] = round(result["small_noop_s"] + per_clip * 10_000, 1)
    print(f"no-op cost per clip {per_clip * 1000:.1f} ms; 10,000 clips: about "
          f"{result['noop_10000_clips_s_estimate']} s")
    (WORK.parent / "noop_rerun.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
