"""Per-clip previews a person looks at: a contact sheet (JPEG) of a few frames of the converted
WebM with the keyframe boxes drawn, a timeline (PNG) of every track's visible and hidden
ranges and keyframes, and the markdown that puts both into a Prefect artifact.

Files: ``OUT/previews/<recording>/<clip>.contact.jpg`` and ``.timeline.png``, named after
the clip's WebM (``OUT/<recording>/<clip>.webm``, already safe and unique), written
atomically; a state record ``OUT/_state/previews/<clip id>.json`` holds the digest they were
made from, so a rerun with unchanged keyframes and WebM writes nothing.

What a frame shows comes from `tasks.annotations.keyframes.expand` (the one definition); the timeline's
ranges come straight from the keyframe rows by the same rule (a keyframe's hidden flag holds
until the next keyframe; the last one holds to the track's end), and a test checks the two
agree frame by frame.

Thread safety: matplotlib is used through ``Figure`` + ``FigureCanvasAgg`` only (no pyplot
and its global figure manager), and OpenCV draws on arrays this module owns, so previews of
different clips can be made on concurrent task-runner threads.
"""

from __future__ import annotations

import base64
import hashlib
import json
import posixpath
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.store.record import ClipRecord
from tasks.media.webm import webm_path
from tasks.store.items import clip_id_for
from tasks.annotations.keyframes import KEYFRAME_SCHEMA, sort_tracks
from tasks.store.storage import Location, read_bytes, safe_component, size_of, write_bytes_atomic
from tasks.report.timeline import _fps, timeline_plot
from tasks.report.sheet import contact_sheet

PREVIEW_DIR = "previews"
STATE_DIR = "_state/previews"
# Part of every digest: bump it when the pictures change for the same input (layout, colours),
# so reruns remake them.
PREVIEW_VERSION = "previews/2"


# --- files, digest and markdown --------------------------------------------------------------


def preview_paths(out: Location, record: ClipRecord) -> dict[str, str]:
    """{"contact_sheet": path, "timeline": path}: ``OUT/previews/<recording>/<name>`` with
    ``.contact.jpg`` and ``.timeline.png``, where ``<recording>/<name>`` is the WebM's own
    path in OUT without ``.webm``. Ingest made those parts safe (`safe_component`) and unique
    per clip (``a.mp4`` and ``a.mov`` in one folder keep their extensions), so previews never
    collide; `safe_component` is applied again (a no-op on safe names) in case the items row
    was edited."""
    rel = webm_path(out, record)[len(out.root.rstrip("/")) + 1:]
    parts = [safe_component(p) for p in rel.split("/") if p]
    stem = posixpath.splitext(parts[-1])[0]
    base = [PREVIEW_DIR, *parts[:-1]]
    return {"contact_sheet": out.path(*base, stem + ".contact.jpg"),
            "timeline": out.path(*base, stem + ".timeline.png")}


def _state_path(out: Location, record: ClipRecord) -> str:
    return out.path(STATE_DIR, f"{clip_id_for(record.source_uri)}.json")


def clip_digest(keyframes: pa.Table, record: ClipRecord, cuts: Sequence[int] = ()) -> str:
    """BLAKE2b-128 (hex) of what the previews show: the clip's keyframe rows (sorted by
    track and frame, column by column, so row order and chunking do not matter), the WebM's
    identity (URL, size, convert key, source fingerprint), its shot cuts and
    `PREVIEW_VERSION`."""
    table = sort_tracks(keyframes.cast(KEYFRAME_SCHEMA)).combine_chunks()
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([PREVIEW_VERSION, record.output_uri, record.output_bytes,
                         record.convert_key, record.fingerprint,
                         table.num_rows, [int(c) for c in cuts]]).encode())
    for field in KEYFRAME_SCHEMA:
        column = table[field.name]
        h.update(field.name.encode() + b"\0")
        if pa.types.is_string(field.type):
            h.update(json.dumps(column.to_pylist(), ensure_ascii=False).encode())
        else:
            # Validity and values separately, so a null never equals a 0.
            h.update(np.packbits(column.is_null().to_numpy(zero_copy_only=False)).tobytes())
            filler = False if pa.types.is_boolean(field.type) else 0
            h.update(pc.fill_null(column, filler).to_numpy(zero_copy_only=False).tobytes())
    return h.hexdigest()


def write_previews(out: Location, record: ClipRecord, keyframes: pa.Table, digest: str,
                   cuts: Sequence[int] = ()) -> dict[str, str]:
    """Write the clip's contact sheet and timeline (atomically) and return their URLs,
    {"contact_sheet": url, "timeline": url}. Nothing is written when the state record says
    they were made from the same ``digest`` (see `clip_digest`) and both files exist."""
    paths = preview_paths(out, record)
    urls = {name: out.url(path) for name, path in paths.items()}
    state_path = _state_path(out, record)
    data = read_bytes(out, state_path)
    if data is not None:
        try:
            state = json.loads(data)
        except ValueError:
            state = None
        if (isinstance(state, dict) and state.get("digest") == digest
                and all(size_of(out, path) is not None for path in paths.values())):
            return urls
        # Forget the old digest before replacing the files: killed in between, a later run
        # with that digest must not take the half-replaced previews for its own.
        out.fs.rm(state_path)
    fps = record.output_fps_measured or record.fps
    write_bytes_atomic(out, paths["contact_sheet"], contact_sheet(out, record, keyframes))
    frame_count = int(record.output_frames or 0)
    if not frame_count:
        from tasks.media.webm import webm_timeline

        frame_count = len(webm_timeline(out, record))
    write_bytes_atomic(out, paths["timeline"],
                       timeline_plot(keyframes, frame_count, _fps(fps), cuts))
    write_bytes_atomic(out, state_path, json.dumps({"digest": digest, **urls}, indent=1,
                                                   sort_keys=True).encode())
    return urls


# Summary keys shown first, in this order; the rest follow in the summary's own order.
_SUMMARY_ORDER = ("status", "reason", "detail", "frames", "detections", "tracks", "keyframes",
                  "review_tasks")
_IMAGE_ALT = {"contact_sheet": "contact sheet", "timeline": "timeline"}
_MARKDOWN_SPECIAL = "\\`*_[]<>|~#"


def _md(text: Any) -> str:
    """Text safe inside markdown (and a table cell): specials escaped, one line."""
    text = " ".join(str(text).split())
    return "".join("\\" + ch if ch in _MARKDOWN_SPECIAL else ch for ch in text)


def _mime(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    raise ValueError("an image must be JPEG or PNG bytes")


def clip_markdown(record: ClipRecord, summary: dict[str, Any], images: dict[str, bytes],
                  *, links: dict[str, str] | None = None) -> str:
    """Markdown for a Prefect markdown artifact: a heading naming the clip, a table of the
    summary (`_SUMMARY_ORDER` keys first), the images inline as base64 ``data:`` URIs (the
    Prefect 3.8 UIs render ``data:image/...`` in ``<img>``), and ``links`` (e.g. the URLs
    `write_previews` returns) listed under them, so a UI that strips data URIs still says
    where the files are."""
    recording = record.recording or ""
    name = f"{recording}/{record.clip_name}" if recording else f"{record.clip_name}"
    lines = [f"### {_md(name)} (clip {record.clip_index})", ""]
    keys = [k for k in _SUMMARY_ORDER if k in summary]
    keys += [k for k in summary if k not in keys]
    if keys:
        lines += ["| field | value |", "| --- | --- |"]
        lines += [f"| {_md(str(k).replace('_', ' '))} | {_md(summary[k])} |" for k in keys]
        lines.append("")
    for key, data in images.items():
        alt = _IMAGE_ALT.get(key, str(key).replace("_", " "))
        encoded = base64.b64encode(data).decode("ascii")
        lines += [f"![{_md(alt)}](data:{_mime(data)};base64,{encoded})", ""]
    if links:
        lines.append("Files: " + ", ".join(
            f"{_md(k.replace('_', ' '))} " + (f"`{v}`" if "`" not in v else _md(v))
            for k, v in links.items()))
        lines.append("")
    return "\n".join(lines)

