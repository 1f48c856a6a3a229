"""What every format module shares: the clip a file describes and the one error type."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np



@dataclass(frozen=True)
class ClipInfo:
    """One converted clip, as an export file describes it. Boxes are in WebM pixels."""

    recording: str
    clip_index: int
    name: str  # the clip's file name (e.g. "10.mp4"); exports are named after it
    video_uri: str  # the WebM the annotations belong to
    width: int
    height: int
    frames: int
    fps: Fraction  # average rate, for tools that want one; times come from `times_s`
    times_s: np.ndarray = field(default=None, repr=False)  # decoded timestamp of every frame
    # Readers number tracks a tool added (no id of ours) from here on, so that a new track
    # never takes the id of one the reviewer deleted (None: after the file's largest id).
    new_track_ids_from: int | None = None
    # The clip's stable id (its state record's name): a tool's task carries it in its data,
    # so any export of a project, whatever URLs it holds, is matched task by task.
    clip_id: str | None = None
    # The URL a reviewer's tool loads the video from (None: ``video_uri``).
    video_url: str | None = None

    def time_of(self, frame: int) -> float:
        """Decoded timestamp of ``frame`` (s); frame / fps only when the timeline is unknown."""
        if self.times_s is not None and 0 <= frame < len(self.times_s):
            return float(self.times_s[frame])
        return float(Fraction(frame) / self.fps)
