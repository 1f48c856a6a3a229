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
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.formats.base import ClipInfo
from tasks.errors import FormatError
from tasks.formats.native import ROW_COLUMNS
from tasks.formats.native import keyframe_table as rows_table
from tasks.annotations.keyframes import BOX, attributes_json, check_keyframes, expand, sort_tracks, track_starts

NAME = "cvat"
EXTENSION = ".xml"
TRACK_ATTRIBUTE = "preannotate_track"
PRECISION_PX = 0.005  # half of the last decimal CVAT writes
_RESERVED = {"occluded", "outside", "keyframe", "track_id", "rotation", TRACK_ATTRIBUTE}
_HUMAN_SOURCES = ("manual", "semi-auto")


# --- shared with Label Studio (tools that interpolate linearly); belongs in its own module --


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


# --- shared by the readers: a tool's runs back to our keyframes ---------------------------


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
