"""Peak memory converting a 1-minute and a 20-minute clip of the same content.

Both clips are the bundled `bikes` sample (640x272, 25 fps) repeated by stream copy, so
they differ only in length. Each conversion (parity proof included) runs in its own
process, which reports its peak resident set size. Bounded memory means the two peaks are
equal within a few percent.

    python benchmarks/memory.py [--short-min 1] [--long-min 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.media import loop_clip, sample  # noqa: E402

WORK = Path(__file__).resolve().parent / "_work"


def convert_in_child(clip_dir: Path) -> dict:
    """Run one conversion in a fresh interpreter; it prints its own peak RSS."""
    code = f"""
import json, resource, sys, tempfile, time
sys.path.insert(0, {str(ROOT)!r})
from tasks.convert.clip import process_clip
from tasks.convert.listing import plan_clips
from tasks.recipe import parse_recipe
from tasks.store.storage import open_location
recipe = parse_recipe({{}})
src = open_location({str(clip_dir)!r})
with tempfile.TemporaryDirectory() as tmp:
    out = open_location(tmp)
    (clip,) = plan_clips(src, recipe)
    started = time.perf_counter()
    row = process_clip(clip, src, out, recipe, "convert")
    print(json.dumps({{"status": row["status"], "frames": row["output_frames"],
                      "seconds": time.perf_counter() - started,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short-min", type=float, default=1)
    parser.add_argument("--long-min", type=float, default=20)
    args = parser.parse_args()
    results = {}
    for minutes in (args.short_min, args.long_min):
        loops = max(1, round(minutes * 6))  # the sample lasts 10 s
        clip_dir = WORK / f"bikes_{loops * 10}s"
        loop_clip(sample("bikes"), clip_dir / "clip.mp4", loops)
        results[minutes] = r = convert_in_child(clip_dir)
        print(f"{minutes:g} min: {r['frames']} frames in {r['seconds']:.1f} s "
              f"({r['frames'] / r['seconds']:.0f} fps), peak RSS {r['peak_rss_mb']:.1f} MB", flush=True)
    short, long = results[args.short_min], results[args.long_min]
    print(f"peak RSS ratio long/short: {long['peak_rss_mb'] / short['peak_rss_mb']:.3f}")


if __name__ == "__main__":
    main()
