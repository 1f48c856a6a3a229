"""The shipped detector's speed on each runtime: onnxruntime against OpenCV's DNN, side by side.

    .venv/bin/python -m benchmarks.detector_speed [--frames 60] [--pairs 5]

Frames: the street sample `bikes` decoded at 640 px wide (what `detect.max_side: 640` gives
the model), letterboxed to NanoDet's 416 x 416 inside the backend. Each pair runs both
runtimes over the same frames in alternating order; the figure is the median per-pair
ratio of OpenCV's time to onnxruntime's (above 1: onnxruntime is faster), plus frames/s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models import registry  # noqa: E402
from tasks.media.samples import sample_dir  # noqa: E402


def _frames(count: int) -> list:
    with av.open(str(sample_dir() / "bikes.mp4")) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24", width=640, height=272))
            if len(frames) == count:
                return frames
    return frames


def _time(detector, frames) -> float:
    started = time.perf_counter()
    for i in range(0, len(frames), 8):
        detector.detect(frames[i:i + 8])  # the stage's default batch
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    frames = _frames(args.frames)
    detectors = {name: registry.create("detector", "nanodet", runtime=name)
                 for name in ("onnxruntime", "opencv")}
    for detector in detectors.values():
        detector.detect(frames[:2])  # warm-up
    ratios, fps = [], {name: [] for name in detectors}
    for pair in range(args.pairs):
        order = list(detectors) if pair % 2 == 0 else list(detectors)[::-1]
        seconds = {name: _time(detectors[name], frames) for name in order}
        ratios.append(seconds["opencv"] / seconds["onnxruntime"])
        for name, s in seconds.items():
            fps[name].append(len(frames) / s)
        print(f"pair {pair + 1}: onnxruntime {fps['onnxruntime'][-1]:.1f} fps, "
              f"opencv {fps['opencv'][-1]:.1f} fps, ratio {ratios[-1]:.2f}", flush=True)
    print(f"median: onnxruntime {statistics.median(fps['onnxruntime']):.1f} frames/s, opencv "
          f"{statistics.median(fps['opencv']):.1f} frames/s; OpenCV time / onnxruntime time "
          f"{statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
