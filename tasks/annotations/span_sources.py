"""Span files as annotation tools write them, turned into the spans file's columns
(recording, start_s, end_s, label, note) that `tasks.annotations.spans.load_spans` checks.

- **Prodigy** ``db-out`` JSONL (``.jsonl``): one example per line; an accepted example's
  ``audio_spans`` (``start``/``end`` in seconds of the media, ``label``) are spans. The
  recording is ``meta.recording`` when the task has it, else the media file's name without
  its extension (``video``, ``audio`` or ``path``). Rejected and ignored examples give none.
- **Label Studio** timeline labels (a task list, ``.json``, whose results have
  ``type: timelinelabels``): ``value.ranges`` are 1-based inclusive frame ranges of the
  task's video at ``data.fps`` (the editor's ``frameRate``), so frame ``n`` starts at
  ``(n - 1) / fps`` and a range ``[a, b]`` is ``[(a - 1) / fps, b / fps)``. The recording is
  ``data.recording``, else the video's file name without its extension. A submitted
  annotation wins over a prediction; skipped tasks give none.
- Either, on a recording's **review video** (`tasks.annotations.review_video`: a task's
  ``data.review_video``, a Prodigy example's ``meta.review_video``, or media named
  ``<recording>.part-NNN.webm``): times are the recording's, through the part's frame map. A
  Label Studio range covers the frames whose nearest frame slot at ``data.fps`` is in it
  (WebM's millisecond timestamps then never shift a frame into the next slot), and becomes
  the recording's times from its first frame to the frame after its last.
"""

from __future__ import annotations

import json
import math
import posixpath
from fractions import Fraction
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from tasks.errors import SpanError

Columns = dict[str, list]


def prodigy_columns(data: bytes, where: str, videos=None) -> Columns:
    rows: list[tuple] = []
    for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except ValueError as e:
            raise SpanError(f"{where}: line {n}: not JSON ({e})") from None
        if not isinstance(example, dict):
            raise SpanError(f"{where}: line {n}: expected an object")
        if example.get("answer", "accept") != "accept":
            continue
        spans = example.get("audio_spans") or []
        if not isinstance(spans, list):
            raise SpanError(f"{where}: line {n}: audio_spans is not a list")
        media = example.get("video") or example.get("audio") or example.get("path")
        meta = example.get("meta")
        part = _review_part(meta.get("review_video") if isinstance(meta, dict) else None, media,
                            videos, f"{where}: line {n}")
        recording = part.recording if part else _recording(meta, media, f"{where}: line {n}")
        for j, span in enumerate(spans):
            at = f"line {n} audio_spans[{j}]"
            if not isinstance(span, dict):
                raise SpanError(f"{where}: {at}: expected an object")
            start, end = span.get("start"), span.get("end")
            if part and all(_number(v) for v in (start, end)):
                start, end = part.recording_time(start), part.recording_time(end)
            rows.append((recording, start, end, span.get("label"), at))
    return _columns(rows, where)


def is_timeline_export(items: Any) -> bool:
    """Whether a JSON document is a Label Studio task list with timeline labels."""
    return isinstance(items, list) and any(
        isinstance(task, dict) and isinstance(task.get("data"), dict)
        and (bool(task["data"].get("review_video"))  # ours, even with nothing labelled
             or any(isinstance(r, dict) and r.get("type") == "timelinelabels"
                    for group in ("annotations", "predictions")
                    for item in (task.get(group) or []) if isinstance(item, dict)
                    for r in (item.get("result") or [])))
        for task in items)


def label_studio_timeline_columns(tasks: list, where: str, videos=None) -> Columns:
    rows: list[tuple] = []
    for i, task in enumerate(tasks):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise SpanError(f"{where}: task [{i}]: expected an object with data")
        result = _result(task)
        if not result:
            continue
        data = task["data"]
        fps = data.get("fps")
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
            raise SpanError(f"{where}: task [{i}]: data.fps {fps!r} is not a frame rate; the "
                            "ranges are frames of the video at that rate")
        rate = Fraction(fps).limit_denominator(1_001_000)  # 29.97002997... is 30000/1001
        part = _review_part(data.get("review_video"), data.get("video"), videos,
                            f"{where}: task [{i}]")
        recording = part.recording if part else data.get("recording") or _recording(
            None, data.get("video"), f"{where}: task [{i}]")
        for j, region in enumerate(result):
            if not isinstance(region, dict) or region.get("type") != "timelinelabels":
                continue
            value = region.get("value") or {}
            labels = value.get("timelinelabels")
            if not (isinstance(labels, list) and len(labels) == 1):
                raise SpanError(f"{where}: task [{i}] region {region.get('id')!r}: "
                                f"timelinelabels {labels!r} is not one label")
            for k, frames in enumerate(value.get("ranges") or []):
                at = f"task [{i}] region {region.get('id')!r} ranges[{k}]"
                a, b = (frames.get("start"), frames.get("end")) if isinstance(frames, dict) \
                    else (None, None)
                if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                           for v in (a, b)) or b < a:
                    raise SpanError(f"{where}: {at}: {frames!r} is not a 1-based frame range "
                                    "(start <= end)")
                if part is None:
                    rows.append((recording, float((a - 1) / rate), float(b / rate), labels[0], at))
                    continue
                if abs(fps - part.fps) > 1e-6 * part.fps:  # data.fps is a float of it
                    raise SpanError(f"{where}: task [{i}]: data.fps {fps} is not the review "
                                    f"video's rate {part.fps}: the ranges would be misread")
                first, stop = part.frames_in_range(a, b)
                if first >= len(part.part_us):
                    raise SpanError(f"{where}: {at}: frames {a}..{b} are after the last frame "
                                    f"of {part.recording} part {part.part}")
                # A range over a gap holds no frame: kept inside the gap, so it is reported
                # as labelling none.
                span = part.recording_span(first, stop) or part.gap_span(
                    first, float(max(a - 1.5, 0) / part.fps), float((b - 0.5) / part.fps))
                rows.append((recording, *span, labels[0], at))
    return _columns(rows, where)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _review_part(name: Any, media: Any, videos, where: str):
    """The review video part a task shows (`tasks.annotations.review_frames.PartFrames`), or
    None for any other video."""
    if not (isinstance(name, str) and name):
        from tasks.annotations.review_frames import part_of_media

        name = part_of_media(media) if isinstance(media, str) else None
        if name is None:
            return None
    if videos is None:
        raise SpanError(f"{where}: on review video {name!r}: give the spans file with the OUT "
                        "that holds that video (`preannotate export ... --spans`)")
    return videos.part(name, where)


def _result(task: dict) -> list:
    annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
    submitted = [a for a in annotations if not a.get("was_cancelled")]
    if submitted:
        return submitted[-1].get("result") or []
    if annotations:  # skipped
        return []
    predictions = [p for p in task.get("predictions") or [] if isinstance(p, dict)]
    return predictions[-1].get("result") or [] if predictions else []


def _recording(meta: Any, media: Any, where: str) -> str:
    if isinstance(meta, dict) and isinstance(meta.get("recording"), str) and meta["recording"]:
        return meta["recording"]
    if not isinstance(media, str) or not media:
        raise SpanError(f"{where}: no recording: give meta.recording or the media's path")
    parsed = urlparse(media)
    path = parse_qs(parsed.query).get("d", [parsed.path])[0]  # Label Studio's local files
    name = posixpath.splitext(posixpath.basename(unquote(path)))[0]
    if not name:
        raise SpanError(f"{where}: no recording name in {media!r}")
    return name


def _columns(rows: list[tuple], where: str) -> Columns:
    """Columns for `load_spans`; the note says where each span came from."""
    for recording, start, end, label, at in rows:
        for name, value in (("start", start), ("end", end)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise SpanError(f"{where}: {at}: {name} {value!r} is not a number of seconds")
        if not isinstance(label, str) or not label.strip():
            raise SpanError(f"{where}: {at}: label {label!r} is not a label")
    return {"recording": [r[0] for r in rows], "start_s": [float(r[1]) for r in rows],
            "end_s": [float(r[2]) for r in rows], "label": [r[3] for r in rows],
            "note": [r[4] for r in rows]}
