"""A synthetic tracking scene with exact ground truth, written with PyAV at test time.

A fixed camera looks at a static textured background with a textured pillar standing in
front of it (the occluder, drawn over the objects). Four rigid textured rectangles, each
its own colour, move on curved paths at 1.1-2.4 px/frame:

- ``"A"`` (red, 32x32) crosses the frame left to right and passes behind the pillar: more
  than half hidden for frames 65-113, fully hidden for frames 74-104 (31 frames, ~1 s at 30
  fps), visible again from frame 114 on.
- ``"B"`` (green, 40x30) leaves through the right edge: visible for frames 0-43, more than
  half outside from frame 44, gone entirely from frame 55.
- ``"C"`` (blue, 36x36) enters through the bottom edge: invisible for frames 0-37, visible
  from frame 38 (wholly inside from frame 53).
- ``"D"`` (yellow, 40x40) circles in the lower right and is visible in every frame.

The paths never make two objects overlap, so the only occlusions are the pillar and the
frame edges. Positions are whole pixels (rounded from the curves), so the ground truth
boxes are exactly the drawn rectangles. Every frame gets a little seeded noise (+-2 levels)
so no two frames are bit-identical, as in real footage. Frame i has pts i in time base
1/rate (for an integer rate the mp4 track timescale is set to it), and the file is byte-identical between
runs (single-threaded x264, ``fflags=+bitexact``).
"""

from __future__ import annotations

import math
import pathlib
from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np

try:  # tests/ as a package (rootdir on sys.path) or as a plain directory (pytest prepends it)
    from tests.synth import X264_REPEATABLE, _container_options
except ImportError:
    from synth import X264_REPEATABLE, _container_options

__all__ = ["COLORS", "IDS", "Scene", "render_scene"]

IDS = ("A", "B", "C", "D")
# Mean RGB of each object's texture (its pattern has zero mean).
COLORS = {"A": (200, 50, 50), "B": (50, 180, 60), "C": (60, 80, 205), "D": (205, 190, 45)}
# (width, height) at 320 x 240; they scale with the frame.
_SIZES = {"A": (32, 32), "B": (40, 30), "C": (36, 36), "D": (40, 40)}
# The pillar, as a fraction of the frame: x from 0.4 to 0.65 of the width, full height
# (128-208 at 320 wide). Object A (32 px) is fully behind it for 48 px of its path.
_PILLAR = (0.4, 0.65)


def _centre(obj: str, t: int, w: int, h: int) -> tuple[float, float]:
    """Centre of ``obj`` at frame ``t`` for a ``w`` x ``h`` frame (designed at 320 x 240)."""
    sx, sy = w / 320, h / 240
    if obj == "A":  # rightwards, swaying up and down
        return sx * (26 + 1.6 * t), sy * (50 + 18 * math.sin(2 * math.pi * t / 100))
    if obj == "B":  # rightwards along a wave, out through the right edge
        return sx * (242 + 1.8 * t), sy * (125 + 15 * math.sin(2 * math.pi * t / 90))
    if obj == "C":  # upwards from below the bottom edge, swaying left and right
        return sx * (60 + 25 * math.sin(2 * math.pi * t / 120)), sy * (285 - 1.2 * t)
    if obj == "D":  # an ellipse in the lower right (one lap per 80 frames), clear of the pillar
        return (sx * (262 + 30 * math.sin(2 * math.pi * t / 80)),
                sy * (196 + 14 * math.cos(2 * math.pi * t / 80)))
    raise ValueError(f"unknown object {obj!r}; expected one of {IDS}")


@dataclass(frozen=True, eq=False)
class Scene:
    """Ground truth of a file written by :func:`render_scene`.

    ``boxes[obj]`` is (frames, 4) float32 xyxy clipped to the frame (zero-area at the edge
    when the object is wholly outside); ``visibility[obj]`` (frames,) float32 is the
    fraction of the object's area that is drawn (inside the frame and not behind the
    pillar); ``visible[obj]`` (frames,) bool is ``visibility >= 0.5``. ``occluder`` is the
    pillar's xyxy and ``background`` the static RGB picture (pillar included) that each
    frame draws the objects on.
    """

    path: pathlib.Path
    size: tuple[int, int]  # (width, height)
    rate: Fraction
    ids: tuple[str, ...]
    boxes: dict[str, np.ndarray]
    visibility: dict[str, np.ndarray]
    visible: dict[str, np.ndarray]
    occluder: np.ndarray
    background: np.ndarray

    @property
    def frames(self) -> int:
        return len(self.visible[self.ids[0]])

    def gt_frame(self, i: int) -> tuple[list[str], np.ndarray]:
        """``(ids, boxes)`` of the objects visible in frame ``i``; boxes (n, 4) float32 xyxy."""
        ids = [obj for obj in self.ids if self.visible[obj][i]]
        boxes = np.array([self.boxes[obj][i] for obj in ids], np.float32).reshape(-1, 4)
        return ids, boxes

    def visible_box(self, obj: str, i: int) -> np.ndarray | None:
        """The (4,) float32 xyxy box of ``obj`` in frame ``i``, or None when it is not visible."""
        return self.boxes[obj][i].copy() if self.visible[obj][i] else None


def _smooth_noise(rng: np.random.Generator, size: tuple[int, int], cell: int) -> np.ndarray:
    """(h, w) float noise in [-1, 1], smooth over ``cell`` pixels (bicubic-upscaled grid)."""
    w, h = size
    grid = rng.uniform(-1, 1, (h // cell + 2, w // cell + 2)).astype(np.float32)
    big = cv2.resize(grid, ((w // cell + 2) * cell, (h // cell + 2) * cell), interpolation=cv2.INTER_CUBIC)
    return np.clip(big[:h, :w], -1, 1)


def _background(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Static picture: muted mottled ground with fine grain, and a brick pillar over it."""
    w, h = size
    base = np.array([110, 115, 100], np.float32)  # muted grey-green, unlike every object
    large = _smooth_noise(rng, size, 24)[..., None] * np.array([25, 25, 20], np.float32)
    fine = _smooth_noise(rng, size, 4)[..., None] * np.array([10, 10, 10], np.float32)
    img = base + large + fine
    x1, x2 = round(_PILLAR[0] * w), round(_PILLAR[1] * w)
    # Bricks 16 x 8 px in alternating courses, dark mortar, each brick its own shade.
    yy, xx = np.mgrid[0:h, 0:x2 - x1]
    course = yy // 8
    brick = (xx + 8 * (course % 2)) // 16
    shade = rng.uniform(-18, 18, (course.max() + 1, brick.max() + 1)).astype(np.float32)
    pillar = np.array([125, 70, 45], np.float32) + shade[course, brick][..., None]
    mortar = (yy % 8 == 0) | ((xx + 8 * (course % 2)) % 16 == 0)
    pillar[mortar] = (60, 55, 50)
    img[:, x1:x2] = pillar
    return np.clip(img, 0, 255).round().astype(np.uint8), (x1, 0, x2, h)


def _size(obj: str, w: int, h: int) -> tuple[int, int]:
    """(width, height) of ``obj`` in a ``w`` x ``h`` frame (the sizes are for 320 x 240)."""
    bw, bh = _SIZES[obj]
    return max(2, round(bw * w / 320)), max(2, round(bh * h / 240))


def _texture(rng: np.random.Generator, obj: str, size: tuple[int, int]) -> np.ndarray:
    """The object's own pattern, averaging its colour: 4-px blocks of +-40 and a dark border."""
    bw, bh = size
    blocks = rng.uniform(-40, 40, ((bh + 3) // 4, (bw + 3) // 4)).astype(np.float32)
    pattern = np.repeat(np.repeat(blocks, 4, axis=0), 4, axis=1)[:bh, :bw]
    pattern[[0, -1], :] -= 40
    pattern[:, [0, -1]] -= 40
    pattern -= pattern.mean()  # no clipping below: every colour channel is in 45..210
    return np.array(COLORS[obj], np.float32) + pattern[..., None]


def _open_stream(container, size: tuple[int, int], rate: Fraction):
    # Single-threaded x264 (bytes independent of the CPU count), crf 12 so textures and
    # edges survive coding; preset veryfast halves the encoding time of the noisy frames.
    options = {"crf": "12", "preset": "veryfast"}
    if X264_REPEATABLE:
        options["x264-params"] = ":".join(X264_REPEATABLE)
    stream = container.add_stream("libx264", rate=rate, options=options)
    ctx = stream.codec_context
    ctx.width, ctx.height = size
    ctx.pix_fmt = "yuv420p"
    ctx.thread_count = 1
    return stream


def render_scene(
    path: pathlib.Path,
    *,
    size: tuple[int, int] = (320, 240),
    frames: int = 150,
    rate: Fraction = Fraction(30),
    seed: int = 0,
) -> Scene:
    """Write the scene as H.264 mp4 to ``path`` and return its ground truth.

    The layout is made for 320 x 240; paths, object sizes and the pillar scale with
    ``size`` (even sizes: x264 4:2:0), so the events keep their timing. At 320 x 240 they
    happen at the frames named in the module docstring (all of them by frame 114, so use
    ``frames >= 120``). ``seed`` changes the textures and noise, not the paths.
    """
    path = pathlib.Path(path)
    w, h = size
    rate = Fraction(rate)
    rng = np.random.default_rng(seed)
    background, occ = _background(rng, size)
    textures = {obj: _texture(rng, obj, _size(obj, w, h)) for obj in IDS}
    full = {obj: np.zeros((frames, 4), np.int64) for obj in IDS}
    for obj in IDS:
        bw, bh = _size(obj, w, h)
        for t in range(frames):
            cx, cy = _centre(obj, t, w, h)
            x1, y1 = round(cx - bw / 2), round(cy - bh / 2)
            full[obj][t] = (x1, y1, x1 + bw, y1 + bh)

    boxes, visibility, visible = {}, {}, {}
    for obj in IDS:
        b = full[obj]
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        clipped = np.column_stack([np.clip(b[:, 0], 0, w), np.clip(b[:, 1], 0, h),
                                   np.clip(b[:, 2], 0, w), np.clip(b[:, 3], 0, h)])
        inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
        # Pillar spans the full height, so what it hides is the x overlap times the inside height.
        hidden_w = np.clip(np.minimum(clipped[:, 2], occ[2]) - np.maximum(clipped[:, 0], occ[0]), 0, None)
        hidden = hidden_w * (clipped[:, 3] - clipped[:, 1])
        boxes[obj] = clipped.astype(np.float32)
        visibility[obj] = ((inside - hidden) / area).astype(np.float32)
        visible[obj] = visibility[obj] >= 0.5

    noise_rng = np.random.default_rng(seed + 1)
    options = _container_options(path, False)
    if rate.denominator == 1:
        # Track timescale = rate, so a decoded frame's pts is its index (the mov muxer would
        # otherwise pick 1/15360 for 30 fps, and pts would be 512 * index). A fractional
        # rate keeps the muxer's choice: there pts * time_base == index / rate.
        options["video_track_timescale"] = str(rate.numerator)
    with av.open(str(path), "w", container_options=options) as container:
        stream = _open_stream(container, size, rate)
        textures = {obj: tex.round().astype(np.int16) for obj, tex in textures.items()}
        for t in range(frames):
            img = background.astype(np.int16)
            for obj in IDS:
                paste(img, textures[obj], full[obj][t])
            img[:, occ[0]:occ[2]] = background[:, occ[0]:occ[2]]  # the pillar stands in front
            encode_noisy(container, stream, img, noise_rng, t)
        for packet in stream.encode(None):
            container.mux(packet)
    return Scene(path=path, size=(w, h), rate=rate, ids=IDS, boxes=boxes, visibility=visibility,
                 visible=visible, occluder=np.array(occ, np.float32), background=background)


def paste(img: np.ndarray, texture: np.ndarray, box) -> None:
    """Draw an object's ``texture`` (its whole box ``x1, y1, x2, y2``) into ``img``, clipped
    to the frame."""
    x1, y1, x2, y2 = (int(v) for v in box)
    h, w = img.shape[:2]
    cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if cx1 < cx2 and cy1 < cy2:
        img[cy1:cy2, cx1:cx2] = texture[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]


def encode_noisy(container, stream, img: np.ndarray, noise: np.random.Generator, t: int) -> None:
    """Add sensor-like noise to the int16 frame ``img`` and encode it as frame ``t``."""
    img += noise.integers(-2, 3, img.shape, dtype=np.int16)
    frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
    frame.pts = t
    for packet in stream.encode(frame):
        container.mux(packet)
