"""A clip's timeline preview: one row per track, visible and hidden ranges, shot cuts (a PNG
drawn with matplotlib), and the track colours every preview shares.
"""

from __future__ import annotations

import io
from fractions import Fraction
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.annotations.keyframes import sort_tracks, track_starts


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
