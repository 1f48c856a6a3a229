"""The export stage: each converted clip's keyframes written in the formats reviewers' tools
import, under ``OUT/exports/<format>/<recording>/<clip>.<ext>``; the Parquet tables stay
where the stages write them (``OUT/*.parquet``).

Each format is one module in `tasks/formats/` with ``write(keyframes, clip) -> bytes``;
files are written atomically, so a rerun rewrites identical bytes and a crash leaves no half
file.
"""

from __future__ import annotations

import dataclasses

import json
import posixpath
from fractions import Fraction
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tasks.export.video_url import video_url as render_video_url
from tasks.store.items import clip_id_for
from tasks.store.record import ClipRecord
from tasks.compact.stage import KEYFRAMES_FILE
from tasks.errors import ConfigError, PipelineError
from tasks.formats.base import ClipInfo
from tasks.annotations.keyframes import KEYFRAME_SCHEMA
from tasks.formats import format_module
from tasks.recipe import EXPORT_FORMATS, Recipe
from tasks.store.storage import (Location, list_files, open_location, safe_component, size_of,
                           write_bytes_atomic)
from tasks.store.tables import read_state_json, read_table

EXPORT_DIR = "exports"
# Formats whose files depend on every clip (MOT numbers classes by the labels of the whole
# run): written at the recording-level finish, the others as soon as a clip is compacted.
WHOLE_RUN_FORMATS = ("mot",)
TABLES = ("items.parquet", "detections.parquet", "tracks.parquet", KEYFRAMES_FILE,
          "spans.parquet", "frame_labels.parquet")


def parse_formats(text: str | list[str]) -> list[str]:
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    unknown = [n for n in names if n not in EXPORT_FORMATS]
    if unknown or not names:
        raise ConfigError(f"unknown export format(s) {unknown or text!r}; choose from "
                          f"{', '.join(EXPORT_FORMATS)}")
    return list(dict.fromkeys(names))



def clip_info(out: Location, record: ClipRecord) -> ClipInfo:
    """The clip as exports describe it: WebM size, frame count and decoded timestamps."""
    from tasks.media.webm import webm_timeline

    timeline = webm_timeline(out, record)
    times = timeline.seconds()
    fps = record.output_fps_measured or record.fps or "30"
    return ClipInfo(recording=record.recording, clip_index=int(record.clip_index),
                    name=record.clip_name, video_uri=record.output_uri,
                    width=int(record.output_width), height=int(record.output_height),
                    frames=len(timeline), fps=Fraction(fps), times_s=times,
                    clip_id=clip_id_for(record.source_uri))


def clip_keyframes(keyframes: pa.Table, record: ClipRecord) -> pa.Table:
    mask = pc.and_(pc.equal(keyframes["recording"], record.recording),
                   pc.equal(keyframes["clip_index"], int(record.clip_index)))
    return keyframes.filter(mask)


def export_path(out: Location, fmt: str, record: ClipRecord, extension: str) -> str:
    """``exports/<fmt>/<recording>/<clip stem><ext>``; MOT keeps its sequence layout,
    ``exports/mot/<recording>/<clip stem>/gt/gt.txt`` (with ``gt/labels.txt``)."""
    # The WebM's name: ingest made it safe and unique in its recording ("a b.mp4" and
    # "a_b.mp4", "a.mp4" and "a.mov" stay apart).
    stem = posixpath.splitext(posixpath.basename(record.output_uri))[0] \
        if record.output_uri else posixpath.splitext(safe_component(record.clip_name))[0]
    parts = [p for p in record.recording.split("/") if p] if record.recording else []
    base = [EXPORT_DIR, fmt, *[safe_component(p) for p in parts]]
    if fmt == "mot":
        return out.path(*base, stem, "gt", "gt.txt")
    return out.path(*base, stem + extension)


EXPORT_STATE_DIR = "_state/export"
# Bump when a writer's output changes, so unchanged clips are written again.
# 2: Label Studio tasks name their clip (data.clip_id, recording, clip_index, clip).
EXPORT_VERSION = 2
# What a clip's files depend on besides its keyframes (the WebM and how it is described).
_CLIP_FIELDS = ("source_uri", "recording", "clip_index", "clip_name", "output_uri", "output_bytes",
                "output_width", "output_height", "output_fps_measured", "fps", "fingerprint",
                "convert_key")


def clip_rows(out: Location, compacted: dict[str, Any] | None) -> pa.Table:
    """The clip's keyframes, kept by compaction (`tasks.compact.stage`); none for a clip with no
    tracks (``compacted`` None)."""
    from tasks.compact.stage import CACHE_DIR
    from tasks.store.tables import read_state_table

    if compacted is None:
        return KEYFRAME_SCHEMA.empty_table()
    path = out.path(CACHE_DIR, compacted["keyframes_file"])
    rows = read_state_table(out, path)
    if rows is None:
        raise PipelineError(f"the keyframes of {out.url(path)} are gone or unreadable: "
                            "run again to compact the clip")
    return rows.cast(KEYFRAME_SCHEMA)


def _base_digest(record: ClipRecord, compacted: dict[str, Any] | None,
                 video_url: str | None = None) -> str:
    """What a clip's files depend on: its keyframes (named by what they were computed
    from), the clip, the video URL template, and the writers' version."""
    import hashlib

    text = json.dumps([compacted["keyframes_file"] if compacted else None,
                       [getattr(record, k) for k in _CLIP_FIELDS], EXPORT_VERSION, video_url],
                      default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _summary(record: ClipRecord, compacted: dict[str, Any] | None, files, written,
             unchanged) -> dict[str, Any]:
    return {"recording": record.recording, "clip_index": int(record.clip_index),
            "tracks": len(compacted["track_ids"]) if compacted else 0,
            "keyframes": compacted["keyframes"] if compacted else 0,
            "files": files, "written": written, "unchanged": unchanged}


def export_clip(record: ClipRecord, out: Location, formats: list[str],
                compacted: dict[str, Any] | None, labels: list[str] | None = None,
                video_url: str | None = None) -> dict[str, Any]:
    """Write one clip's keyframes (``compacted``: its `tasks.compact.stage` summary) in every
    asked format (not `parquet`: the tables are already written). MOT numbers classes by
    ``labels``, the labels of the whole run. A format whose inputs (the clip's keyframes,
    its WebM, the writer) are unchanged since the last run, and whose files are still there,
    is not written again. ``video_url``: the recipe's template of the URL tools load the
    WebM from (`tasks.export.video_url`)."""
    base = _base_digest(record, compacted, video_url)
    labels = labels or []
    state_path = out.path(EXPORT_STATE_DIR, f"{clip_id_for(record.source_uri)}.json")
    state = read_state_json(out, state_path)
    state = state if isinstance(state, dict) else {}
    clip, rows = None, None
    written: dict[str, list[str]] = {}
    done: dict[str, Any] = {}
    stale = [f for f in formats if f in state and state[f]["digest"] != _format_digest(
        base, f, labels)]
    if stale:  # forgotten before their files are replaced (a crash in between: written again)
        state = {f: v for f, v in state.items() if f not in stale}
        write_bytes_atomic(out, state_path, json.dumps(state, sort_keys=True).encode())
    for fmt in formats:
        if fmt == "parquet":
            continue
        digest = _format_digest(base, fmt, labels)
        before = state.get(fmt)
        if before and before["digest"] == digest and all(
                size_of(out, path) == size for path, size in before["sizes"].items()):
            written[fmt], done[fmt] = before["files"], before
            continue
        clip = clip or dataclasses.replace(clip_info(out, record),
                                           video_url=render_video_url(video_url, out, record))
        rows = rows if rows is not None else clip_rows(out, compacted)
        module = format_module(fmt)
        path = export_path(out, fmt, record, module.EXTENSION)
        files = {path: module.write(rows, clip, labels=labels) if fmt == "mot"
                 else module.write(rows, clip)}
        if fmt == "mot":
            labels_path = posixpath.join(posixpath.dirname(path), module.LABELS_FILE)
            files[labels_path] = module.write_labels(rows, clip, labels=labels)
        for name, data in files.items():
            write_bytes_atomic(out, name, data)
        written[fmt] = [out.url(name) for name in files]
        done[fmt] = {"digest": digest, "files": written[fmt],
                     "sizes": {name: len(data) for name, data in files.items()}}
    unchanged = sorted(f for f in done if state.get(f) is done[f])
    if len(unchanged) < len(done):
        # Written after the files, so a crash in between only means writing them again.
        write_bytes_atomic(out, state_path, json.dumps({**state, **done}, sort_keys=True).encode())
    return _summary(record, compacted, written, sorted(set(done) - set(unchanged)), unchanged)


def exported_before(out: Location, records: list[ClipRecord], formats: list[str],
                    compacted: list[dict[str, Any] | None],
                    labels: list[str] | None = None,
                    video_url: str | None = None) -> list[dict[str, Any] | None]:
    """For each clip (``compacted``: its compaction summary), what `export_clip` would return
    when every asked format's files are current (same keyframes, clip and writer; files
    there with their sizes), else None. One listing of the exports for all clips, and each
    clip's export record read unless the ledger (`tasks.store.ledger`) has it unchanged, so an
    unchanged batch runs no export task and reads no clip's file."""
    from tasks.store.items import clip_id_for
    from tasks.store.ledger import Ledger, Unit

    if not records:
        return []
    labels = labels or []
    wanted = [f for f in formats if f != "parquet"]
    sizes = {path: size for path, (size, _) in list_files(out, out.path(EXPORT_DIR)).items()}

    # The clips' export records, read through a ledger: unchanged ones cost no read.
    state_dir = out.path(EXPORT_STATE_DIR)
    paths = [out.path(EXPORT_STATE_DIR, f"{clip_id_for(r.source_uri)}.json") for r in records]
    ledger = Ledger(out, "export", [Unit(["export-state", p], ((state_dir, p),)) for p in paths])
    states = ledger.look_up(lambda i: read_state_json(out, paths[i]), quiet=False)
    ledger.keep(states)

    def look(record: ClipRecord, kept: dict[str, Any] | None, state: Any):
        base = _base_digest(record, kept, video_url)
        if not isinstance(state, dict):
            return None
        files = {}
        for fmt in wanted:
            before = state.get(fmt)
            if not (before and before["digest"] == _format_digest(base, fmt, labels) and all(
                    sizes.get(path) == size for path, size in before["sizes"].items())):
                return None
            files[fmt] = before["files"]
        return _summary(record, kept, files, [], sorted(wanted))

    return [look(*args) for args in zip(records, compacted, states)]


def _format_digest(base: str, fmt: str, labels: list[str]) -> str:
    """What one format's files depend on: the clip (``base``) and, for MOT, whose class ids
    number every clip's labels, the labels of the whole table."""
    import hashlib

    extra = "\x00".join(labels) if fmt == "mot" else ""
    return hashlib.blake2b(f"{base}\x00{fmt}\x00{extra}".encode(), digest_size=16).hexdigest()


def finish(out: Location, recipe: Recipe, formats: list[str], clips: list[dict[str, Any]]) -> dict:
    """Files that cover every clip: Label Studio's task list and labelling config."""
    files: dict[str, list[str]] = {}
    if "labelstudio" in formats:
        from tasks.formats import labelstudio

        tasks, labels = [], set()
        for clip in sorted(clips, key=lambda c: (c["recording"], c["clip_index"])):
            for url in clip["files"].get("labelstudio", []):
                path = out.path(posixpath.relpath(url, out.url(out.root))) if not out.is_local \
                    else url
                tasks.extend(json.loads(out.fs.cat_file(path)))
        keyframes = read_table(out, out.path(KEYFRAMES_FILE))
        labels = sorted(set(keyframes["label"].to_pylist())) if keyframes is not None else []
        if recipe.labels.file:
            from tasks.labels import load_label_tree

            labels = sorted(set(labels) | set(load_label_tree(recipe.labels.file).paths))
        all_tasks = out.path(EXPORT_DIR, "labelstudio", "tasks.json")
        config = out.path(EXPORT_DIR, "labelstudio", "config.xml")
        write_bytes_atomic(out, all_tasks, json.dumps(tasks, indent=1).encode())
        write_bytes_atomic(out, config, labelstudio.labeling_config(labels).encode())
        files["labelstudio"] = [out.url(all_tasks), out.url(config)]
        if recipe.labels.file:  # time spans over whole videos, with the hierarchical labels
            from tasks.labels import load_label_tree

            timeline = out.path(EXPORT_DIR, "labelstudio", "timeline.xml")
            paths = list(load_label_tree(recipe.labels.file).paths)
            write_bytes_atomic(out, timeline, labelstudio.timeline_config(paths).encode())
            files["labelstudio"].append(out.url(timeline))
    if "parquet" in formats:
        files["parquet"] = [out.url(out.path(t)) for t in TABLES if out.fs.exists(out.path(t))]
    return files


def export_clip_uri(record: ClipRecord, out_uri: str, recipe: Recipe, formats: list[str],
                    compacted: dict[str, Any] | None, labels: list[str] | None = None):
    return export_clip(record, open_location(out_uri, recipe.storage), formats, compacted, labels,
                       recipe.export.video_url)


def exported_before_uri(out_uri: str, recipe: Recipe, records: list[ClipRecord],
                        formats: list[str], compacted: list[dict[str, Any] | None],
                        labels: list[str] | None = None) -> list[dict[str, Any] | None]:
    return exported_before(open_location(out_uri, recipe.storage), records, formats, compacted,
                           labels, recipe.export.video_url)


def finish_uri(out_uri: str, recipe: Recipe, formats: list[str], clips: list[dict[str, Any]]):
    return finish(open_location(out_uri, recipe.storage), recipe, formats, clips)
