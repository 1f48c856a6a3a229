#!/usr/bin/env bash
# The peer tools our export tests read files back with, each in its own virtual environment
# because their pins clash with ours (OpenCV < 5, pyarrow 25) or with each other (attrs):
#   .venv-peers: datumaro (CVAT XML, MOT) and label-studio-sdk (LabelInterface validation)
#   .venv-dtlpy: dtlpy, Dataloop's SDK (reads our Dataloop JSON offline)
#   .venv-ls: a Label Studio server, which the review push/pull tests start on 127.0.0.1
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-peers/bin/python ] || python3 -m venv .venv-peers
.venv-peers/bin/pip install -q -r tests/peer-requirements.txt
[ -x .venv-dtlpy/bin/python ] || python3 -m venv .venv-dtlpy
.venv-dtlpy/bin/pip install -q dtlpy==1.126.5
# .venv-ls: a Label Studio server (Django and its own pins) for the review push/pull tests
[ -x .venv-ls/bin/python ] || python3 -m venv .venv-ls
.venv-ls/bin/pip install -q label-studio==1.23.2
