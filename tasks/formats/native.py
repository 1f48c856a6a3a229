"""Our own annotations JSON: one clip's keyframes as they are, versioned, with a JSON Schema.

The format is the keyframes table (`tasks.annotations.keyframes`) grouped by track, so nothing is lost:
``{"schema": "preannotate/annotations", "version": 1, "clip": {...}, "tracks": [{"track_id",
"mode", "end_frame", "keyframes": [{"frame", "time_s", "label", "box", "hidden", "kind",
"attributes", "source", "score"}]}]}``. ``annotations.schema.json`` beside this module is the
definition (draft 2020-12); `schema_markdown` renders it as a table for the README.

Output is deterministic: fixed key order, tracks by id, keyframes by frame, one keyframe per
line so that a diff shows what a reviewer changed. Boxes and scores are float32 in the table;
they are written as the shortest decimal that reads back to the same float32, so a round trip
is exact. ``time_s`` is for people: ``frame`` is what counts, and reading recomputes the time
from the clip. Keyframes typed by hand may leave out ``hidden`` (false), ``attributes`` ({}),
``kind`` and ``source`` ("human") and ``score`` (null).
"""

from __future__ import annotations

import math

import json
from collections import Counter
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pyarrow as pa

from tasks.formats.base import ClipInfo
from tasks.errors import FormatError
from tasks.annotations.keyframes import BOX, KEYFRAME_SCHEMA, attributes_json, check_keyframes, sort_tracks

NAME = "json"
EXTENSION = ".json"
SCHEMA_ID = "preannotate/annotations"
VERSION = 1
READS = (1,)  # the versions `read` understands
SCHEMA_PATH = Path(__file__).with_name("annotations.schema.json")
# What a reader gives `keyframe_table` per row; the other columns come from the clip.
ROW_COLUMNS = [n for n in KEYFRAME_SCHEMA.names
               if n not in ("recording", "clip_index", "global_frame", "time_s")]


@cache
def json_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def schema_markdown() -> str:
    """The file's fields as a Markdown table, from the schema's descriptions."""
    schema = json_schema()
    lines = ["| field | type | meaning |", "| --- | --- | --- |"]

    def rows(prefix: str, node: dict[str, Any]) -> None:
        required = set(node.get("required", ()))
        for name, spec in node["properties"].items():
            if "$ref" in spec:
                rows(f"{prefix}{name}.", schema["$defs"][spec["$ref"].rsplit("/", 1)[1]])
                continue
            kind = spec.get("type") or ("one of " + ", ".join(map(str, spec["enum"])) if "enum" in
                                        spec else json.dumps(spec["const"]))
            kind = " or ".join(kind) if isinstance(kind, list) else kind
            if name not in required:
                default = f", default {json.dumps(spec['default'])}" if "default" in spec else ""
                kind += f" (optional{default})"
            lines.append(f"| `{prefix}{name}` | {kind} | {spec['description']} |")
            items = spec.get("items", {})
            if "$ref" in items:
                rows(f"{prefix}{name}[].", schema["$defs"][items["$ref"].rsplit("/", 1)[1]])

    rows("", schema)
    return "\n".join(lines)


def shortest_f32(value: Any) -> float:
    """The shortest decimal that reads back to the same float32 (exact, and short in JSON)."""
    return float(str(np.float32(value)))


def write(keyframes: pa.Table, clip: ClipInfo) -> bytes:
    table = sort_tracks(keyframes)
    cols = {name: table[name].to_pylist() for name in table.column_names}
    tracks: list[dict[str, Any]] = []
    for i in range(table.num_rows):
        if not tracks or tracks[-1]["track_id"] != cols["track_id"][i]:
            tracks.append({"track_id": cols["track_id"][i], "mode": cols["mode"][i],
                           "end_frame": cols["end_frame"][i], "keyframes": []})
        score = cols["score"][i]
        tracks[-1]["keyframes"].append({
            "frame": cols["frame"][i], "time_s": round(clip.time_of(cols["frame"][i]), 6),
            "label": cols["label"][i], "box": [shortest_f32(cols[c][i]) for c in BOX],
            "hidden": cols["hidden"][i], "kind": cols["kind"][i],
            "attributes": json.loads(cols["attributes"][i] or "{}"), "source": cols["source"][i],
            "score": None if score is None or not np.isfinite(score) else shortest_f32(score)})
    head = {"schema": SCHEMA_ID, "version": VERSION, "clip": {
        "recording": clip.recording, "clip_index": clip.clip_index, "name": clip.name,
        "video": clip.video_uri, "width": clip.width, "height": clip.height,
        "frames": clip.frames, "fps": str(Fraction(clip.fps))}}
    # One keyframe per line: readable, and diffs of reviewed files show single keyframes.
    dump = lambda value: json.dumps(value, ensure_ascii=False)  # noqa: E731
    text = json.dumps(head, ensure_ascii=False, indent=1)[:-2] + ',\n "tracks": ['
    text += ",".join(
        "\n  " + dump({k: v for k, v in t.items() if k != "keyframes"})[:-1] + ', "keyframes": ['
        + ",".join("\n   " + dump(k) for k in t["keyframes"]) + "]}" for t in tracks)
    return (text + "]\n}\n").encode("utf-8")


def _where(error: jsonschema.ValidationError) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path) or "."


def read(data: bytes, clip: ClipInfo) -> pa.Table:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"annotations file is not valid JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_ID:
        raise FormatError(f'not a preannotate annotations file (no "schema": "{SCHEMA_ID}")')
    version = doc.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > max(READS):
        raise FormatError(f"annotations version {version} is newer than this reader, which reads "
                          f"version {', '.join(map(str, READS))}: update preannotate")
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(json_schema()).iter_errors(doc))
    if error is not None:
        raise FormatError(f"annotations file at {_where(error)}: {error.message}")
    _check_clip(doc["clip"], clip)
    cols: dict[str, list[Any]] = {name: [] for name in ROW_COLUMNS}
    seen: set[int] = set()
    for t, track in enumerate(doc["tracks"]):
        tid, end = track["track_id"], track["end_frame"]
        if tid in seen:
            raise FormatError(f"tracks[{t}]: track_id {tid} appears twice")
        seen.add(tid)
        if end is not None and end >= clip.frames:
            raise FormatError(f"tracks[{t}] (track {tid}): end_frame {end} is past the clip's "
                              f"last frame {clip.frames - 1}")
        frames = Counter(k["frame"] for k in track["keyframes"])
        first = min(frames)
        for j, k in enumerate(track["keyframes"]):
            where = f"tracks[{t}].keyframes[{j}] (track {tid}, frame {k['frame']})"
            x1, y1, x2, y2 = k["box"]
            if k["frame"] >= clip.frames or (end is not None and k["frame"] > end):
                raise FormatError(f"{where}: frame is past the track's end "
                                  f"{clip.frames - 1 if end is None else end}")
            if frames[k["frame"]] > 1:
                raise FormatError(f"{where}: two keyframes on one frame")
            if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
                raise FormatError(f"{where}: box {k['box']} is not finite")
            if not (x1 <= x2 and y1 <= y2):
                raise FormatError(f"{where}: box {k['box']} has x2 < x1 or y2 < y1")
            if k["frame"] == first and k.get("hidden", False):
                raise FormatError(f"{where}: a track's first keyframe cannot be hidden")
            values = {"track_id": tid, "frame": k["frame"], "label": k["label"],
                      "hidden": k.get("hidden", False), "kind": k.get("kind", "human"),
                      "mode": track["mode"], "end_frame": end,
                      "attributes": attributes_json(k.get("attributes")),
                      "source": k.get("source", "human"), "score": k.get("score"),
                      **dict(zip(BOX, k["box"]))}
            for name, value in values.items():
                cols[name].append(value)
    table = keyframe_table(cols, clip)
    try:
        check_keyframes(table)
    except ValueError as e:  # every rule is checked above with its place; this is a backstop
        raise FormatError(f"annotations file: {e}") from e
    return sort_tracks(table)


def _check_clip(meta: dict[str, Any], clip: ClipInfo) -> None:
    """A reviewed file must come back to the clip it was made for."""
    for field, expected in (("recording", clip.recording), ("clip_index", clip.clip_index),
                            ("frames", clip.frames), ("width", clip.width),
                            ("height", clip.height)):
        if meta[field] != expected:
            raise FormatError(f"annotations file is for clip.{field} = {meta[field]!r}, but this "
                              f"clip has {expected!r}")


def keyframe_table(cols: dict[str, list[Any]], clip: ClipInfo) -> pa.Table:
    """KEYFRAME_SCHEMA rows of ``clip`` from per-row lists of `ROW_COLUMNS`."""
    n = len(cols["frame"])
    cols = dict(cols, recording=[clip.recording] * n, clip_index=[clip.clip_index] * n,
                global_frame=list(cols["frame"]), time_s=[clip.time_of(f) for f in cols["frame"]])
    return pa.table({name: pa.array(cols[name], field.type) for name, field in
                     zip(KEYFRAME_SCHEMA.names, KEYFRAME_SCHEMA)}, schema=KEYFRAME_SCHEMA)
