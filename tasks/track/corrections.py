"""Reviewers' corrections back into the annotations.

A review result is a clip's annotations in a format we export, as the reviewer's tool saved
them. It is read with that format's validating reader (`read_reviewed`), compared with the
keyframes the pipeline holds for the clip (`diff_review`), and kept as the clip's review
(`save_review`, ``OUT/reviews/<clip id>.parquet``). The track stage then applies it to the
machine's dense tracks (`correct_tracks`), and compaction and exports run on the result.

What a review means, frame by frame:

- A **human keyframe** is a visible keyframe of the result whose box is not what the reviewer
  was shown (added where the object was hidden or absent, or moved by more than `MOVED_PX`),
  or one an earlier review made. It wins over the machine: its box is kept exactly (source
  ``human``, always a keyframe after compaction), and the tracker runs again from it, only
  up to the object's next anchor (the next detector keyframe or human keyframe, where the
  tracker restarts anyway), so only the affected tracker chunks are redone.
- The reviewer's start, end, hidden ranges, labels and attributes win on every frame: frames
  outside the reviewed track are dropped, frames the reviewer hides are hidden, and frames
  the reviewer shows but the machine cannot place (the tracker lost the object) take the
  reviewer's interpolated box (source ``review``).
- A track of the review's scope missing from the result was deleted (a false positive); a
  track the result adds is new, tracked from its human keyframes.
- Elsewhere the machine's boxes stay: keyframes a reviewer merely kept are the machine's own
  boxes within the export tolerance, so compaction gives them back. Inside a rerun (a human
  keyframe to the next anchor) the rerun's boxes replace the machine's, kept keyframes
  included: they came from the tracking the reviewer corrected.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.errors import FormatError
from tasks.annotations.keyframes import BOX, KEYFRAME_SCHEMA, expand, sort_tracks
from tasks.store.tables import TRACKS_FILE_SCHEMA, with_attributes

# A kept keyframe moves by rounding only (CVAT writes 2 decimals, Label Studio percentages);
# more than this is a person's move.
MOVED_PX = 0.5
_SPAN = np.int64(1) << 40  # (track, frame) keys: track_id * _SPAN + frame
_MAX_TRACK_ID = 1 << 22


# --- what changed ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Review:
    """A validated review of one clip: the reviewed tracks (human keyframes have source
    ``human``), the machine track ids the reviewer answered for, and what changed."""

    keyframes: pa.Table
    scope: tuple[int, ...]
    changes: dict[str, Any]


def _keys(table: pa.Table) -> np.ndarray:
    return table["track_id"].to_numpy().astype(np.int64) * _SPAN + table["frame"].to_numpy()


def _boxes(table: pa.Table) -> np.ndarray:
    return np.column_stack([table[c].to_numpy() for c in BOX]).astype(np.float64) \
        if table.num_rows else np.zeros((0, 4))


def _find(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Index of each key in ``sorted_keys``, -1 where absent."""
    if len(sorted_keys) == 0:
        return np.full(len(keys), -1, np.int64)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    found = sorted_keys[at] == keys
    return np.where(found, at, -1)


def diff_review(baseline: pa.Table, reviewed: pa.Table, clip_frames: int,
                scope: Collection[int] | None = None, names_clip: bool = False) -> Review:
    """Compare a result with the keyframes the reviewer was given (``baseline``, the clip's
    current keyframes). ``scope``: the machine track ids the task covers (None: the whole
    clip, new tracks included); tracks of the result outside it are ignored. ``names_clip``:
    the file names this clip by its stable id, so a result with no track at all is the
    reviewer deleting every track, not another clip's or a skipped task's file."""
    baseline = sort_tracks(baseline.cast(KEYFRAME_SCHEMA))
    reviewed = sort_tracks(reviewed.cast(KEYFRAME_SCHEMA))
    if reviewed.num_rows == 0 and baseline.num_rows and not names_clip:
        raise FormatError("the result has no tracks at all where the clip has "
                          f"{len(set(baseline['track_id'].to_pylist()))}: refused (a skipped task, "
                          "or another clip's file?); to delete tracks, leave the others in")
    machine_ids = sorted(set(baseline["track_id"].to_pylist()))
    result_ids = sorted(set(reviewed["track_id"].to_pylist()))
    ignored: list[int] = []
    if scope is None:
        covered = machine_ids
    else:
        covered = sorted(set(scope) & set(machine_ids))
        ignored = [t for t in result_ids if t not in covered]
        if ignored:
            reviewed = reviewed.filter(pc.is_in(reviewed["track_id"], pa.array(covered, pa.int32())))
        baseline = baseline.filter(pc.is_in(baseline["track_id"], pa.array(covered, pa.int32())))
    key = (baseline["recording"][0].as_py(), baseline["clip_index"][0].as_py()) \
        if baseline.num_rows else None
    frames = {key: clip_frames} if key else {}
    if reviewed.num_rows:
        frames[(reviewed["recording"][0].as_py(), reviewed["clip_index"][0].as_py())] = clip_frames
    shown = expand(baseline, frames)
    shown_keys = _keys(shown)
    shown_hidden = shown["hidden"].to_numpy(zero_copy_only=False)
    shown_box = _boxes(shown)

    rk, bk = _keys(reviewed), _keys(baseline)
    r_box, b_box = _boxes(reviewed), _boxes(baseline)
    r_hidden = reviewed["hidden"].to_numpy(zero_copy_only=False)
    at_shown = _find(shown_keys, rk)
    moved_px = np.full(len(rk), np.inf)
    visible_there = at_shown >= 0
    visible_there[visible_there] = ~shown_hidden[at_shown[visible_there]]
    moved_px[visible_there] = np.abs(r_box[visible_there] - shown_box[at_shown[visible_there]]).max(axis=1)
    at_base = _find(bk, rk)
    was_human = np.zeros(len(rk), bool)
    has_base = at_base >= 0
    was_human[has_base] = np.asarray(baseline["source"].to_pylist(), dtype=object)[at_base[has_base]] == "human"
    human = ~r_hidden & ((moved_px > MOVED_PX) | (was_human & (moved_px <= MOVED_PX)))
    marked = mark_human(reviewed, human)
    changes = _describe(baseline, reviewed, machine_ids if scope is None else covered,
                        result_ids if scope is None else covered, rk, bk, r_box, b_box, at_base,
                        human, clip_frames)
    changes["ignored_tracks"] = ignored
    scope_ids = tuple(machine_ids if scope is None else covered)
    return Review(marked, scope_ids, changes)


def mark_human(reviewed: pa.Table, human: np.ndarray) -> pa.Table:
    """``reviewed`` with source ``human`` (and kind ``human`` unless it has a stronger reason)
    exactly on the rows ``human`` marks."""
    source = np.asarray(reviewed["source"].to_pylist(), dtype=object)
    source = np.where(human, "human", np.where(source == "human", "interpolated", source))
    kind = np.asarray(reviewed["kind"].to_pylist(), dtype=object)
    kind[human & ~np.isin(kind, ["start", "end", "hidden", "shown", "label"])] = "human"
    marked = reviewed.set_column(reviewed.schema.get_field_index("source"), "source",
                                 pa.array(source.tolist(), pa.string()))
    return marked.set_column(marked.schema.get_field_index("kind"), "kind",
                             pa.array(kind.tolist(), pa.string()))


def human_frames(review: Review) -> dict[str, list[int]]:
    """{track id: frames} of the human keyframes: what a stored result needs to be replayed."""
    table = review.keyframes.filter(pc.equal(review.keyframes["source"], "human"))
    found: dict[str, list[int]] = {}
    for tid, frame in zip(table["track_id"].to_pylist(), table["frame"].to_pylist()):
        found.setdefault(str(tid), []).append(int(frame))
    return found


def replay_review(reviewed: pa.Table, human: dict[str, list[int]], scope: Collection[int],
                  changes: dict[str, Any]) -> Review:
    """The `Review` a stored result made: its keyframes marked as they were when validated."""
    reviewed = sort_tracks(reviewed.cast(KEYFRAME_SCHEMA))
    reviewed = reviewed.filter(pc.is_in(reviewed["track_id"], pa.array(
        sorted(set(scope) | {int(t) for t in changes.get("tracks_added", [])}), pa.int32())))
    wanted = {int(t) * int(_SPAN) + f for t, frames in human.items() for f in frames}
    mask = np.isin(_keys(reviewed), np.asarray(sorted(wanted), np.int64))
    return Review(mark_human(reviewed, mask), tuple(scope), changes)


def _describe(baseline, reviewed, machine_ids, result_ids, rk, bk, r_box, b_box, at_base,
              human, clip_frames) -> dict[str, Any]:
    """The audit entry: tracks added and deleted, and per track the keyframes added, removed,
    moved (with the distance) and relabelled, and changed ends."""
    present = set(reviewed["track_id"].to_pylist())
    added_tracks = sorted(set(result_ids) - set(machine_ids)) if reviewed.num_rows else []
    deleted = sorted(set(machine_ids) - present)
    tracks: dict[str, dict[str, Any]] = {}

    def entry(tid: int) -> dict[str, Any]:
        return tracks.setdefault(str(tid), {"added": [], "removed": [], "moved": [], "relabelled": []})

    r_label, b_label = reviewed["label"].to_pylist(), baseline["label"].to_pylist()
    r_hidden = reviewed["hidden"].to_pylist()
    b_hidden = baseline["hidden"].to_pylist()
    for i, key in enumerate(rk.tolist()):
        tid, frame = int(key // _SPAN), int(key % _SPAN)
        if tid in added_tracks:
            continue
        j = int(at_base[i])
        if j < 0:
            entry(tid)["added"].append(frame)
            continue
        distance = float(np.abs(r_box[i] - b_box[j]).max())
        if distance > MOVED_PX or r_hidden[i] != b_hidden[j]:
            entry(tid)["moved"].append({"frame": frame, "px": round(distance, 2),
                                        "from": [round(float(v), 2) for v in b_box[j]],
                                        "to": [round(float(v), 2) for v in r_box[i]],
                                        "hidden": bool(r_hidden[i])})
        if r_label[i] != b_label[j]:
            entry(tid)["relabelled"].append({"frame": frame, "from": b_label[j], "to": r_label[i]})
    kept = set(rk.tolist())
    for j, key in enumerate(bk.tolist()):
        tid = int(key // _SPAN)
        if key not in kept and tid not in deleted:
            entry(tid)["removed"].append(int(key % _SPAN))
    for tid in sorted(present - set(added_tracks)):
        base_end = _track_end(baseline, tid, clip_frames)
        new_end = _track_end(reviewed, tid, clip_frames)
        if base_end != new_end:
            entry(tid)["end"] = {"from": base_end, "to": new_end}
    tracks = {t: {k: v for k, v in e.items() if v} for t, e in sorted(tracks.items(), key=lambda x: int(x[0]))}
    tracks = {t: e for t, e in tracks.items() if e}
    total = {name: sum(len(e.get(name, [])) for e in tracks.values())
             for name in ("added", "removed", "moved", "relabelled")}
    return {"tracks_added": added_tracks, "tracks_deleted": deleted, "keyframes": total,
            "human_keyframes": int(human.sum()), "tracks": tracks}


def _track_end(table: pa.Table, track_id: int, clip_frames: int) -> int | None:
    rows = table.filter(pc.equal(table["track_id"], track_id))
    if rows.num_rows == 0:
        return None
    end = rows["end_frame"][0].as_py()
    return clip_frames - 1 if end is None else int(end)


# --- applying a review to dense tracks -------------------------------------------------------------

# retrack(track_id, frame, box, stop, next_box) -> rows of frames frame .. stop - 1 as a dict of
# lists (frame, box, score, hidden), the first being the person's box on ``frame``; ``next_box``
# is the box of the anchor on ``stop`` (None at the track's end).
Retrack = Callable[[int, int, list[float], int, list[float] | None], dict[str, list]]
Anchors = dict[int, tuple[np.ndarray, np.ndarray]]  # track id -> (frames, (n, 4) boxes)


def correct_tracks(machine: pa.Table, anchors: Anchors, reviewed: pa.Table,
                   scope: Collection[int], clip_frames: int, times_s: np.ndarray,
                   first_frame: int, retrack: Retrack) -> tuple[pa.Table, dict[str, int]]:
    """The clip's dense tracks with the review applied (`TRACKS_FILE_SCHEMA`), and counts of what
    was redone. ``machine``: the machine's dense rows of the clip; ``anchors``: per machine
    track, the frames the tracker restarts on (its plan keyframes)."""
    machine = sort_tracks(machine)
    machine = with_attributes(machine)
    reviewed = sort_tracks(reviewed.cast(KEYFRAME_SCHEMA))
    touched = sorted(set(scope) | set(reviewed["track_id"].to_pylist()))
    untouched = machine.filter(pc.invert(pc.is_in(machine["track_id"], pa.array(touched, pa.int32()))))
    parts = [untouched.select(TRACKS_FILE_SCHEMA.names).cast(TRACKS_FILE_SCHEMA)]
    redone = {"tracks": 0, "frames_retracked": 0, "ranges": 0, "frames_from_review": 0}
    if reviewed.num_rows:
        key = (reviewed["recording"][0].as_py(), int(reviewed["clip_index"][0].as_py()))
        states = expand(reviewed, {key: clip_frames})
    else:
        states = expand(reviewed)
    for tid in sorted(set(reviewed["track_id"].to_pylist())):
        mine = machine.filter(pc.equal(machine["track_id"], tid))
        want = states.filter(pc.equal(states["track_id"], tid))
        keys = reviewed.filter(pc.equal(reviewed["track_id"], tid))
        table, counts = _correct_one(tid, mine, want, keys, anchors.get(tid), times_s, first_frame,
                                     retrack)
        parts.append(table)
        redone["tracks"] += 1
        for name, value in counts.items():
            redone[name] += value
    result = pa.concat_tables(parts).sort_by([("track_id", "ascending"), ("frame", "ascending")])
    return result, redone


def _correct_one(tid, mine: pa.Table, want: pa.Table, keys: pa.Table, anchors, times_s, first_frame, retrack: Retrack) -> tuple[pa.Table, dict[str, int]]:
    frames = want["frame"].to_numpy()
    start, end = int(frames[0]), int(frames[-1])
    n = end - start + 1
    box = np.full((n, 4), np.nan)
    score = np.zeros(n, np.float32)
    hidden = np.ones(n, bool)
    have = np.zeros(n, bool)
    source = np.full(n, "review", dtype=object)
    model_label = np.full(n, None, dtype=object)
    if mine.num_rows:
        f = mine["frame"].to_numpy()
        inside = (f >= start) & (f <= end)
        at = f[inside] - start
        box[at] = _boxes(mine)[inside]
        score[at] = mine["score"].to_numpy()[inside]
        hidden[at] = mine["hidden"].to_numpy(zero_copy_only=False)[inside]
        source[at] = np.asarray(mine["source"].to_pylist(), dtype=object)[inside]
        model_label[at] = np.asarray(mine["model_label"].to_pylist(), dtype=object)[inside]
        have[at] = True
    # The tracker again from each human keyframe up to the next anchor (or the track's end).
    human = keys.filter(pc.and_(pc.equal(keys["source"], "human"), pc.invert(keys["hidden"])))
    human_frames = human["frame"].to_numpy()
    human_boxes = _boxes(human)
    restart_box = {}
    if anchors is not None:
        for f, b in zip(anchors[0].tolist(), anchors[1]):
            if start <= f <= end:
                restart_box[int(f)] = [float(v) for v in b]
    restart_box.update({int(f): [float(v) for v in b] for f, b in zip(human_frames.tolist(), human_boxes)})
    restarts = np.asarray(sorted(restart_box), np.int64)
    counts = {"frames_retracked": 0, "ranges": 0, "frames_from_review": 0}
    for h, hb in zip(human_frames.tolist(), human_boxes):
        later = restarts[restarts > h]
        stop = int(later[0]) if len(later) else end + 1
        rows = retrack(tid, h, [float(v) for v in hb], stop, restart_box.get(stop))
        at = np.asarray(rows["frame"], np.int64) - start
        box[at] = np.asarray(rows["box"], np.float64).reshape(-1, 4)
        score[at] = rows["score"]
        hidden[at] = rows["hidden"]
        source[at] = "tracker"
        have[at] = True
        box[h - start] = hb  # the person's box, exactly
        score[h - start], hidden[h - start], source[h - start] = 1.0, False, "human"
        counts["frames_retracked"] += len(at)
        counts["ranges"] += 1
    # The reviewer's visibility, labels and attributes win on every frame.
    want_hidden = want["hidden"].to_numpy(zero_copy_only=False)
    want_box = _boxes(want)
    fill = ~want_hidden & (~have | hidden)
    box[fill], hidden[fill], source[fill], score[fill] = want_box[fill], False, "review", 0.0
    counts["frames_from_review"] = int(fill.sum())
    hidden[want_hidden] = True
    missing = np.isnan(box).any(axis=1)
    box[missing] = want_box[missing]
    frame = np.arange(start, end + 1)
    table = pa.table({
        "recording": pa.array([want["recording"][0].as_py()] * n, pa.string()),
        "clip_index": pa.array(np.full(n, want["clip_index"][0].as_py(), np.int32)),
        "frame": frame, "global_frame": frame + first_frame, "time_s": times_s[frame],
        "label": want["label"], "model_label": pa.array(model_label.tolist(), pa.string()),
        "score": score, "x1": box[:, 0], "y1": box[:, 1], "x2": box[:, 2], "y2": box[:, 3],
        "track_id": pa.array(np.full(n, tid, np.int32)), "hidden": hidden,
        "source": pa.array(source.tolist(), pa.string()), "attributes": want["attributes"]})
    return table.cast(TRACKS_FILE_SCHEMA), counts
