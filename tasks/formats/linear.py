"""What the formats of tools that interpolate linearly between keyframes share (CVAT and
Label Studio): our tracks as runs of frames each tool track covers, and, reading back, a
tool's runs joined into our keyframes (`keyframe_table`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.formats.base import ClipInfo
from tasks.errors import FormatError
from tasks.formats.native import ROW_COLUMNS
from tasks.formats.native import keyframe_table as rows_table
from tasks.annotations.keyframes import BOX, check_keyframes, expand, sort_tracks, track_starts


class TrackFrames(NamedTuple):
    """One track, every frame from its start to its end, as `expand` gives them."""

    track_id: int
    frame: np.ndarray  # int64
    label: list[str]
    attributes: list[str]  # canonical JSON
    hidden: np.ndarray
    box: np.ndarray  # (n, 4) float64
    key: np.ndarray  # frames a linear tool must get as keyframes to show the same states
    score: float | None  # mean score of the track's keyframes


def track_frames(keyframes: pa.Table, clip: ClipInfo) -> list[TrackFrames]:
    table = sort_tracks(keyframes)
    if table.num_rows == 0:
        return []
    check_keyframes(table)
    clips = set(zip(table["recording"].to_pylist(), table["clip_index"].to_pylist()))
    if clips != {(clip.recording, clip.clip_index)}:
        raise ValueError(f"keyframes of {sorted(clips)} given for clip {clip.recording!r} "
                         f"{clip.clip_index}")
    if pc.max(pc.fill_null(table["end_frame"], 0)).as_py() >= clip.frames:
        raise ValueError(f"a track ends after the clip's last frame {clip.frames - 1}")
    states = expand(table, {(clip.recording, clip.clip_index): clip.frames})
    kf_frame, st_frame = table["frame"].to_numpy(), states["frame"].to_numpy()
    modes = np.asarray(table["mode"].to_pylist(), object)
    hidden = states["hidden"].to_numpy(zero_copy_only=False)
    box = np.column_stack([states[c].to_numpy() for c in BOX])
    label, attrs = states["label"].to_pylist(), states["attributes"].to_pylist()
    kf_bounds = [*track_starts(table), table.num_rows]
    st_bounds = [*track_starts(states), states.num_rows]
    out = []
    for a, b, c, d in zip(kf_bounds, kf_bounds[1:], st_bounds, st_bounds[1:]):
        frames = st_frame[c:d]
        key = np.zeros(d - c, bool)
        key[kf_frame[a:b] - frames[0]] = True
        at = np.searchsorted(kf_frame[a:b], frames, side="right") - 1
        held = (modes[a:b][at] == "none") & ~hidden[c:d]
        key[:-1] |= held[:-1] & key[1:]
        score = pc.mean(table["score"].slice(a, b - a)).as_py()
        out.append(TrackFrames(int(table["track_id"][a].as_py()), frames, label[c:d],
                               attrs[c:d], hidden[c:d], box[c:d], key, score))
    return out


def runs(track: TrackFrames, by_attributes: bool) -> list[tuple[int, int]]:
    """Index ranges [a, b) of one label (and one attributes value)."""
    cut = [i for i in range(1, len(track.frame)) if track.label[i] != track.label[i - 1]
           or (by_attributes and track.attributes[i] != track.attributes[i - 1])]
    bounds = [0, *cut, len(track.frame)]
    return list(zip(bounds[:-1], bounds[1:]))


class Key(NamedTuple):
    frame: int
    box: tuple[float, float, float, float]
    hidden: bool
    label: str
    attributes: str  # canonical JSON
    source: str = "interpolated"
    score: float | None = None


class Run(NamedTuple):
    """A piece of one of our tracks as a tool holds it (a CVAT track, a Label Studio region)."""

    keys: list[Key]  # sorted by frame
    end: int | None  # last visible frame; None: to the clip's end
    where: str  # names it in error messages


def _cut(keys: list[Key], frame: int, toward: tuple | None) -> list[Key]:
    """The keys before ``frame``. The tool interpolated from the last visible key towards the
    first key dropped; where the expansion would go elsewhere (``toward``, or the held box),
    the box the tool showed on the frame before is kept as a key."""
    kept = [k for k in keys if k.frame < frame]
    gone = [k for k in keys if k.frame >= frame]
    if kept and gone and not kept[-1].hidden:
        k, d = kept[-1], gone[0]
        if d.frame - 1 > k.frame and d.box != (k.box if toward is None else toward):
            t = (d.frame - 1 - k.frame) / (d.frame - k.frame)
            kept.append(k._replace(frame=d.frame - 1,
                                   box=tuple(a + (b - a) * t for a, b in zip(k.box, d.box))))
    return kept


def _join(runs_: list[Run], track_id: int) -> tuple[list[Key], int | None]:
    runs_ = sorted(runs_, key=lambda r: r.keys[0].frame)
    keys: list[Key] = []
    for run, nxt in zip(runs_, runs_[1:]):
        s = nxt.keys[0].frame
        late = [k for k in run.keys if k.frame > s or (k.frame == s and not k.hidden)]
        if run.end is None or run.end >= s or late or run.keys[0].frame >= s:
            raise FormatError(f"track {track_id}: {run.where} and {nxt.where} overlap at "
                              f"frame {s}")
        keys += _cut(run.keys, s, nxt.keys[0].box)  # drops a closing outside key on s
        if not keys[-1].hidden and run.end + 1 < s:
            keys.append(keys[-1]._replace(frame=run.end + 1, hidden=True))
    keys += runs_[-1].keys
    j = len(keys)
    while j and keys[j - 1].hidden:  # hidden to the end is ended
        j -= 1
    end = runs_[-1].end
    if j < len(keys):
        end, keys = keys[j].frame - 1, _cut(keys, keys[j].frame, None)
    while keys and keys[0].hidden:  # a track cannot start hidden
        keys = keys[1:]
    return keys, end


def _kind(k: Key, prev: Key | None, end: int) -> str:  # precedence as in `KINDS`
    if prev is None or k.frame == end:
        return "start" if prev is None else "end"
    if k.hidden != prev.hidden:
        return "hidden" if k.hidden else "shown"
    return "label" if (k.label, k.attributes) != (prev.label, prev.attributes) else "compacted"


def keyframe_table(found: list[tuple[int | None, Run]], clip: ClipInfo) -> pa.Table:
    """Our keyframes from a tool's runs, each with our track id (None: a new track, numbered
    after the largest id in file order). Runs of one id are joined into one track."""
    objects: dict[int, list[Run]] = {}
    for track_id, run in found:
        if track_id is not None:
            objects.setdefault(track_id, []).append(run)
    new = max(max(objects, default=0) + 1, clip.new_track_ids_from or 0)
    for run in (run for track_id, run in found if track_id is None):
        objects[new], new = [run], new + 1
    cols: dict[str, list] = {name: [] for name in ROW_COLUMNS}
    for track_id in sorted(objects):
        keys, end = _join(objects[track_id], track_id)
        for i, k in enumerate(keys):
            kind = _kind(k, keys[i - 1] if i else None, clip.frames - 1 if end is None else end)
            for name, value in (("track_id", track_id), ("frame", k.frame), ("label", k.label),
                                *zip(BOX, k.box), ("hidden", k.hidden), ("kind", kind),
                                ("mode", "linear"), ("end_frame", end),
                                ("attributes", k.attributes), ("source", k.source),
                                ("score", k.score)):
                cols[name].append(value)
    table = rows_table(cols, clip)
    try:
        check_keyframes(table)
    except ValueError as e:
        raise FormatError(f"the tracks read break the keyframe rules: {e}") from e
    return table
