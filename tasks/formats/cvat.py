"""CVAT for video 1.1 XML, one file per clip, written as CVAT's own exporter writes a task
(cvat `cvat/apps/dataset_manager/formats/cvat.py`, `dump_as_cvat_interpolation`; frames from
`TrackManager.get_interpolated_shapes` in `annotation.py`).

What CVAT does, and so what we write for each track, frame by frame (`expand`):
- Visible frames: every one, ``keyframe="1"`` on our keyframes, ``keyframe="0"`` with the
  interpolated box between them (CVAT interpolates linearly between keyframes, towards an
  outside keyframe too, and holds the box after the last one). In mode ``none`` the frame
  before each keyframe is a keyframe too, so that linear interpolation holds the box.
- Hidden frames: the first is an ``outside="1"`` keyframe (its box is our hidden keyframe's);
  the hidden frames after it are not written, as CVAT writes none (`get_interpolated_shapes`
  drops non-keyframe outside shapes): datumaro then returns the outside marker and nothing
  until the object is shown again. Attribute changes while hidden are outside keyframes too.
- The end: an ``outside="1"`` keyframe on ``end + 1`` holding the last box, when that is a
  frame of the clip (as CVAT's ``shape.frame + frame_step < stop_frame``).
- Coordinates with 2 decimals (``"{:.2f}"``): boxes come back within `PRECISION_PX`, and so
  does every frame interpolated between them.

A CVAT track has one label, so a track that changes label is split into consecutive CVAT
tracks, each closed by an outside keyframe on the next one's first frame. One that starts
while hidden starts with an outside keyframe: datumaro and `read` keep it, CVAT drops leading
outside shapes when it splits a task into jobs (`_slice_track`), so there the new label
shows from where the object is shown again. CVAT numbers tracks 0, 1, ... in file order;
our track id goes in the immutable text attribute `TRACK_ATTRIBUTE` that every box carries
and every label declares: CVAT keeps it through import and export when the task's labels
declare it (`_import_track` drops undeclared attributes), datumaro returns it with each box
(its own ``track_id`` is CVAT's number, and ``track_id`` is a name it reserves, as are
``occluded``, ``outside``, ``keyframe``, ``rotation``). `read` joins the CVAT tracks that
carry one id back into one track; tracks without it (added by a reviewer) get new ids after
the largest one, in file order. Our attributes are per-box mutable attributes; their type
(checkbox, number, text) comes from the values and is declared in the labels, so `read`
restores it.

`read` takes what CVAT's own importer takes (`load_anno`): the ``keyframe="1"`` boxes. Tracks
and jobs export the same way; ``occluded`` is ignored (the box is visible). Kinds come from
the outside transitions and label or attribute changes; a box from a track whose CVAT source
is ``manual`` or ``semi-auto`` is a person's (``source="human"``).
"""

from __future__ import annotations

import json
import math
import posixpath
import re
import xml.etree.ElementTree as ET
from collections.abc import Collection
from typing import Any

import pyarrow as pa

from tasks.formats.base import ClipInfo
from tasks.errors import FormatError
from tasks.annotations.keyframes import attributes_json
from tasks.formats.linear import Key, Run, TrackFrames, keyframe_table, runs, track_frames

NAME = "cvat"
EXTENSION = ".xml"
TRACK_ATTRIBUTE = "preannotate_track"
PRECISION_PX = 0.005  # half of the last decimal CVAT writes
_RESERVED = {"occluded", "outside", "keyframe", "track_id", "rotation", TRACK_ATTRIBUTE}
_HUMAN_SOURCES = ("manual", "semi-auto")


# --- CVAT -----------------------------------------------------------------------------------


def _input_type(label: str, name: str, values: list) -> tuple[str, str, str]:
    """CVAT's (input_type, default_value, values) for one attribute's values."""
    if name in _RESERVED:
        raise FormatError(f"attribute {name!r} of label {label!r}: a name CVAT or datumaro "
                          f"reserves ({sorted(_RESERVED)})")
    if all(isinstance(v, bool) for v in values):
        return "checkbox", "false", "false"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        lo, hi = math.floor(min(values)), math.ceil(max(values))
        step = "1" if all(isinstance(v, int) for v in values) else "0.01"
        return "number", str(lo), f"{lo}\n{hi}\n{step}"
    if all(isinstance(v, str) for v in values):
        return "text", "", ""
    raise FormatError(f"attribute {name!r} of label {label!r}: CVAT holds text, numbers or "
                      f"true/false, one type per attribute; got {values[:3]!r}")


def _meta(root: ET.Element, clip: ClipInfo, tracks: list[TrackFrames]) -> None:
    values: dict[str, dict[str, list]] = {}
    for t in tracks:
        for label, attrs in sorted(set(zip(t.label, t.attributes))):
            for name, value in json.loads(attrs).items():
                values.setdefault(label, {}).setdefault(name, []).append(value)
            values.setdefault(label, {})
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    for tag, text in (("name", f"{clip.recording}/{clip.name}"), ("size", clip.frames),
                      ("mode", "interpolation"), ("overlap", 0), ("start_frame", 0),
                      ("stop_frame", clip.frames - 1)):
        ET.SubElement(task, tag).text = str(text)
    labels = ET.SubElement(task, "labels")
    for label in sorted(values):
        el = ET.SubElement(labels, "label")
        ET.SubElement(el, "name").text = label
        ET.SubElement(el, "type").text = "rectangle"
        attributes = ET.SubElement(el, "attributes")
        specs = {n: ("True",) + _input_type(label, n, v) for n, v in sorted(values[label].items())}
        specs[TRACK_ATTRIBUTE] = ("False", "text", "", "")
        for name, spec in specs.items():
            attribute = ET.SubElement(attributes, "attribute")
            for tag, text in zip(("name", "mutable", "input_type", "default_value", "values"),
                                 (name, *spec)):
                ET.SubElement(attribute, tag).text = text
    size = ET.SubElement(task, "original_size")
    for tag, value in (("width", clip.width), ("height", clip.height)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(task, "source").text = posixpath.basename(clip.video_uri)


def _box(track: ET.Element, frame: int, box, outside: bool, keyframe: bool,
         attributes: dict[str, Any], track_id: int) -> None:
    el = ET.SubElement(track, "box", {
        "frame": str(frame), "keyframe": str(int(keyframe)), "outside": str(int(outside)),
        "occluded": "0", **{k: f"{v:.2f}" for k, v in zip(("xtl", "ytl", "xbr", "ybr"), box)},
        "z_order": "0"})
    for name, value in [*attributes.items(), (TRACK_ATTRIBUTE, track_id)]:
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        ET.SubElement(el, "attribute", name=name).text = text


def write(keyframes: pa.Table, clip: ClipInfo) -> bytes:
    tracks = track_frames(keyframes, clip)
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    _meta(root, clip, tracks)
    number = 0
    for t in tracks:
        attrs = {s: json.loads(s) for s in set(t.attributes)}
        for a, b in runs(t, by_attributes=False):
            track = ET.SubElement(root, "track", {"id": str(number), "label": t.label[a],
                                                  "source": "auto"})
            number += 1
            for i in range(a, b):
                if t.key[i] or not t.hidden[i]:
                    _box(track, int(t.frame[i]), t.box[i], bool(t.hidden[i]), bool(t.key[i]),
                         attrs[t.attributes[i]], t.track_id)
            after = int(t.frame[b - 1]) + 1
            if not t.hidden[b - 1] and after < clip.frames:
                _box(track, after, t.box[min(b, len(t.frame) - 1)], True, True,
                     attrs[t.attributes[b - 1]], t.track_id)
    ET.indent(root, "  ")
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _parse(data: bytes) -> ET.Element:
    # No DTDs: ElementTree does not fetch external entities, but expands internal ones.
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise FormatError("the XML declares a DOCTYPE or entities; CVAT files have none")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise FormatError(f"not well-formed XML: {e}") from e
    if root.tag != "annotations" or root.findtext("version") != "1.1":
        raise FormatError(f"not CVAT 1.1: root <{root.tag}>, version "
                          f"{root.findtext('version')!r}")
    return root


def _specs(root: ET.Element, clip: ClipInfo) -> dict[str, dict[str, str]]:
    """The task's (or job's) labels: {label: {attribute: input_type}}; checks the frame size."""
    meta = root.find("meta")
    found = [] if meta is None else [e for e in meta if e.tag in ("task", "job")]
    task = found[0] if found else None
    if task is None:
        raise FormatError("no <meta><task> or <meta><job>: export a task or a job, not a "
                          "project, as CVAT for video 1.1")
    size = meta.find(".//original_size")
    if size is not None:
        found = (size.findtext("width"), size.findtext("height"))
        if found != (str(clip.width), str(clip.height)):
            raise FormatError(f"original_size {found} is not the clip's {clip.width}x"
                              f"{clip.height}")
    if task.tag == "task" and task.findtext("size") not in (None, str(clip.frames)):
        raise FormatError(f"the task has {task.findtext('size')} frames, the clip "
                          f"{clip.frames}")
    return {label.findtext("name"): {a.findtext("name"): a.findtext("input_type")
                                     for a in label.iter("attribute")}
            for label in task.iter("label")}


def _value(text: str, input_type: str | None, where: str) -> Any:
    if input_type == "checkbox":
        if text.lower() not in ("true", "false"):
            raise FormatError(f"{where}: checkbox value {text!r} is not true or false")
        return text.lower() == "true"
    if input_type == "number":
        try:
            value = int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
        except ValueError as e:
            raise FormatError(f"{where}: number attribute {text!r} is not a number") from e
        if not math.isfinite(value):
            raise FormatError(f"{where}: number attribute {text!r} is not finite")
        return value
    return text


def _number(box: ET.Element, name: str, where: str, kind=float) -> Any:
    text = box.get(name)
    try:
        value = kind(text)
    except (TypeError, ValueError) as e:
        raise FormatError(f"{where}: attribute {name}={text!r} is missing or not a number") from e
    if not math.isfinite(value):
        raise FormatError(f"{where}: {name}={text!r} is not finite")
    return value


def _track(el: ET.Element, specs: dict, clip: ClipInfo,
           labels: Collection[str] | None) -> tuple[int | None, Run]:
    where = f"CVAT track {el.get('id')!r}"
    label = el.get("label")
    if not label or (specs and label not in specs) or (labels is not None and label not in labels):
        raise FormatError(f"{where}: label {label!r} is not one of "
                          f"{sorted(labels if labels is not None else specs)}")
    human = el.get("source") in _HUMAN_SOURCES
    source = ("human", 1.0) if human else ("interpolated", None)
    keys, frames, ours = [], set(), set()
    for box in el:
        if box.tag != "box":
            raise FormatError(f"{where}: <{box.tag}> is not supported, only boxes")
        frame = _number(box, "frame", where, int)
        at = f"{where} frame {frame}"
        if not 0 <= frame < clip.frames or frame in frames:
            raise FormatError(f"{at}: a second box on this frame, or outside the clip's frames "
                              f"0..{clip.frames - 1}")
        frames.add(frame)
        flags = {f: box.get(f, "0" if f != "keyframe" else None) for f in
                 ("keyframe", "outside", "occluded")}
        if any(v not in ("0", "1") for v in flags.values()):
            raise FormatError(f"{at}: keyframe, outside and occluded must be 0 or 1: {flags}")
        xy = tuple(_number(box, c, at) for c in ("xtl", "ytl", "xbr", "ybr"))
        if xy[2] < xy[0] or xy[3] < xy[1]:
            raise FormatError(f"{at}: box {xy} has xbr < xtl or ybr < ytl")
        attrs = {}
        for a in box:
            if a.tag != "attribute" or not a.get("name"):
                raise FormatError(f"{at}: <{a.tag}> is not a named <attribute>")
            attrs[a.get("name")] = a.text or ""
        if attrs.get(TRACK_ATTRIBUTE, "").strip():
            ours.add(_number(attrs, TRACK_ATTRIBUTE, at, int))
        attrs.pop(TRACK_ATTRIBUTE, None)
        if flags["keyframe"] == "1":
            typed = {n: _value(v, specs.get(label, {}).get(n), f"{at} attribute {n!r}")
                     for n, v in attrs.items()}
            keys.append(Key(frame, xy, flags["outside"] == "1", label, attributes_json(typed),
                            *source))
    if not keys or len(ours) > 1:
        raise FormatError(f"{where}: no keyframe, or boxes with different {TRACK_ATTRIBUTE} "
                          f"{sorted(ours)}")
    keys.sort(key=lambda k: k.frame)
    j = len(keys)
    while j and keys[j - 1].hidden:
        j -= 1
    return (ours.pop() if ours else None), Run(keys, None if j == len(keys) else keys[j].frame - 1,
                                               where)


def read(data: bytes, clip: ClipInfo, *, labels: Collection[str] | None = None) -> pa.Table:
    """Our keyframes from a CVAT for video 1.1 file (ours, or a task or job CVAT exported).
    ``labels``: the labels allowed (default: the file's own label list)."""
    root = _parse(data)
    if root.find("image") is not None:
        raise FormatError("<image> elements: this is CVAT for images; export CVAT for video")
    specs = _specs(root, clip)
    return keyframe_table([_track(el, specs, clip, labels) for el in root.findall("track")], clip)
