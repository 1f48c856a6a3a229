"""Conversion speed: ours (PyAV, parity proof included) against the ffmpeg CLI.

Both encode the same 720p H.264 + AAC clip to WebM with the same settings (VP9 realtime,
cpu-used 8, row-mt, 2 threads, CRF 32; Opus stereo 96 kb/s). Pairs run side by side in
one process, in alternating order (A B, B A, ...) so machine drift hits both; the figure
to quote is the median of the per-pair ratios (ours / CLI, in frames per second). Ours is
timed in-process (no interpreter start-up); the CLI's time includes its process start.

    python benchmarks/convert_vs_ffmpeg.py [--pairs 5] [--loops 3]

Needs an `ffmpeg` on PATH (Debian: apt-get install ffmpeg); ours needs nothing more.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.media import loop_clip, sample  # noqa: E402
from tasks.convert.clip import process_clip  # noqa: E402
from tasks.convert.listing import plan_clips  # noqa: E402
from tasks.recipe import parse_recipe  # noqa: E402
from tasks.store.storage import open_location  # noqa: E402

WORK = Path(__file__).resolve().parent / "_work"


def ours(clip_dir: Path, out_dir: Path, threads: int) -> tuple[float, int]:
    recipe = parse_recipe({"convert": {"threads": threads}})
    src, out = open_location(str(clip_dir)), open_location(str(out_dir))
    (clip,) = plan_clips(src, recipe)
    started = time.perf_counter()
    row = process_clip(clip, src, out, recipe, "convert")
    elapsed = time.perf_counter() - started
    assert row["status"] == "converted", row["detail"]
    return elapsed, row["output_frames"]


def cli(source: Path, target: Path, threads: int) -> float:
    command = ["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-i", str(source),
               "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1",
               "-threads", str(threads), "-crf", "32", "-b:v", "0", "-pix_fmt", "yuv420p",
               "-c:a", "libopus", "-ac", "2", "-b:a", "96k", str(target)]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--loops", type=int, default=5, help="copies of the 132-frame sample")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not shutil.which("ffmpeg"):
        sys.exit("ffmpeg CLI not found: apt-get install ffmpeg")
    clip_dir = WORK / f"bbb720x{args.loops}"
    source = loop_clip(sample("bigbuckbunny"), clip_dir / "clip.mp4", args.loops)
    ratios, ours_fps, cli_fps = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        ours(clip_dir, Path(tmp) / "warm", args.threads)  # warm-up (imports, caches)
        for i in range(args.pairs):
            if i % 2:
                t_cli = cli(source, Path(tmp) / f"cli{i}.webm", args.threads)
                t_ours, frames = ours(clip_dir, Path(tmp) / f"ours{i}", args.threads)
            else:
                t_ours, frames = ours(clip_dir, Path(tmp) / f"ours{i}", args.threads)
                t_cli = cli(source, Path(tmp) / f"cli{i}.webm", args.threads)
            ours_fps.append(frames / t_ours)
            cli_fps.append(frames / t_cli)
            ratios.append(ours_fps[-1] / cli_fps[-1])
            print(f"pair {i + 1}: ours {ours_fps[-1]:6.1f} fps (parity included), "
                  f"ffmpeg CLI {cli_fps[-1]:6.1f} fps, ratio {ratios[-1]:.3f}", flush=True)
    print(f"{frames} frames 1280x720; median ours {statistics.median(ours_fps):.1f} fps, "
          f"CLI {statistics.median(cli_fps):.1f} fps; median ratio ours/CLI "
          f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
