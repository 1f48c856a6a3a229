"""Dataloop video annotations: one item JSON per clip, ``{"filename", "metadata",
"annotations": [...]}``, as dtlpy writes it (``AnnotationCollection.download`` with JSON) and
reads it on upload (``items.upload(local_annotations_path=...)`` and
``item.annotations.upload(path)`` both take ``json.load(f)["annotations"]``).

One annotation per track (``metadata.system.objectId`` = track id). Its start frame is the
annotation itself (``coordinates``, ``label``, ``metadata.system.attributes``); every later
state is a snapshot in ``metadata.system.snapshots_`` with its own ``label``, ``data`` (box
points), ``namedAttributes``, ``objectVisible`` and ``fixed``; ``endFrame`` is the last frame.

Dataloop does not interpolate in its JSON: a frame with no snapshot is a copy of the last
snapshot before it (dtlpy ``entities/reflect_dict.py``, ``ReflectDict.__getitem__`` with
``Annotation.on_access``). Our linear interpolation is therefore written out: our keyframes
become ``fixed: true`` snapshots (so that an edit in the studio only moves the frames between
two of them), and every other frame whose state differs from the frame before becomes a
``fixed: false`` snapshot, dtlpy's own form for interpolated frames. A reader that follows
Dataloop's rule reproduces every frame; the SDK and the upload path drop only snapshots equal
to the previous one (``Annotation.add_frame``, ``Annotations._annotation_encoding``).

`read` follows the same rule and then returns the fewer keyframes of two exact forms: every
snapshot held (mode ``none``), or linear keyframes where unfixed snapshots lying within
0.001 px of the line between their neighbours are folded back into the interpolation. Boxes
are written as the shortest decimals of their float32 values (exact for keyframes, under
0.001 px for interpolated frames). Dataloop keeps no reason for a keyframe, so kinds are
read as implied (start, hidden, shown, label, else compacted); ``source`` is ``human`` with
score 1 for fixed snapshots of a person's annotation (``automated: false``), else
``interpolated`` with no score.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.formats.base import ClipInfo
from tasks.errors import FormatError
from tasks.formats.native import ROW_COLUMNS, keyframe_table, shortest_f32
from tasks.annotations.keyframes import BOX, attributes_json, expand, sort_tracks, track_starts

NAME = "dataloop"
EXTENSION = ".json"
FOLD_PX = 1e-3  # unfixed snapshots this close to the interpolation line are not keyframes


def _points(box) -> list[dict[str, float]]:
    return [{"x": shortest_f32(box[0]), "y": shortest_f32(box[1]), "z": 0},
            {"x": shortest_f32(box[2]), "y": shortest_f32(box[3]), "z": 0}]


def write(keyframes: pa.Table, clip: ClipInfo) -> bytes:
    table = sort_tracks(keyframes)
    bounds = list(track_starts(table)) + [table.num_rows]
    annotations = [_annotation(table.slice(a, b - a), clip) for a, b in zip(bounds, bounds[1:])]
    fps = float(clip.fps)
    doc = {"filename": "/" + PurePosixPath(clip.video_uri).name,
           "metadata": {"fps": fps, "system": {
               "mimetype": "video/webm", "fps": fps, "width": clip.width, "height": clip.height,
               "ffmpeg": {"width": clip.width, "height": clip.height,
                          "nb_read_frames": clip.frames}}},
           "annotations": annotations}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _annotation(track: pa.Table, clip: ClipInfo) -> dict[str, Any]:
    states = expand(track, {(clip.recording, clip.clip_index): clip.frames})
    frames = states["frame"].to_numpy()
    box = np.column_stack([states[c].to_numpy() for c in BOX]).astype(np.float32)
    labels, attrs = states["label"].to_pylist(), states["attributes"].to_pylist()
    hidden = states["hidden"].to_numpy(zero_copy_only=False)
    # A snapshot wherever the state differs from the frame before (what reflection would copy).
    changed = np.ones(len(frames), bool)
    changed[1:] = ((box[1:] != box[:-1]).any(axis=1) | (hidden[1:] != hidden[:-1])
                   | (np.array(labels[1:], object) != np.array(labels[:-1], object))
                   | (np.array(attrs[1:], object) != np.array(attrs[:-1], object)))
    fixed = np.isin(frames, track["frame"].to_numpy())
    snapshots = [{"frame": int(frames[i]), "fixed": bool(fixed[i]), "label": labels[i],
                  "type": "box", "objectVisible": not hidden[i], "data": _points(box[i]),
                  "namedAttributes": json.loads(attrs[i])}
                 for i in np.flatnonzero(changed | fixed)[1:]]
    start, end = int(frames[0]), int(frames[-1])
    return {"type": "box", "label": labels[0], "coordinates": _points(box[0]),
            # dtlpy's Annotation.from_json indexes these four: an upload leaves them null.
            "creator": None, "createdAt": None, "updatedBy": None, "updatedAt": None,
            "metadata": {"system": {
                "objectId": str(track["track_id"][0].as_py()), "automated": True,
                "frame": start, "endFrame": end, "startTime": float(start / clip.fps),
                "endTime": float(end / clip.fps), "attributes": json.loads(attrs[0]),
                "snapshots_": snapshots}}}


def _box(points: Any, where: str) -> list[float]:
    """(x1, y1, x2, y2) of a box's two points; like dtlpy's ``Box.from_json`` it takes the min
    and max, so the order of the points does not matter."""
    ok = (isinstance(points, list) and len(points) in (2, 3)
          and all(isinstance(p, dict) for p in points[:2]))
    if ok and len(points) == 3 and points[2] not in (0, 0.0):
        raise FormatError(f"{where}: a rotated box (angle {points[2]!r}) cannot be read")
    xy = [p.get(k) for p in points[:2] for k in ("x", "y")] if ok else []
    if not ok or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                         and np.isfinite(v) for v in xy):
        raise FormatError(f"{where}: expected two points {{x, y}} with finite numbers, got "
                          f"{json.dumps(points)[:120]}")
    return [min(xy[0], xy[2]), min(xy[1], xy[3]), max(xy[0], xy[2]), max(xy[1], xy[3])]


def _get(obj: dict, key: str, kinds: type | tuple, where: str, default: Any = ...) -> Any:
    """obj[key] checked against ``kinds`` (a bool is not an int here); ``default`` if absent."""
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    value = obj.get(key, default)
    if value is ... or not isinstance(value, kinds) or (isinstance(value, bool)
                                                        and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise FormatError(f"{where}.{key}: expected {names}, got {json.dumps(obj.get(key))[:80]}")
    return value


def read(data: bytes, clip: ClipInfo) -> pa.Table:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"Dataloop file is not valid JSON: {e}") from e
    items = doc.get("annotations") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise FormatError('Dataloop file: expected {"annotations": [...]} or a list of annotations')
    cols: dict[str, list[Any]] = {name: [] for name in ROW_COLUMNS}
    seen: set[int] = set()
    for i, ann in enumerate(items):
        where = f"annotations[{i}]"
        if not isinstance(ann, dict) or ann.get("type") != "box":
            raise FormatError(f"{where}: only box annotations can be read, got type "
                              f"{ann.get('type') if isinstance(ann, dict) else ann!r}")
        system = _get(_get(ann, "metadata", dict, where), "system", dict, where + ".metadata")
        where_s = where + ".metadata.system"
        object_id = _get(system, "objectId", (str, int), where_s)
        if not str(object_id).isdigit() or int(object_id) > 2**31 - 1:
            raise FormatError(f"{where_s}.objectId: expected a number, got {object_id!r}")
        track_id = int(object_id)
        if track_id in seen:
            raise FormatError(f"{where}: objectId {track_id} is used by two annotations")
        seen.add(track_id)
        start = _get(system, "frame", int, where_s)
        end = _get(system, "endFrame", int, where_s)
        if not 0 <= start <= end < clip.frames:
            raise FormatError(f"{where} (object {track_id}): frames {start} to {end} are not "
                              f"inside the clip's 0 to {clip.frames - 1}")
        states = [(start, _box(ann.get("coordinates"), where + ".coordinates"),
                   _get(ann, "label", str, where), True, True,
                   _get(system, "attributes", (dict, type(None)), where_s, None))]
        for j, snap in enumerate(_get(system, "snapshots_", list, where_s, [])):
            at = f"{where_s}.snapshots_[{j}]"
            if not isinstance(snap, dict):
                raise FormatError(f"{at}: expected an object")
            frame = _get(snap, "frame", int, at)
            if not start < frame <= end:
                raise FormatError(f"{at} (object {track_id}): frame {frame} is not after the "
                                  f"start frame {start} and at most endFrame {end}")
            states.append((frame, _box(snap.get("data"), at + ".data"),
                           _get(snap, "label", str, at),
                           _get(snap, "objectVisible", bool, at, True),
                           _get(snap, "fixed", bool, at, False),
                           _get(snap, "namedAttributes", (dict, type(None)), at, None)))
        states.sort(key=lambda s: s[0])
        frames = [s[0] for s in states]
        if len(set(frames)) < len(frames):
            dup = next(f for f, g in zip(frames, frames[1:]) if f == g)
            raise FormatError(f"{where} (object {track_id}): two snapshots on frame {dup}")
        if any(not s[2] for s in states):
            raise FormatError(f"{where} (object {track_id}): a snapshot has an empty label")
        human = system.get("automated") is False  # a person's annotation, not a model's
        rows = _keyframes(states, end)
        fixed = rows.pop("fixed")
        rows.update(track_id=[track_id] * len(fixed),
                    end_frame=[None if end == clip.frames - 1 else end] * len(fixed),
                    source=["human" if human and f else "interpolated" for f in fixed],
                    score=[1.0 if human and f else None for f in fixed])
        for name in ROW_COLUMNS:
            cols[name].extend(rows[name])
    return sort_tracks(keyframe_table(cols, clip))


def _keyframes(states: list[tuple], end: int) -> dict[str, list[Any]]:
    """One track's keyframes from its sorted snapshots (frame, box, label, visible, fixed,
    attributes): the fewer of the held form and the folded linear form, both exact."""
    frame = np.array([s[0] for s in states])
    box = np.array([s[1] for s in states], np.float64)
    visible = np.array([s[3] for s in states])
    fixed = np.array([s[4] for s in states])
    tag = [(s[2], attributes_json(s[5])) for s in states]
    n = len(states)
    # Linear form: snapshots, plus a copy of snapshot k on the frame before the next one
    # wherever Dataloop holds a box that then changes (so interpolation there is flat).
    nxt = np.r_[frame[1:], end + 1]
    hold = visible & (nxt > frame + 1) & np.r_[(box[1:] != box[:-1]).any(axis=1), False]
    src = np.sort(np.r_[np.arange(n), np.flatnonzero(hold)])
    copy = np.r_[False, src[1:] == src[:-1]]
    at = np.where(copy, nxt[src] - 1, frame[src])
    change = np.array([True] + [visible[k] != visible[k - 1] or tag[k] != tag[k - 1]
                                for k in range(1, n)])
    required = ~copy & (fixed[src] | ~visible[src] | change[src])
    required[0] = True
    target = box[np.searchsorted(frame, np.arange(frame[0], end + 1), side="right") - 1]
    keep, a = [0], 0
    for c in range(1, len(src)):  # greedy: drop c when a -> c + 1 reproduces every frame
        if required[c] or not _fits(at, box[src], target, a, c + 1, end):
            keep.append(c)
            a = c
    linear = len(keep) <= n
    pick = src[keep] if linear else np.arange(n)
    kinds = ["start"] + ["hidden" if not visible[k] else "shown" if not visible[p] else
                         "label" if tag[k] != tag[p] else "compacted"
                         for p, k in zip(pick, pick[1:])]
    return {"frame": (at[keep] if linear else frame).tolist(),
            "label": [states[k][2] for k in pick],
            **{c: box[pick, i].tolist() for i, c in enumerate(BOX)},
            "hidden": (~visible[pick]).tolist(), "kind": kinds,
            "mode": ["linear" if linear else "none"] * len(pick),
            "attributes": [tag[k][1] for k in pick],
            "fixed": (fixed[pick] & ~copy[keep] if linear else fixed).tolist()}


def _fits(at: np.ndarray, boxes: np.ndarray, target: np.ndarray, a: int, d: int,
          end: int) -> bool:
    """Interpolating from keyframe a to keyframe d (holding a to the end when there is no d)
    gives every frame from a to d within FOLD_PX of ``target`` (boxes from frame at[0] on)."""
    if d >= len(at):
        return bool((np.abs(target[at[a] - at[0]:end - at[0] + 1] - boxes[a]) <= FOLD_PX).all())
    f = np.arange(at[a], at[d])
    line = boxes[a] + (boxes[d] - boxes[a]) * ((f - at[a]) / (at[d] - at[a]))[:, None]
    return bool((np.abs(line - target[f - at[0]]) <= FOLD_PX).all())
