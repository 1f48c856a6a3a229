"""A clip's contact sheet: frames chosen where tracks are visible, decoded exactly, with
every track's box drawn in its colour (a JPEG).
"""

from __future__ import annotations


import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.store.record import ClipRecord
from tasks.media.webm import open_webm
from tasks.annotations.keyframes import KEYFRAME_SCHEMA, expand, sort_tracks, track_starts
from tasks.store.storage import Location
from tasks.report.timeline import _visible_runs, track_color, track_segments


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


def contact_sheet(out: Location, record: ClipRecord, keyframes: pa.Table, *, count: int = 8,
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
            raise ValueError(f"{record.output_uri}: the WebM has no frames")
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
