"""A reviewer's result read back: the clip's annotations in a format we export, read with that
format's validating reader within the recipe's limits, and its boxes checked against the
clip's frame (`read_reviewed`).
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.formats.base import ClipInfo
from tasks.errors import FormatError
from tasks.annotations.keyframes import BOX, sort_tracks
from tasks.recipe import ResultLimits
from tasks.track.corrections import _MAX_TRACK_ID


# Formats a review result may come back in: those with a tool that edits tracks.
REVIEWABLE_FORMATS = ("json", "cvat", "labelstudio", "dataloop")


def read_reviewed(data: bytes, fmt: str, clip: ClipInfo,
                  labels: Collection[str] | None = None,
                  limits: ResultLimits | None = None) -> pa.Table:
    """The result's keyframes (`KEYFRAME_SCHEMA`), or `FormatError` naming what is wrong;
    ``limits`` (the recipe's ``review.limits``) bound size, nesting, tracks and boxes."""
    from tasks.formats import format_module
    from tasks.formats.limits import check_before_parsing, check_counts

    limits = limits or ResultLimits()
    if fmt not in REVIEWABLE_FORMATS:
        raise FormatError(f"result format {fmt!r} is not one a review can come back in; "
                          f"choose from {', '.join(REVIEWABLE_FORMATS)}")
    if not data or not data.strip():
        raise FormatError("the result is empty")
    check_before_parsing(data, limits)
    try:
        table = format_module(fmt).read(data, clip)
    except FormatError:
        raise
    except RecursionError as e:  # XML nesting, or JSON inside an attribute string
        raise FormatError(f"not a readable {fmt} file: nested too deeply") from e
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise FormatError(f"not a readable {fmt} file: {type(e).__name__}: {e}") from e
    check_counts(table, limits)
    if table.num_rows and pc.max(table["track_id"]).as_py() >= _MAX_TRACK_ID:
        raise FormatError(f"track id {pc.max(table['track_id']).as_py()} is too large "
                          f"(at most {_MAX_TRACK_ID - 1})")
    _check_geometry(table, clip)
    if labels is not None and table.num_rows:
        allowed = set(labels)
        found = table["label"].to_pylist()
        bad = [i for i, label in enumerate(found) if label not in allowed]
        if bad:
            i = bad[0]
            raise FormatError(f"track {table['track_id'][i].as_py()} frame {table['frame'][i].as_py()}: "
                              f"unknown label {found[i]!r}; allowed: {', '.join(sorted(allowed))}")
    return sort_tracks(table)


def _check_geometry(table: pa.Table, clip: ClipInfo) -> None:
    """Every box a number, inside the frame give or take a tool's rounding (edges at most
    `_MARGIN` of the frame's size outside), at least a pixel wide and high where visible;
    scores absent or in [0, 1]. A box that breaks a rule is refused naming its track and
    frame: it would flow into every export."""
    if not table.num_rows:
        return
    box = np.column_stack([table[c].to_numpy(zero_copy_only=False) for c in BOX]).astype(np.float64)
    hidden = table["hidden"].to_numpy(zero_copy_only=False)
    w, h = float(clip.width), float(clip.height)
    mx, my = max(2.0, _MARGIN * w), max(2.0, _MARGIN * h)
    checks = [
        (~np.isfinite(box).all(1), "is not finite"),
        ((box[:, 0] < -mx) | (box[:, 1] < -my) | (box[:, 2] > w + mx) | (box[:, 3] > h + my),
         f"lies outside the {clip.width}x{clip.height} frame"),
        (~hidden & ((box[:, 2] - box[:, 0] < 1) | (box[:, 3] - box[:, 1] < 1)),
         "is under a pixel wide or high"),
    ]
    if "score" in table.column_names:
        score = pc.fill_null(table["score"], 0.0).to_numpy(zero_copy_only=False).astype(np.float64)
        checks.append((~np.isfinite(score) | (score < 0) | (score > 1), "has a score outside [0, 1]"))
    for bad, why in checks:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            detail = f"box {box[i].tolist()}" if "score" not in why else \
                f"score {table['score'][i].as_py()}"
            raise FormatError(f"track {table['track_id'][i].as_py()} frame "
                              f"{table['frame'][i].as_py()}: {detail} {why}"
                              f"{f' (and {int(bad.sum()) - 1} more)' if bad.sum() > 1 else ''}")


_MARGIN = 0.01  # share of the frame a box edge may lie outside it (a tool's rounding)
