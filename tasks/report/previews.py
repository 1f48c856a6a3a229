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
import io
import json
import posixpath
from fractions import Fraction
from typing import Any, Sequence

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.media.webm import open_webm, webm_path
from tasks.store.items import clip_id_for
from tasks.annotations.keyframes import KEYFRAME_SCHEMA, expand, sort_tracks, track_starts
from tasks.store.storage import Location, read_bytes, safe_component, size_of, write_bytes_atomic

PREVIEW_DIR = "previews"
STATE_DIR = "_state/previews"
# Part of every digest: bump it when the pictures change for the same input (layout, colours),
# so reruns remake them.
PREVIEW_VERSION = "previews/2"

# Contact sheet layout (pixels): tiles in COLUMNS columns, GAP between tiles and around them,
# a CAPTION_HEIGHT strip under each tile for its frame index and time.
COLUMNS = 4
GAP = 4
CAPTION_HEIGHT = 18
JPEG_QUALITY = 85
# Reading forward over at most this many frames is cheaper than a seek (which decodes from the
# previous keyframe anyway); further apart, the reader seeks to the exact frame.
DECODE_ON_FRAMES = 48
# `expand` makes one row per frame; tracks are expanded in batches of at most this many rows
# (one longer track alone), so memory stays bounded however many tracks a clip has.
EXPAND_BATCH_ROWS = 1 << 20

# Timeline layout (inches at TIMELINE_DPI): fixed margins, ROW_HEIGHT per track, at most
# MAX_ROWS tracks drawn (then "+N more").
TIMELINE_DPI = 100
TIMELINE_WIDTH_IN = 10.0
ROW_HEIGHT_IN = 0.28
MARGINS_IN = {"left": 1.9, "right": 0.3, "top": 0.65, "bottom": 0.85}
MAX_ROWS = 40
HIDDEN_FACE = "#d9d9d9"
HIDDEN_EDGE = "#8c8c8c"
CUT_COLOR = "#d62728"  # shot cuts on the timeline

# One colour per track id (RGB), shared by the sheet and the timeline: matplotlib's tab20
# without its greys (grey means hidden on the timeline), dark shades first.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (219, 219, 141), (158, 218, 229),
)


def track_color(track_id: int) -> tuple[int, int, int]:
    """The track's colour as RGB (deterministic: the id picks a palette entry)."""
    return PALETTE[int(track_id) % len(PALETTE)]


# --- ranges and frame choice -----------------------------------------------------------------


def track_segments(keyframes: pa.Table, frame_count: int) -> list[dict[str, Any]]:
    """Each track of one clip's keyframes as runs of frames, in track id order:
    ``{"track_id", "labels", "segments": [(start, stop, hidden), ...], "keyframes":
    [(frame, kind), ...]}`` with ``stop`` exclusive and neighbouring runs never of the same
    kind. A track whose ``end_frame`` is null lasts to ``frame_count - 1``."""
    table = sort_tracks(keyframes)
    if table.num_rows == 0:
        return []
    starts = track_starts(table)
    bounds = np.r_[starts, table.num_rows]
    frame = table["frame"].to_numpy().astype(np.int64)
    hidden = table["hidden"].to_numpy(zero_copy_only=False).astype(bool)
    end = pc.fill_null(table["end_frame"], frame_count - 1).to_numpy().astype(np.int64)
    ids = table["track_id"].to_pylist()
    labels = table["label"].to_pylist()
    kinds = table["kind"].to_pylist()
    tracks = []
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        stops = np.r_[frame[a + 1:b], end[a] + 1]
        segments: list[tuple[int, int, bool]] = []
        for start, stop, flag in zip(frame[a:b].tolist(), stops.tolist(), hidden[a:b].tolist()):
            if stop <= start:
                continue
            if segments and segments[-1][2] == flag and segments[-1][1] == start:
                segments[-1] = (segments[-1][0], stop, flag)
            else:
                segments.append((start, stop, flag))
        tracks.append({"track_id": int(ids[a]), "labels": list(dict.fromkeys(labels[a:b])),
                       "segments": segments,
                       "keyframes": list(zip(frame[a:b].tolist(), kinds[a:b]))})
    return tracks


def _visible_runs(tracks: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """Frames where some track is visible, as sorted, merged [start, stop) runs."""
    runs = sorted((s, e) for t in tracks for s, e, hidden in t["segments"] if not hidden)
    merged: list[tuple[int, int]] = []
    for s, e in runs:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def choose_frames(frame_count: int, count: int, visible: list[tuple[int, int]] | None = None
                  ) -> list[int]:
    """``min(count, frame_count)`` frames spread evenly: the clip is cut into that many equal
    bins and each gives its middle frame, or the visible frame nearest the middle when the
    bin has any (``visible``: [start, stop) runs). Strictly increasing, deterministic."""
    n = min(int(count), int(frame_count))
    if n <= 0:
        return []
    edges = [i * frame_count // n for i in range(n + 1)]
    chosen = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        middle = (lo + hi - 1) // 2
        best = middle
        best_distance = None
        for s, e in visible or ():
            s, e = max(s, lo), min(e, hi)
            if s >= e:
                continue
            candidate = min(max(middle, s), e - 1)
            distance = abs(candidate - middle)
            if best_distance is None or distance < best_distance:
                best, best_distance = candidate, distance
        chosen.append(best)
    return chosen


def _states_at(keyframes: pa.Table, frames: list[int], frame_count: int) -> dict[int, list]:
    """Visible boxes at each of ``frames``: {frame: [(track_id, label, x1, y1, x2, y2)]},
    from `expand`, track by track in bounded batches."""
    table = sort_tracks(keyframes)
    found: dict[int, list] = {f: [] for f in frames}
    if table.num_rows == 0 or not frames:
        return found
    starts = track_starts(table)
    bounds = np.r_[starts, table.num_rows]
    first = table["frame"].to_numpy()[starts].astype(np.int64)
    end = pc.fill_null(table["end_frame"], frame_count - 1).to_numpy()[starts].astype(np.int64)
    wanted = np.asarray(frames, np.int64)
    clip_frames = {(r, int(c)): frame_count for r, c in
                   set(zip(table["recording"].to_pylist(), table["clip_index"].to_pylist()))}
    wanted_array = pa.array(wanted)

    def flush(rows: list[int]) -> None:
        if not rows:
            return
        dense = expand(table.take(pa.array(rows, pa.int64())), clip_frames)
        keep = pc.and_(pc.is_in(dense["frame"], value_set=wanted_array), pc.invert(dense["hidden"]))
        dense = dense.filter(keep)
        for row in dense.select(["frame", "track_id", "label", "x1", "y1", "x2", "y2"]).to_pylist():
            found[row["frame"]].append((row["track_id"], row["label"], row["x1"], row["y1"],
                                        row["x2"], row["y2"]))

    batch: list[int] = []
    batch_rows = 0
    for t in range(len(starts)):
        if not ((wanted >= first[t]) & (wanted <= end[t])).any():
            continue  # the track shows on none of the chosen frames
        length = int(end[t] - first[t] + 1)
        if batch and batch_rows + length > EXPAND_BATCH_ROWS:
            flush(batch)
            batch, batch_rows = [], 0
        batch.extend(range(int(bounds[t]), int(bounds[t + 1])))
        batch_rows += length
    flush(batch)
    for boxes in found.values():
        boxes.sort(key=lambda box: box[0])
    return found


# --- contact sheet ---------------------------------------------------------------------------


def _ascii(text: str) -> str:
    """OpenCV's Hershey fonts draw ASCII only."""
    return str(text).encode("ascii", "replace").decode("ascii")


def _bgr(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return rgb[2], rgb[1], rgb[0]


def _draw_boxes(tile: np.ndarray, boxes: list, sx: float, sy: float) -> None:
    h, w = tile.shape[:2]
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.35
    for track_id, label, x1, y1, x2, y2 in boxes:
        rgb = track_color(track_id)
        color = _bgr(rgb)
        p1 = (int(round(x1 * sx)), int(round(y1 * sy)))
        p2 = (int(round(x2 * sx)), int(round(y2 * sy)))
        cv2.rectangle(tile, p1, p2, color, 2, cv2.LINE_AA)
        text = _ascii(f"#{track_id} {label}")
        (tw, th), base = cv2.getTextSize(text, font, scale, 1)
        # Above the box when there is room, else just inside its top edge.
        top = p1[1] - th - base - 2 if p1[1] - th - base - 2 >= 0 else max(p1[1], 0)
        left = min(max(p1[0], 0), max(w - tw - 2, 0))
        cv2.rectangle(tile, (left, top), (left + tw + 2, top + th + base + 2), color, -1)
        light = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 140
        ink = (0, 0, 0) if light else (255, 255, 255)
        cv2.putText(tile, text, (left + 1, top + th + 1), font, scale, ink, 1, cv2.LINE_AA)


def sheet_size(count: int, width: int, height: int, thumb_width: int = 320,
               columns: int = COLUMNS) -> tuple[int, int]:
    """(width, height) of a contact sheet of ``count`` tiles of a ``width`` x ``height``
    clip."""
    tile_w, tile_h = thumb_width, max(1, round(height * thumb_width / width))
    cols = max(1, min(columns, count))
    rows = max(1, -(-count // cols))
    return (cols * tile_w + (cols + 1) * GAP, rows * (tile_h + CAPTION_HEIGHT) + (rows + 1) * GAP)


def contact_sheet(out: Location, record: dict[str, Any], keyframes: pa.Table, *, count: int = 8,
                  thumb_width: int = 320, quality: int = JPEG_QUALITY) -> bytes:
    """A JPEG grid of ``count`` frames of the clip's WebM (spread evenly, preferring frames
    where some track is visible; fewer when the clip is shorter), each ``thumb_width`` px
    wide with the visible boxes drawn in their track's colour and captioned ``#id label``,
    and under each tile its frame index and time (pts x time base). ``keyframes`` holds this
    clip's rows of the keyframes table (possibly none).

    Frames are decoded in increasing order, reading on where they are close and seeking to
    the exact frame where they are not; only the thumbnails are kept. Typical size at the
    defaults: 100-200 KB (JPEG ``quality`` 85, 4:4:4 chroma); half that at 160 px."""
    if count < 1 or thumb_width < 1:
        raise ValueError(f"count and thumb_width must be >= 1, got {count} and {thumb_width}")
    keyframes = keyframes.cast(KEYFRAME_SCHEMA)
    with open_webm(out, record) as reader:
        frame_count = len(reader)
        if frame_count == 0:
            raise ValueError(f"{record.get('output_uri')}: the WebM has no frames")
        tracks = track_segments(keyframes, frame_count)
        frames = choose_frames(frame_count, count, _visible_runs(tracks))
        boxes = _states_at(keyframes, frames, frame_count)
        tiles = []
        for index in frames:
            position = reader.position
            if position is not None and 0 <= index - position <= DECODE_ON_FRAMES:
                decoded = None
                for decoded in reader.read(position, index - position + 1):
                    pass
            else:
                decoded = next(iter(reader.read(index, 1)))
            _, pts, frame = decoded
            width, height = frame.width, frame.height
            tile_h = max(1, round(height * thumb_width / width))
            tile = frame.reformat(width=thumb_width, height=tile_h, format="bgr24",
                                  interpolation="AREA").to_ndarray()
            del frame, decoded
            tile = np.ascontiguousarray(tile)
            _draw_boxes(tile, boxes[index], thumb_width / width, tile_h / height)
            seconds = float(pts * reader.timeline.time_base)
            tiles.append((tile, f"frame {index}  {seconds:.3f} s"))
    sheet_w, sheet_h = sheet_size(len(tiles), width, height, thumb_width)
    sheet = np.full((sheet_h, sheet_w, 3), 32, np.uint8)
    cols = max(1, min(COLUMNS, len(tiles)))
    tile_h = tiles[0][0].shape[0]
    for i, (tile, caption) in enumerate(tiles):
        r, c = divmod(i, cols)
        x = GAP + c * (thumb_width + GAP)
        y = GAP + r * (tile_h + CAPTION_HEIGHT + GAP)
        sheet[y:y + tile_h, x:x + thumb_width] = tile
        cv2.putText(sheet, caption, (x + 2, y + tile_h + CAPTION_HEIGHT - 5),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (235, 235, 235), 1, cv2.LINE_AA)
    # 4:4:4 chroma: the thin coloured box lines keep their colour (4:2:0 smears them).
    ok, data = cv2.imencode(".jpg", sheet, [cv2.IMWRITE_JPEG_QUALITY, int(quality),
                                            cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                                            cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])
    if not ok:
        raise ValueError("OpenCV could not encode the contact sheet")
    return data.tobytes()


# --- timeline --------------------------------------------------------------------------------


def _mpl_text(text: str) -> str:
    """Plain text for matplotlib: a ``$`` would start mathtext."""
    return text.replace("$", r"\$")


def _fps(value: Any) -> float | None:
    if value is None:
        return None
    fps = float(Fraction(value)) if isinstance(value, str) else float(value)
    return fps if fps > 0 else None


def timeline_plot(keyframes: pa.Table, frame_count: int, fps: float | None = None,
                  cuts: Sequence[int] = ()) -> bytes:
    """A PNG of one clip's tracks: one row per track (``#id label``), visible ranges as bars
    in the track's colour, hidden ranges as grey hatched bars, keyframes as ticks and a
    person's keyframes (``kind == "human"``) as diamonds, shot ``cuts`` as dashed lines;
    x in frames 0..``frame_count``,
    with seconds on top when ``fps`` is given. At most `MAX_ROWS` tracks are drawn (then
    "+N more"); a clip without tracks says "no tracks". The height grows with the rows."""
    # Imported here: matplotlib takes ~0.3 s to import and only this function needs it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    frame_count = max(int(frame_count), 1)
    tracks = track_segments(keyframes, frame_count)
    shown, more = tracks[:MAX_ROWS], max(len(tracks) - MAX_ROWS, 0)
    rows = max(len(shown), 1)
    m = MARGINS_IN
    height_in = m["top"] + m["bottom"] + ROW_HEIGHT_IN * rows + (0.25 if more else 0)
    fig = Figure(figsize=(TIMELINE_WIDTH_IN, height_in), dpi=TIMELINE_DPI)
    FigureCanvasAgg(fig)
    axes_h = ROW_HEIGHT_IN * rows
    ax = fig.add_axes((m["left"] / TIMELINE_WIDTH_IN, (height_in - m["top"] - axes_h) / height_in,
                       (TIMELINE_WIDTH_IN - m["left"] - m["right"]) / TIMELINE_WIDTH_IN,
                       axes_h / height_in))
    ax.set_xlim(0, frame_count)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_xlabel("frame", fontsize=8)
    ax.tick_params(labelsize=7)
    if not shown:
        ax.set_yticks([])
        ax.text(0.5, 0.5, "no tracks", transform=ax.transAxes, ha="center", va="center",
                fontsize=10, color="#555555")
    else:
        ticks_x, ticks_y, human_x, human_y = [], [], [], []
        for y, track in enumerate(shown):
            color = tuple(v / 255 for v in track_color(track["track_id"]))
            visible = [(s, e - s) for s, e, hidden in track["segments"] if not hidden]
            hidden = [(s, e - s) for s, e, hidden in track["segments"] if hidden]
            if visible:
                ax.broken_barh(visible, (y - 0.35, 0.7), facecolors=color, linewidth=0)
            if hidden:
                ax.broken_barh(hidden, (y - 0.35, 0.7), facecolors=HIDDEN_FACE,
                               edgecolors=HIDDEN_EDGE, hatch="////", linewidth=0)
            for frame, kind in track["keyframes"]:
                (human_x if kind == "human" else ticks_x).append(frame + 0.5)
                (human_y if kind == "human" else ticks_y).append(y)
        ax.scatter(ticks_x, ticks_y, marker="|", s=60, c="black", linewidths=1, zorder=3)
        ax.scatter(human_x, human_y, marker="D", s=22, c="white", edgecolors="black",
                   linewidths=1, zorder=4)
        ax.set_yticks(range(len(shown)))
        ax.set_yticklabels([_mpl_text(f"#{t['track_id']} {'/'.join(t['labels'])}"[:28])
                            for t in shown])
        ax.grid(axis="x", color="#eeeeee", linewidth=0.6)
        ax.set_axisbelow(True)
        fig.legend(handles=[
            Patch(facecolor=(0.4, 0.4, 0.4), label="visible (track colour)"),
            Patch(facecolor=HIDDEN_FACE, edgecolor=HIDDEN_EDGE, hatch="////", label="hidden"),
            Line2D([], [], marker="|", color="black", linestyle="", markersize=8, label="keyframe"),
            Line2D([], [], marker="D", markerfacecolor="white", markeredgecolor="black",
                   color="black", linestyle="", markersize=5, label="human keyframe")],
            loc="lower center", ncols=4, fontsize=7, frameon=False, bbox_to_anchor=(0.5, 0.0))
    for cut in cuts:
        ax.axvline(cut, color=CUT_COLOR, linestyle="--", linewidth=0.9, zorder=5)
    if cuts:
        fig.text(0.99, 0.01, f"dashed: {len(cuts)} shot cut{'s' * (len(cuts) != 1)}",
                 fontsize=7, color=CUT_COLOR, ha="right")
    if more:
        fig.text(0.01, 0.01, f"+{more} more tracks", fontsize=8, color="#555555")
    rate = _fps(fps)
    if rate:
        top = ax.secondary_xaxis("top", functions=(lambda f: f / rate, lambda s: s * rate))
        top.set_xlabel(f"seconds (at {rate:g} fps)", fontsize=8)
        top.tick_params(labelsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=TIMELINE_DPI, metadata={"Software": None})
    return buffer.getvalue()


# --- files, digest and markdown --------------------------------------------------------------


def preview_paths(out: Location, record: dict[str, Any]) -> dict[str, str]:
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


def _state_path(out: Location, record: dict[str, Any]) -> str:
    return out.path(STATE_DIR, f"{clip_id_for(record['source_uri'])}.json")


def clip_digest(keyframes: pa.Table, record: dict[str, Any], cuts: Sequence[int] = ()) -> str:
    """BLAKE2b-128 (hex) of what the previews show: the clip's keyframe rows (sorted by
    track and frame, column by column, so row order and chunking do not matter), the WebM's
    identity (URL, size, convert key, source fingerprint), its shot cuts and
    `PREVIEW_VERSION`."""
    table = sort_tracks(keyframes.cast(KEYFRAME_SCHEMA)).combine_chunks()
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([PREVIEW_VERSION, record.get("output_uri"), record.get("output_bytes"),
                         record.get("convert_key"), record.get("fingerprint"),
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


def write_previews(out: Location, record: dict[str, Any], keyframes: pa.Table, digest: str,
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
    fps = record.get("output_fps_measured") or record.get("fps")
    write_bytes_atomic(out, paths["contact_sheet"], contact_sheet(out, record, keyframes))
    frame_count = int(record.get("output_frames") or 0)
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


def clip_markdown(record: dict[str, Any], summary: dict[str, Any], images: dict[str, bytes],
                  *, links: dict[str, str] | None = None) -> str:
    """Markdown for a Prefect markdown artifact: a heading naming the clip, a table of the
    summary (`_SUMMARY_ORDER` keys first), the images inline as base64 ``data:`` URIs (the
    Prefect 3.8 UIs render ``data:image/...`` in ``<img>``), and ``links`` (e.g. the URLs
    `write_previews` returns) listed under them, so a UI that strips data URIs still says
    where the files are."""
    recording = record.get("recording") or ""
    name = f"{recording}/{record.get('clip_name')}" if recording else f"{record.get('clip_name')}"
    lines = [f"### {_md(name)} (clip {record.get('clip_index')})", ""]
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


__all__ = ["PALETTE", "track_color", "track_segments", "choose_frames", "sheet_size",
           "contact_sheet", "timeline_plot", "preview_paths", "clip_digest", "write_previews",
           "clip_markdown"]
