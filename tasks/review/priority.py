"""A review task's priority: what the recipe weighs (`review.priority`), measured on the dense
rows of one clip or track (mean machine score, lost tracks, longest hidden range, boxes,
breaks inside shots).
"""

from __future__ import annotations


import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.recipe import Recipe


def measures(tracks: pa.Table, frames: int | None = None, duration_s: float | None = None,
             shot_starts: frozenset[int] = frozenset()) -> dict[str, float]:
    """What the priority is computed from, for the dense rows of one clip or track: mean score
    of the visible machine boxes, tracks lost at least once, longest hidden range (s),
    tracks, visible machine boxes, and breaks per minute: places where a track starts, ends
    or is lost inside a shot (``frames``, ``duration_s`` and the first frames of the clip's
    shots, ``shot_starts``, tell where a shot begins and ends)."""
    if tracks.num_rows == 0:
        return {"mean_score": 1.0, "lost_tracks": 0, "hidden_s": 0.0, "tracks": 0, "boxes": 0,
                "breaks_per_min": 0.0}
    tracks = tracks.sort_by([("track_id", "ascending"), ("frame", "ascending")])
    hidden = tracks["hidden"].to_numpy(zero_copy_only=False)
    machine = pc.is_in(tracks["source"], pa.array(["tracker", "detector"])).to_numpy(
        zero_copy_only=False) & ~hidden
    scores = tracks["score"].to_numpy(zero_copy_only=False)
    mean = float(scores[machine].mean()) if machine.any() else 1.0
    ids = tracks["track_id"].to_numpy()
    times = pc.fill_null(tracks["time_s"], np.nan).to_numpy(zero_copy_only=False)
    longest, lost = 0.0, set()
    # Hidden runs: from the first hidden frame to the next visible one of the same track.
    run_start = None
    for i in range(len(hidden)):
        new_track = i == 0 or ids[i] != ids[i - 1]
        if new_track and run_start is not None:
            longest = max(longest, times[i - 1] - times[run_start])
            run_start = None
        if hidden[i]:
            lost.add(int(ids[i]))
            if run_start is None:
                run_start = i
        elif run_start is not None:
            longest = max(longest, times[i] - times[run_start])
            run_start = None
    if run_start is not None:
        longest = max(longest, times[len(hidden) - 1] - times[run_start])
    frame = tracks["frame"].to_numpy()
    breaks = _breaks(frame, ids, hidden, frames or int(frame.max()) + 1, shot_starts)
    minutes = (duration_s or float(np.nanmax(times) - np.nanmin(times)) or 1.0) / 60
    return {"mean_score": round(mean, 4), "lost_tracks": len(lost),
            "hidden_s": round(float(np.nan_to_num(longest)), 3), "tracks": len(set(ids.tolist())),
            "boxes": int(machine.sum()), "breaks_per_min": round(breaks / max(minutes, 1 / 60), 3)}


def _breaks(frames: np.ndarray, ids: np.ndarray, hidden: np.ndarray, frame_count: int,
            shot_starts: frozenset[int]) -> int:
    """Track starts and ends that are not a shot's edges, plus hidden runs, over all tracks
    (rows sorted by track, then frame)."""
    starts = set(shot_starts) | {0}
    ends = {s - 1 for s in shot_starts} | {frame_count - 1}
    count = 0
    edges = np.flatnonzero(np.diff(ids)) + 1
    for lo, hi in zip(np.concatenate([[0], edges]), np.concatenate([edges, [len(ids)]])):
        visible = np.flatnonzero(~hidden[lo:hi])
        if not len(visible):
            continue
        count += int(frames[lo + visible[0]] not in starts)
        count += int(frames[lo + visible[-1]] not in ends)
        gaps = np.diff(hidden[lo:hi].astype(np.int8))
        count += int((gaps == 1).sum()) - int(hidden[hi - 1])  # hidden runs inside the track
    return count


def priority(recipe: Recipe, measured: dict[str, float]) -> float:
    w = recipe.review.priority
    return round(w.base + w.low_confidence * (1 - measured["mean_score"]) +
                 w.lost_tracks * measured["lost_tracks"] + w.hidden_s * measured["hidden_s"] +
                 w.tracks * measured["tracks"] +
                 w.no_boxes * (measured.get("boxes", 1) == 0) +
                 w.breaks * measured.get("breaks_per_min", 0.0), 6)
