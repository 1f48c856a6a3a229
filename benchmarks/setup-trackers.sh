#!/usr/bin/env bash
# The peer environment benchmarks/tracking_quality.py compares and scores with: roboflow
# `trackers` (ByteTrack, OC-SORT, BoT-SORT and its TrackEval-matching evaluator). It needs
# non-headless opencv-python, which clashes with our OpenCV, so it lives in its own venv.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-trackers/bin/python ] || python3 -m venv .venv-trackers
.venv-trackers/bin/pip install -q trackers==2.6.1
