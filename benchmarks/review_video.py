"""A recording's review video (`preannotate review video`): its clips joined in order.

Makes one recording of N clips (the bikes sample, 640x272 at 25 fps, looped to ``--seconds``
each; stream-copied, so making them costs nothing), converts it with `preannotate convert`,
then joins it, side by side in this process and alternating ``--repeat`` times:

- ours: `tasks.annotations.review_video.build` (remux into parts of ``--cap`` bytes, a map of
  every frame, each part demuxed again to check it), forced by removing the kept description;
- the reference: Debian's ``ffmpeg -f concat -c copy`` on the same WebMs, the usual way to
  join clips without re-encoding (one file, no map, no check).

Reported: the medians and their ratio, frames and timestamps of both outputs against the
clips (ffmpeg's concat demuxer places each clip at the previous one's end, so a clip that
starts after a gap in the recording moves), and throughput in hours of video per minute.

    python -m benchmarks.review_video [--clips 12] [--seconds 60] [--cap 50000000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.media import loop_clip, sample  # noqa: E402
from tasks.recipe import parse_recipe  # noqa: E402
from tasks.annotations import review_frames, review_video  # noqa: E402
from tasks.store.items import read_records  # noqa: E402
from tasks.store.storage import open_location  # noqa: E402

WORK = Path(__file__).resolve().parent / "_work" / "review_video"


def convert(clips: int, seconds: int) -> Path:
    data, out = WORK / f"data-{clips}x{seconds}", WORK / f"out-{clips}x{seconds}"
    if not (out / "items.parquet").exists():
        clip = loop_clip(sample("bikes"), WORK / f"bikes-{seconds}s.mp4", max(seconds // 10, 1))
        (data / "rec").mkdir(parents=True, exist_ok=True)
        for i in range(clips):
            shutil.copy(clip, data / "rec" / f"{i:03d}.mp4")
        subprocess.run([sys.executable, "-m", "flows.cli", "convert", str(data), "--out",
                        str(out)], cwd=ROOT, check=True, capture_output=True)
    return out


def ours(out: Path, cap: int) -> tuple[float, dict]:
    loc = open_location(str(out))
    records = [r for r in read_records(loc) if r.converted]
    (out / review_frames.VIDEO_DIR / "rec.json").unlink(missing_ok=True)
    started = time.perf_counter()
    info = review_video.build(loc, records, cap)
    return time.perf_counter() - started, info


def ffmpeg(out: Path) -> tuple[float, Path]:
    records = sorted((r for r in read_records(open_location(str(out))) if r.converted),
                     key=lambda r: r.clip_index)
    listing = WORK / "concat.txt"
    listing.write_text("".join(f"file '{r.output_uri}'\n" for r in records))
    target = WORK / "ffmpeg-joined.webm"
    started = time.perf_counter()
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i",
                    str(listing), "-c", "copy", str(target)], check=True)
    return time.perf_counter() - started, target


def frames_of(path: Path) -> list[int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sorted(round(p.pts * stream.time_base * 1000) for p in container.demux(stream)
                      if p.pts is not None and p.size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--cap", type=int, default=parse_recipe({}).review.recording_video
                        .max_part_bytes)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not shutil.which("ffmpeg"):
        raise SystemExit("needs Debian's ffmpeg for the reference (apt install ffmpeg)")
    out = convert(args.clips, args.seconds)
    times: dict[str, list[float]] = {"ours": [], "ffmpeg": []}
    for _ in range(args.repeat):
        seconds, info = ours(out, args.cap)
        times["ours"].append(seconds)
        seconds, joined = ffmpeg(out)
        times["ffmpeg"].append(seconds)
    clip_frames = sum(r.output_frames for r in read_records(open_location(str(out))))
    ours_frames = sum(len(frames_of(out / review_frames.VIDEO_DIR / p["file"]))
                      for p in info["parts"])
    hours = args.clips * args.seconds / 3600
    median = {k: statistics.median(v) for k, v in times.items()}
    report = {
        "clips": args.clips, "seconds_per_clip": args.seconds, "clip_frames": clip_frames,
        "parts": [{"frames": p["frames"], "bytes": p["bytes"]} for p in info["parts"]],
        "ours_frames": ours_frames, "ffmpeg_frames": len(frames_of(joined)),
        "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "ratio_ours_to_ffmpeg": round(median["ours"] / median["ffmpeg"], 2),
        "video_hours_per_minute_ours": round(hours / median["ours"] * 60, 1),
    }
    print(json.dumps(report, indent=1))
    (WORK / "review_video.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
