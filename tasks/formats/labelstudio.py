"""Label Studio video object tracking: one task per clip with our tracks as a prediction of
``videorectangle`` regions, and the labeling config that goes with it.

How Label Studio reads a region (label-studio ``web/libs/editor/src/regions/VideoRegion.js``
and ``VideoRectangleRegion.js``; label-studio-sdk ``postprocessing/video.py`` expands the same
way offline):
- ``sequence`` holds keyframes; ``frame`` is 1-based (the video tag seeks frame n to
  ``(n - 1) / frameRate``), so our frame f is ``f + 1``. x, y, width, height are percent of
  the frame; between two keyframes every prop is interpolated linearly (`interpolateProp`),
  which on x and width is the same as on x1 and x2; after the last keyframe the box is held.
- ``enabled: false`` ends the lifespan after its keyframe: the keyframe itself is shown
  (`isInLifespan`: ``frame === targetFrame && !enabled`` is true) and nothing after it until
  the next keyframe, which shows the object again. So a hidden range [h, s) is written as a
  disabled keyframe on h - 1 (the last visible frame) and a keyframe on s; a track's end is a
  disabled keyframe on its last frame.
- A region has one ``labels`` value, so each run of one label and one attributes value is a
  region; the attributes go in the region's ``meta.attributes``, which the editor keeps
  (`Result.serialize` merges ``meta``). Region ids are ``track-<id>`` (``track-<id>-<n>`` for
  the n-th run), which `read` maps back; regions with other ids (drawn by a reviewer) get new
  track ids after the largest one. Label Studio cannot show a run that is hidden throughout:
  a label or attribute change while hidden takes effect where the object is shown again.
- ``time`` is informational (the editor recomputes it as ``frame / frameRate`` when it saves
  and never reads it): we write the frame's decoded timestamp, ``clip.time_of(f)``, which is
  where the editor seeks for that frame on a constant-rate WebM and stays right on others.
  The config reads the rate from the task (``frameRate="$fps"``), as the editor maps time to
  frames with it (24 by default).
Box values are written in full float precision: a round trip is exact to float32 (1e-4 px).

A task names its clip in its data (``clip_id``, the clip's stable id, with ``recording``,
``clip_index`` and ``clip`` for people), so a reader finds the clip's task in any export of
the project (whole or partial, whatever video URLs it carries) and knows a file is that clip's
even when the reviewer deleted every region. An export lists what a task holds as the server
keeps it: annotations (``was_cancelled`` when the reviewer skipped the task) and predictions,
as objects or, in the server's task lists, as ids only.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection
from typing import Any
from xml.sax.saxutils import quoteattr

import pyarrow as pa

from tasks.formats.base import ClipInfo
from tasks.errors import FormatError, NotReviewedError
from tasks.formats.linear import Key, Run, TrackFrames, keyframe_table, runs, track_frames
from tasks.annotations.keyframes import attributes_json

NAME = "labelstudio"
EXTENSION = ".json"
BOX_NAME, VIDEO_NAME, LABELS_NAME = "box", "video", "videoLabels"
TIMELINE_NAME = "activity"  # the TimelineLabels control of `timeline_config`
MODEL_VERSION = "preannotate"
REGION_ID = re.compile(r"track-(\d+)(?:-\d+)?")
_HUMAN_ORIGINS = ("manual", "prediction-changed")


def labeling_config(labels: list[str]) -> str:
    """The project's labeling config for these labels."""
    items = "".join(f"\n    <Label value={quoteattr(label)}/>" for label in labels)
    return (f'<View>\n  <Video name="{VIDEO_NAME}" value="$video" frameRate="$fps"/>\n'
            f'  <VideoRectangle name="{BOX_NAME}" toName="{VIDEO_NAME}"/>\n'
            f'  <Labels name="{LABELS_NAME}" toName="{VIDEO_NAME}">{items}\n  </Labels>\n'
            "</View>\n")


def timeline_config(labels: list[str]) -> str:
    """A labeling config for time spans over a whole video (``TimelineLabels``): one label
    per path of a hierarchical labels file (``Task 1/Sub Task 1.2``), parents included, in the
    file's order. Ranges come back as frames at ``$fps`` (`tasks.annotations.span_sources`)."""
    items = "".join(f"\n    <Label value={quoteattr(label)}/>" for label in labels)
    return (f'<View>\n  <Video name="{VIDEO_NAME}" value="$video" frameRate="$fps"/>\n'
            f'  <TimelineLabels name="{TIMELINE_NAME}" toName="{VIDEO_NAME}">{items}\n'
            "  </TimelineLabels>\n</View>\n")


def _sequence(t: TrackFrames, a: int, b: int, clip: ClipInfo) -> list[dict[str, Any]]:
    """Keyframes of frames [a, b) of a track: ours, and the first and last frame of every
    shown range (the last one disabled: the lifespan ends after it)."""
    sequence = []
    for i in range(a, b):
        last = i + 1 == b or t.hidden[i + 1]
        if not t.hidden[i] and (t.key[i] or last or i == a or t.hidden[i - 1]):
            x1, y1, x2, y2 = t.box[i]
            sequence.append({
                "frame": int(t.frame[i]) + 1, "enabled": not last,
                "x": x1 / clip.width * 100, "y": y1 / clip.height * 100,
                "width": (x2 - x1) / clip.width * 100, "height": (y2 - y1) / clip.height * 100,
                "rotation": 0, "time": clip.time_of(int(t.frame[i]))})
    return sequence


def write(keyframes: pa.Table, clip: ClipInfo) -> bytes:
    duration = clip.time_of(clip.frames - 1) + float(1 / clip.fps)
    regions, scores = [], []
    for t in track_frames(keyframes, clip):
        shown = [(a, b) for a, b in runs(t, by_attributes=True) if not t.hidden[a:b].all()]
        for n, (a, b) in enumerate(shown):
            region = {"id": f"track-{t.track_id}" + (f"-{n + 1}" if n else ""),
                      "type": "videorectangle", "from_name": BOX_NAME, "to_name": VIDEO_NAME,
                      "origin": "prediction",
                      "value": {"framesCount": clip.frames, "duration": duration,
                                "sequence": _sequence(t, a, b, clip), "labels": [t.label[a]]}}
            if t.score is not None:  # float32 scores: 6 digits are all they hold
                region["score"] = round(t.score, 6)
                scores.append(region["score"])
            if t.attributes[a] != "{}":
                region["meta"] = {"attributes": json.loads(t.attributes[a])}
            regions.append(region)
    prediction: dict[str, Any] = {"model_version": MODEL_VERSION, "result": regions}
    if scores:
        prediction["score"] = round(sum(scores) / len(scores), 6)
    task = {"data": task_data(clip), "predictions": [prediction]}
    return json.dumps([task], ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def task_data(clip: ClipInfo) -> dict[str, Any]:
    """A task's ``data``: the video the editor loads, its rate, and the clip it is."""
    data: dict[str, Any] = {"video": clip.video_url or clip.video_uri, "fps": float(clip.fps)}
    if clip.clip_id:
        data.update(clip_id=clip.clip_id, recording=clip.recording, clip_index=clip.clip_index,
                    clip=clip.name)
    return data


def _task(doc: Any, clip: ClipInfo) -> tuple[dict, str, bool]:
    """The clip's task in a task list, where it is, and whether its data names the clip."""
    tasks = doc if isinstance(doc, list) else [doc]
    if not all(isinstance(t, dict) for t in tasks):
        raise FormatError("expected a JSON list of Label Studio tasks (objects)")
    data = [t["data"] if isinstance(t.get("data"), dict) else {} for t in tasks]
    if clip.clip_id and any(d.get("clip_id") is not None for d in data):
        mine = [i for i, d in enumerate(data) if d.get("clip_id") == clip.clip_id]
        if len(mine) != 1:
            raise FormatError(f"{len(mine)} of {len(tasks)} tasks are clip {clip.clip_id} "
                              f"({clip.recording}/{clip.name}: data.clip_id); expected one")
        return tasks[mine[0]], f"[{mine[0]}]", True
    urls = {clip.video_uri, clip.video_url} - {None}
    mine = [i for i, d in enumerate(data) if d.get("video") in urls]
    if len(mine) > 1 or (not mine and len(tasks) != 1):
        raise FormatError(f"{len(mine)} of {len(tasks)} tasks have data.video = "
                          f"{clip.video_uri!r}; expected one")
    i = mine[0] if mine else 0
    return tasks[i], f"[{i}]", False


def _result(task: dict, where: str) -> tuple[list, str]:
    """The person's submitted annotation; for a task nobody annotated, the prediction
    written with it (our own file). A task skipped, or not submitted and holding its
    predictions as ids only (the server's task lists), is `NotReviewedError`."""
    found = task.get("annotations") or []
    if not isinstance(found, list):
        raise FormatError(f"{where}.annotations: not a list")
    annotations = [(i, a) for i, a in enumerate(found) if isinstance(a, dict)]
    submitted = [(i, a) for i, a in annotations if not a.get("was_cancelled")]
    if len(submitted) > 1:
        raise FormatError(f"{where}.annotations: {len(submitted)} of them; keep one per task")
    if submitted:
        return _result_list(*submitted[0], f"{where}.annotations")
    task_id = f"Label Studio task {task['id']}" if "id" in task else f"task {where}"
    if annotations:  # every annotation was cancelled: the reviewer pressed Skip
        raise NotReviewedError(f"{task_id} was skipped by its reviewer: no result to apply",
                               skipped=True)
    predictions = task.get("predictions") or []
    if not isinstance(predictions, list):
        raise FormatError(f"{where}.predictions: not a list")
    objects = [(i, p) for i, p in enumerate(predictions) if isinstance(p, dict)]
    if len(objects) > 1:
        raise FormatError(f"{where}.predictions: {len(objects)} of them; keep one per task")
    if objects:
        return _result_list(*objects[0], f"{where}.predictions")
    if found or predictions:  # annotations or predictions as ids: the server's task list
        raise NotReviewedError(f"{task_id} has no submitted annotation yet (its predictions "
                               "are listed as ids only): submit it, then export again",
                               skipped=False)
    return [], where


def _result_list(i: int, item: dict, where: str) -> tuple[list, str]:
    if not isinstance(item.get("result"), list):
        raise FormatError(f"{where}[{i}]: not an object with a result list")
    return item["result"], f"{where}[{i}].result"


def names_clip(data: bytes, clip: ClipInfo) -> bool:
    """Whether ``data`` holds a task whose data names ``clip`` by its stable id: then a result
    with no region at all is that clip's, and means every track was deleted."""
    try:
        _, _, by_id = _task(json.loads(data), clip)
    except (ValueError, UnicodeDecodeError):
        return False
    return by_id


def _percent(item: dict, name: str, where: str) -> float:
    value = item.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FormatError(f"{where}.{name}: {value!r} is not a finite number")
    return float(value)


def _region(region: Any, where: str, clip: ClipInfo, labels: Collection[str] | None) -> Run:
    value = region.get("value") if isinstance(region, dict) else None
    if not isinstance(value, dict) or region.get("type") != "videorectangle":
        raise FormatError(f"{where}: not a videorectangle region with a value")
    label = value.get("labels")
    if label in (None, []) or label == [""]:
        raise FormatError(f"{where}: region {region.get('id')!r} has no label (a box drawn "
                          "before a label was chosen): give it one of "
                          f"{sorted(labels) if labels is not None else 'the config'}'s labels")
    if not (isinstance(label, list) and len(label) == 1 and isinstance(label[0], str)
            and label[0]) or (labels is not None and label[0] not in labels):
        raise FormatError(f"{where}.value.labels: {label!r} is not one label of "
                          f"{sorted(labels) if labels is not None else 'the config'}")
    meta = region.get("meta") or {}
    attributes = meta.get("attributes", {}) if isinstance(meta, dict) else meta
    if not isinstance(attributes, dict):
        raise FormatError(f"{where}.meta.attributes: {attributes!r} is not an object")
    attributes = attributes_json(attributes)
    sequence = value.get("sequence")
    if not isinstance(sequence, list) or not sequence:
        raise FormatError(f"{where}.value.sequence: not a non-empty list")
    items = []
    for j, item in enumerate(sequence):
        at = f"{where}.value.sequence[{j}]"
        frame = item.get("frame") if isinstance(item, dict) else None
        if isinstance(frame, bool) or not isinstance(frame, int) or not 1 <= frame <= clip.frames:
            raise FormatError(f"{at}.frame: {frame!r} is not a frame 1..{clip.frames}")
        x, y, w, h = (_percent(item, n, at) for n in ("x", "y", "width", "height"))
        if w < 0 or h < 0 or item.get("rotation", 0) != 0:
            raise FormatError(f"{at}: width {w}, height {h}, rotation {item.get('rotation')}: "
                              "boxes need width, height >= 0 and no rotation")
        if not isinstance(item.get("enabled", True), bool):
            raise FormatError(f"{at}.enabled: {item.get('enabled')!r} is not true or false")
        box = (x * clip.width / 100, y * clip.height / 100, (x + w) * clip.width / 100,
               (y + h) * clip.height / 100)
        items.append((frame - 1, box, item.get("enabled", True), at))
    items.sort(key=lambda it: it[0])
    score = region.get("score")
    source = ("human", 1.0) if region.get("origin") in _HUMAN_ORIGINS else (
        "interpolated", float(score) if isinstance(score, (int, float)) else None)
    keys = []
    for (f, box, enabled, at), nxt in zip(items, [*items[1:], None]):
        if nxt is not None and nxt[0] == f:
            raise FormatError(f"{at}: two keyframes on frame {f + 1}")
        keys.append(Key(f, box, False, label[0], attributes, *source))
        if not enabled and nxt is not None and f + 1 < nxt[0]:
            keys.append(Key(f + 1, box, True, label[0], attributes, *source))
    return Run(keys, None if items[-1][2] else items[-1][0], where)


def read(data: bytes, clip: ClipInfo, *, labels: Collection[str] | None = None) -> pa.Table:
    """Our keyframes from a Label Studio task list (ours, or an export with a person's
    annotation). ``labels``: the labels allowed (the config's); default: any."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"not JSON: {e}") from e
    task, where, _ = _task(doc, clip)
    result, where = _result(task, where)
    found = []
    for i, region in enumerate(result):
        run = _region(region, f"{where}[{i}]", clip, labels)
        match = REGION_ID.fullmatch(str(region.get("id", "")))
        found.append((int(match.group(1)) if match else None, run))
    return keyframe_table(found, clip)
