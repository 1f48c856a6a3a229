"""Output frame geometry: what a person sees (rotation and pixel aspect applied), capped."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class Geometry:
    rotation: int          # clockwise degrees a player applies: 0, 90, 180 or 270
    display_width: int     # square-pixel size a person sees
    display_height: int
    width: int             # size of the WebM (display size, capped by max_height)
    height: int


def plan_geometry(stored_width: int, stored_height: int, sar: Fraction, rotation: int,
                  max_height: int | None) -> Geometry:
    """Anamorphic pixels are made square by widening (as players do), then rotation is
    applied, then an optional height cap scales both sides (aspect kept, rounded)."""
    width = max(1, round(stored_width * sar)) if sar and sar != 1 else stored_width
    height = stored_height
    if rotation in (90, 270):
        width, height = height, width
    out_w, out_h = width, height
    if max_height and height > max_height:
        out_w, out_h = max(1, round(width * max_height / height)), max_height
    return Geometry(rotation=rotation, display_width=width, display_height=height,
                    width=out_w, height=out_h)


def fit_within(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """``size`` (width, height) shrunk so its longer side is at most ``max_side`` (aspect kept)."""
    w, h = size
    if not max_side or max(w, h) <= max_side:
        return size
    factor = max_side / max(w, h)
    return max(1, round(w * factor)), max(1, round(h * factor))
