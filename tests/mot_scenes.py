"""Multi-object tracking scenes with exact ground truth, rendered with PyAV at test time.

People are textured upright rectangles walking on a textured ground; the nearer one is
drawn over the farther one, so overlaps hide people as in real footage. Three scenes, each
a test of one thing trackers get wrong (frames at 30 fps):

- ``"overlap"`` (fixed camera, 480x272, 210 frames): P1 walks right and catches up with the
  slower P2, who stays more than half hidden behind P1 for about a second; P3 and P4 cross
  each other head-on; P5 walks out through the right edge; P6 walks in late from the left.
- ``"cut"`` (fixed camera, 480x272, 150 frames): two shots of three people on different
  grounds, the second starting at frame 75 with people where the first shot's were.
- ``"pan"`` (480x272, 180 frames): a hand-held camera pans over a wider ground with an
  uneven speed and a shake of up to 8 pixels a frame while four people walk, two crossing.

Ground truth per frame: each person's full box clipped to the frame, and the fraction of
its area that is drawn (inside the frame and not behind a nearer person). MOT files mark
people at least half visible as pedestrians (class 1) and partly visible ones as
distractors (class 8: a box on them is neither a hit nor a false positive), as MOT17 does.
The files are byte-identical between runs (single-threaded x264, ``+bitexact``).
"""

from __future__ import annotations

import math
import pathlib
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import av
import cv2
import numpy as np

from tests.scene import encode_noisy, paste

try:  # tests/ as a package (rootdir on sys.path) or as a plain directory
    from tests.synth import X264_REPEATABLE
except ImportError:
    from synth import X264_REPEATABLE

__all__ = ["SCENES", "SceneTruth", "render"]

RATE = Fraction(30)
SIZE = (480, 272)


@dataclass(frozen=True)
class _Person:
    pid: int
    size: tuple[int, int]                       # (w, h) pixels
    path: Callable[[int], tuple[float, float]]  # frame -> centre in ground coordinates
    depth: float                                # larger is nearer the camera (drawn later)
    colour: tuple[int, int, int]
    frames: tuple[int, int] = (0, 10**9)        # shot frames it lives in [first, last]


@dataclass(frozen=True)
class _Shot:
    first: int
    ground_seed: int
    people: tuple[_Person, ...]


@dataclass(frozen=True, eq=False)
class SceneTruth:
    """``boxes[pid]`` (frames, 4) float32 xyxy clipped to the frame (zero area when
    outside); ``visibility[pid]`` (frames,) float32; ``cuts``: first frames of new shots;
    ``camera`` (frames, 2): the view's top-left in ground pixels."""

    path: pathlib.Path
    size: tuple[int, int]
    rate: Fraction
    frames: int
    boxes: dict[int, np.ndarray]
    visibility: dict[int, np.ndarray]
    cuts: tuple[int, ...]
    camera: np.ndarray

    def rows(self, min_visibility: float = 0.0):
        """(frame, pid, box, visibility) for every person with some part drawn."""
        for f in range(self.frames):
            for pid in sorted(self.boxes):
                v = float(self.visibility[pid][f])
                if v > min_visibility:
                    yield f, pid, self.boxes[pid][f], v

    def write_mot(self, path: pathlib.Path) -> pathlib.Path:
        """MOTChallenge gt.txt: 1-based frames; class 1 at least half visible, else 8."""
        lines = []
        for f, pid, (x1, y1, x2, y2), v in self.rows():
            cls = 1 if v >= 0.5 else 8
            lines.append(f"{f + 1},{pid},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},1,{cls},{v:.3f}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        return path


def _walk(x0: float, y0: float, vx: float, vy: float = 0.0, t0: int = 0, sway: float = 0.0):
    return lambda t: (x0 + vx * (t - t0), y0 + vy * (t - t0) + sway * math.sin((t - t0) / 9))


_RED, _BLUE, _GREEN = (190, 60, 55), (55, 85, 190), (60, 160, 70)
_YELLOW, _PURPLE, _ORANGE = (200, 185, 50), (140, 70, 160), (215, 130, 40)


def _overlap() -> tuple[int, tuple[int, int], list[_Shot], Callable]:
    people = (
        _Person(1, (34, 84), _walk(30, 176, 1.6), 3, _RED),
        _Person(2, (26, 66), _walk(120, 160, 0.6), 1, _BLUE),     # P1 passes in front
        _Person(3, (28, 70), _walk(40, 90, 1.3, sway=3), 2, _GREEN),
        _Person(4, (32, 80), _walk(440, 104, -1.3, sway=3), 2.5, _YELLOW),  # crosses P3
        _Person(5, (26, 64), _walk(330, 230, 1.5), 4, _PURPLE),   # leaves on the right
        _Person(6, (30, 76), _walk(-20, 220, 1.2, t0=90), 5, _ORANGE, (90, 10**9)),  # late
    )
    return 210, SIZE, [_Shot(0, 11, people)], lambda t: (0.0, 0.0)


def _cut() -> tuple[int, tuple[int, int], list[_Shot], Callable]:
    first = (
        _Person(1, (30, 76), _walk(60, 140, 1.2), 1, _RED, (0, 74)),
        _Person(2, (30, 76), _walk(240, 150, -0.8), 2, _GREEN, (0, 74)),
        _Person(3, (26, 66), _walk(380, 200, 1.0), 3, _YELLOW, (0, 74)),
    )
    # The second shot's people stand where the first shot's were at the cut.
    second = (
        _Person(4, (30, 76), _walk(150, 140, 1.0, t0=75), 1, _BLUE, (75, 10**9)),
        _Person(5, (30, 76), _walk(180, 150, -1.0, t0=75), 2, _PURPLE, (75, 10**9)),
        _Person(6, (26, 66), _walk(455, 200, -1.2, t0=75), 3, _ORANGE, (75, 10**9)),
    )
    return 150, SIZE, [_Shot(0, 21, first), _Shot(75, 22, second)], lambda t: (0.0, 0.0)


def _pan() -> tuple[int, tuple[int, int], list[_Shot], Callable]:
    people = (
        _Person(1, (30, 76), _walk(200, 150, 0.8), 1, _RED),
        _Person(2, (30, 76), _walk(480, 160, -0.9), 2, _GREEN),    # crosses P1
        _Person(3, (28, 70), _walk(300, 215, 1.1), 3, _YELLOW),
        _Person(4, (26, 66), _walk(700, 100, -0.6), 1.5, _BLUE),
    )

    def camera(t: int) -> tuple[float, float]:  # uneven pan right, with a hand-held shake
        return (120 + 2.2 * t + 18 * math.sin(t / 6) + 8 * math.sin(t * 1.3),
                12 + 5 * math.sin(t / 4.3) + 4 * math.sin(t * 1.7))

    return 180, SIZE, [_Shot(0, 31, people)], camera


SCENES: dict[str, Callable] = {"overlap": _overlap, "cut": _cut, "pan": _pan}


def _ground(seed: int, size: tuple[int, int]) -> np.ndarray:
    """A textured ground: mottled, with fine grain and paving lines (features to track)."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = np.full((h, w, 3), (112, 116, 104), np.float32)
    for cell, amp in ((40, 26), (9, 14), (3, 6)):
        grid = rng.uniform(-1, 1, (h // cell + 2, w // cell + 2)).astype(np.float32)
        big = cv2.resize(grid, ((w // cell + 2) * cell, (h // cell + 2) * cell),
                         interpolation=cv2.INTER_CUBIC)[:h, :w]
        img += big[..., None] * amp
    img[::32, :] -= 30
    img[:, ::48] -= 30
    tint = rng.uniform(-12, 12, 3).astype(np.float32)
    return np.clip(img + tint, 0, 255).astype(np.uint8)


def _texture(rng: np.random.Generator, person: _Person) -> np.ndarray:
    """Head, shirt and trousers in the person's colours, with a blocky pattern."""
    w, h = person.size
    body = np.empty((h, w, 3), np.float32)
    colour = np.array(person.colour, np.float32)
    head = max(4, h // 6)
    body[:head] = (205, 170, 140)
    body[head:h // 2 + head // 2] = colour
    body[h // 2 + head // 2:] = colour * 0.45
    blocks = rng.uniform(-30, 30, ((h + 3) // 4, (w + 3) // 4)).astype(np.float32)
    body += np.repeat(np.repeat(blocks, 4, 0), 4, 1)[:h, :w, None]
    body[:, [0, -1]] -= 45
    body[[0, -1], :] -= 45
    return np.clip(body, 0, 255).astype(np.uint8)


def render(name: str, path: pathlib.Path, seed: int = 0) -> SceneTruth:
    """Write scene ``name`` as H.264 mp4 to ``path``; returns its ground truth."""
    frames, (w, h), shots, camera = SCENES[name]()
    path = pathlib.Path(path)
    rng = np.random.default_rng(seed)
    span = max(int(math.ceil(camera(t)[0])) for t in range(frames)) + w + 8
    grounds = {s.first: _ground(s.ground_seed + seed, (max(span, w), h + 24)) for s in shots}
    people = [p for s in shots for p in s.people]
    textures = {p.pid: _texture(rng, p) for p in people}
    boxes = {p.pid: np.zeros((frames, 4), np.float32) for p in people}
    visibility = {p.pid: np.zeros(frames, np.float32) for p in people}
    cams = np.array([camera(t) for t in range(frames)], np.float64)
    noise = np.random.default_rng(seed + 1)
    with av.open(str(path), "w", container_options={"fflags": "+bitexact", "video_track_timescale": "30"}) as container:
        options = {"crf": "14", "preset": "veryfast"}
        if X264_REPEATABLE:
            options["x264-params"] = ":".join(X264_REPEATABLE)
        stream = container.add_stream("libx264", rate=RATE, options=options)
        stream.codec_context.width, stream.codec_context.height = w, h
        stream.codec_context.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        for t in range(frames):
            shot = max((s for s in shots if s.first <= t), key=lambda s: s.first)
            cx, cy = cams[t]
            ox, oy = int(round(cx)), int(round(cy))
            img = grounds[shot.first][oy:oy + h, ox:ox + w].astype(np.int16)
            covered = np.zeros((h, w), bool)
            alive = [p for p in shot.people if p.frames[0] <= t <= p.frames[1]]
            # Nearest first for visibility, then drawn farthest first.
            for p in sorted(alive, key=lambda p: -p.depth):
                x1, y1, x2, y2 = _box(p, t, ox, oy)
                cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
                if cx1 >= cx2 or cy1 >= cy2:
                    continue
                boxes[p.pid][t] = (cx1, cy1, cx2, cy2)
                drawn = ~covered[cy1:cy2, cx1:cx2]
                visibility[p.pid][t] = drawn.sum() / ((x2 - x1) * (y2 - y1))
                covered[cy1:cy2, cx1:cx2] = True
            for p in sorted(alive, key=lambda p: p.depth):
                paste(img, textures[p.pid], _box(p, t, ox, oy))
            encode_noisy(container, stream, img, noise, t)
        for packet in stream.encode(None):
            container.mux(packet)
    return SceneTruth(path=path, size=(w, h), rate=RATE, frames=frames, boxes=boxes,
                      visibility=visibility, cuts=tuple(s.first for s in shots[1:]), camera=cams)


def _box(p: _Person, t: int, ox: int, oy: int) -> tuple[int, int, int, int]:
    gx, gy = p.path(t)
    bw, bh = p.size
    x1, y1 = int(round(gx - bw / 2)) - ox, int(round(gy - bh / 2)) - oy
    return x1, y1, x1 + bw, y1 + bh
