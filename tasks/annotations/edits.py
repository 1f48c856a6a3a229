"""Annotation tracks as people edit them: a `Track` of `Keyframe`s, and the edits the annotation
studios offer (set start or end, hide or show from a frame, change the label or attributes with
a scope, move one box, delete a keyframe).

What a frame shows is defined by `tasks.annotations.keyframes.expand` alone; this module only chooses
keyframes. Every edit returns a new, validated `Track` and changes exactly the frames it names:
where adding or dropping a keyframe would move other frames, the state there is materialised as
a keyframe first (its interpolated box, ``source="interpolated"``). Boxes are float32, as in the
table, so a track survives `tracks_to_table` / `tracks_from_table` unchanged; a materialised box
is therefore exact to float32 rounding (about 1e-4 px), not bit for bit.

Kinds are facts, derived again after every edit in the precedence order of `KINDS`: the first
keyframe is ``start``, one on an explicit end ``end``, a hidden one ``hidden``, a visible one
after a hidden one ``shown``, one whose label or attributes differ from the previous one's
``label``. Any other keyframe keeps ``human`` or ``compacted`` and otherwise becomes ``human``:
it exists because a person's edit needed it (its ``source`` tells whether a person drew the box).
"""

from __future__ import annotations

import bisect
import copy
import json
import math
from array import array
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.errors import EditError
from tasks.annotations.keyframes import (BOX, KEYFRAME_SCHEMA, KINDS, MODES, attributes_json, expand,
                             sort_tracks, track_starts)

Box = tuple[float, float, float, float]
Scope = str | tuple[str, int]  # "next" | "end" | ("range", last_frame)
_SAME = object()  # "keep the end" in `Track._rebuild` (None means "to the clip's end")


class Attributes(Mapping[str, Any]):
    """An immutable JSON object (from a mapping or JSON text), equal and hashed by its
    canonical JSON (`attributes_json`), which is what the table stores."""

    __slots__ = ("json", "_data")

    def __init__(self, data: Mapping[str, Any] | str | None = None):
        try:
            value = json.loads(data) if isinstance(data, str) else dict(data or {})
            if not isinstance(value, dict):
                raise TypeError(f"not an object: {data!r}")
            self.json = attributes_json(value)
        except (TypeError, ValueError) as e:
            raise EditError(f"attributes must be a JSON object with text keys: {e}") from e
        self._data = json.loads(self.json)  # a private copy: the caller's dict stays theirs

    def __getitem__(self, key: str) -> Any:
        return copy.deepcopy(self._data[key])  # nested values must not change in place

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return self.json == (other if isinstance(other, Attributes) else Attributes(other)).json

    def __hash__(self) -> int:
        return hash(self.json)

    def __repr__(self) -> str:
        return f"Attributes({self.json})"


@dataclass(frozen=True)
class Keyframe:
    frame: int
    box: Box  # x1, y1, x2, y2 in WebM pixels, rounded to float32 as the table stores them
    hidden: bool
    label: str
    attributes: Attributes
    kind: str
    source: str = "human"
    score: float = 1.0

    def __post_init__(self) -> None:
        try:  # array "f" rounds to float32 (the table's precision) and refuses non-numbers
            box = array("f", self.box).tolist()
        except TypeError as e:
            raise EditError(f"frame {self.frame}: a box is 4 numbers, got {self.box!r}") from e
        if len(box) != 4:
            raise EditError(f"frame {self.frame}: a box is 4 numbers (x1, y1, x2, y2), got "
                            f"{self.box!r}")
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "frame", int(self.frame))
        set_(self, "box", tuple(box))
        set_(self, "hidden", bool(self.hidden))
        set_(self, "score", array("f", [self.score])[0])
        if not isinstance(self.attributes, Attributes):
            set_(self, "attributes", Attributes(self.attributes))


class State(NamedTuple):
    label: str
    box: Box  # float64, exactly as `expand` computes it
    hidden: bool
    attributes: Attributes


def _kind(k: Keyframe, prev: Keyframe | None, end: int | None) -> str:
    if prev is None:
        return "start"
    if k.frame == end:
        return "end"
    if k.hidden:
        return "hidden"
    if prev.hidden:
        return "shown"
    if k.label != prev.label or k.attributes != prev.attributes:
        return "label"
    return k.kind if k.kind in ("human", "compacted") else "human"


@dataclass(frozen=True)
class Track:
    recording: str
    clip_index: int
    track_id: int
    mode: str
    keyframes: tuple[Keyframe, ...]
    end: int | None = None  # last frame; None: to the clip's end
    clip_frames: int | None = None  # the clip's frame count, when known

    def __post_init__(self) -> None:
        object.__setattr__(self, "keyframes", tuple(self.keyframes))
        if self.mode not in MODES:
            raise self._fail(f"mode must be one of {MODES}, got {self.mode!r}")
        if not self.keyframes:
            raise self._fail("a track needs at least one keyframe")
        if self.keyframes[0].hidden:
            raise self._fail("the first frame cannot be hidden", self.start)
        if self.start < 0:
            raise self._fail("negative frame index", self.start)
        previous = -1
        for k in self.keyframes:
            if k.frame <= previous:
                raise self._fail("keyframes must be sorted, one per frame", k.frame)
            previous = k.frame
            if not all(map(math.isfinite, k.box)):
                raise self._fail(f"box {k.box} is not finite", k.frame)
            if k.box[2] < k.box[0] or k.box[3] < k.box[1]:
                raise self._fail(f"box {k.box} has x2 < x1 or y2 < y1", k.frame)
            if k.kind not in KINDS:
                raise self._fail(f"kind must be one of {tuple(KINDS)}, got {k.kind!r}", k.frame)
            if not isinstance(k.label, str) or not k.label:
                raise self._fail(f"label must be non-empty text, got {k.label!r}", k.frame)
        if self.end is not None and self.end < self.start:
            raise self._fail(f"the end {self.end} is before the start", self.start)
        if self.end is not None and previous > self.end:
            raise self._fail(f"a keyframe after the end {self.end}", previous)
        last = previous if self.end is None else self.end
        if self.clip_frames is not None and last >= self.clip_frames:
            raise self._fail(f"past the clip's {self.clip_frames} frames", last)

    def _fail(self, rule: str, frame: int | None = None) -> EditError:
        at = "" if frame is None else f" at frame {frame}"
        return EditError(f"track {self.track_id} of {self.recording!r} clip {self.clip_index}: "
                         f"{rule}{at}")

    @cached_property
    def frames(self) -> list[int]:
        return [k.frame for k in self.keyframes]

    @property
    def start(self) -> int:
        return self.keyframes[0].frame

    @property
    def label(self) -> str:
        return self.keyframes[0].label

    @property
    def last_frame(self) -> int:
        if self.end is not None:
            return self.end
        if self.clip_frames is None:
            raise self._fail("no end and the clip's frame count is unknown")
        return self.clip_frames - 1

    def _inside(self, frame: int) -> None:
        if not self.start <= frame <= self.last_frame:
            raise self._fail(f"frame outside the track ({self.start}..{self.last_frame})", frame)

    def _interp(self, frame: int) -> tuple[Keyframe, Box]:
        """The keyframe at or before ``frame`` and the box `expand` gives there (held past the
        last keyframe, so this also answers for frames a longer end would add)."""
        i = bisect.bisect_right(self.frames, frame) - 1
        k = self.keyframes[i]
        if self.mode == "linear" and not k.hidden and i + 1 < len(self.keyframes):
            n = self.keyframes[i + 1]
            t = (frame - k.frame) / (n.frame - k.frame)  # the same float64 steps as `expand`
            return k, tuple(a + (b - a) * t for a, b in zip(k.box, n.box))
        return k, k.box

    def _at(self, frame: int) -> Keyframe:
        """The keyframe at ``frame``, or the state there materialised as one."""
        k, box = self._interp(frame)
        if k.frame == frame:
            return k
        return replace(k, frame=frame, box=box, kind="human", source="interpolated")

    def state_at(self, frame: int) -> State:
        self._inside(frame)
        k, box = self._interp(frame)
        return State(k.label, tuple(float(v) for v in box), k.hidden, k.attributes)

    def states(self) -> pa.Table:
        """Every frame of the track as `STATE_SCHEMA` rows, by `expand`."""
        self._inside(self.start)  # fails early when the last frame is unknown
        clip = {(self.recording, self.clip_index): self.clip_frames} if self.clip_frames else None
        return expand(tracks_to_table([self]), clip)

    def _rebuild(self, keyframes: Iterable[Keyframe], end: Any = _SAME) -> Track:
        end = self.end if end is _SAME else end
        ordered = sorted(keyframes, key=lambda k: k.frame)
        out, prev = [], None
        for k in ordered:
            kind = _kind(k, prev, end)
            out.append(k if kind == k.kind else replace(k, kind=kind))
            prev = k
        return replace(self, keyframes=tuple(out), end=end)

    def _with(self, *new: Keyframe | None) -> list[Keyframe]:
        by_frame = {k.frame: k for k in self.keyframes}
        by_frame.update((k.frame, k) for k in new if k is not None)
        return sorted(by_frame.values(), key=lambda k: k.frame)

    @staticmethod
    def _drawn(box: Box | None) -> dict[str, Any]:
        return {} if box is None else {"box": box, "source": "human", "score": 1.0}

    # --- edits: each returns a new Track -------------------------------------------------

    def set_start(self, frame: int, box: Box | None = None) -> Track:
        """Start at ``frame``. Later: the state there becomes the start (at ``box`` on that
        frame only, as `move_box`), earlier keyframes go. Earlier: the start's label and box
        (or ``box``) begin there and the old start stays a keyframe, so nothing from it on
        changes."""
        if frame < 0 or frame > self.last_frame:
            raise self._fail(f"a start must be within 0..{self.last_frame} (the end)", frame)
        if frame < self.start:
            new = replace(self.keyframes[0], frame=frame,
                          **({"source": "interpolated"} | self._drawn(box)))
            return self._rebuild((new,) + self.keyframes)
        first = self._at(frame)
        if first.hidden:
            raise self._fail("cannot start on a hidden frame (show it first)", frame)
        later = self._rebuild([first] + [k for k in self.keyframes if k.frame > frame])
        return later if box is None else later.move_box(frame, box)

    def set_end(self, frame: int | None) -> Track:
        """End at ``frame`` (None: at the clip's end). The state there becomes a keyframe, so
        the frames before keep theirs; a later end holds the last state."""
        if frame is None:
            return self._rebuild(self.keyframes, end=None)
        if frame < self.start:
            raise self._fail(f"the end cannot be before the start {self.start}", frame)
        if self.clip_frames is not None and frame >= self.clip_frames:
            raise self._fail(f"the end must be within the clip's {self.clip_frames} frames", frame)
        kept = [k for k in self.keyframes if k.frame < frame]
        return self._rebuild(kept + [self._at(frame)], end=frame)

    def hide(self, frame: int) -> Track:
        """Hidden from ``frame`` until the next keyframe (CVAT's outside)."""
        self._inside(frame)
        if frame == self.start:
            raise self._fail("the first frame cannot be hidden (set a later start)", frame)
        k = self._at(frame)
        return self if k.hidden else self._rebuild(self._with(replace(k, hidden=True)))

    def show(self, frame: int, box: Box | None = None) -> Track:
        """Visible from ``frame`` until the next keyframe, at ``box`` or the last known box."""
        self._inside(frame)
        k = self._at(frame)
        if not k.hidden:
            return self if box is None else self.move_box(frame, box)
        new = replace(k, hidden=False, **self._drawn(box))
        return self._rebuild(self._with(new, None if box is None else self._lead_in(frame)))

    def move_box(self, frame: int, box: Box) -> Track:
        """A person's box at ``frame`` and nowhere else: the neighbours are materialised where
        the new box would otherwise move them."""
        self._inside(frame)
        k = self._at(frame)
        if k.hidden:
            raise self._fail("cannot move a hidden box (show it first)", frame)
        after = self._at(frame + 1) if frame < self.last_frame else None  # held/interpolated
        new = replace(k, kind="human", **self._drawn(box))
        return self._rebuild(self._with(new, after, self._lead_in(frame)))

    def _lead_in(self, frame: int) -> Keyframe | None:
        """The state at frame - 1 where it is interpolated towards ``frame``'s box."""
        if self.mode == "linear" and frame > self.start and not self._at(frame - 1).hidden:
            return self._at(frame - 1)
        return None

    def delete_keyframe(self, frame: int) -> Track:
        """Drop a keyframe; the frames between its neighbours follow them instead."""
        if frame == self.start:
            raise self._fail("the start keyframe cannot be deleted (set another start)", frame)
        if frame not in self.frames:
            raise self._fail("no keyframe to delete", frame)
        return self._rebuild(k for k in self.keyframes if k.frame != frame)

    def set_label(self, label: str, frame: int, scope: Scope,
                  allowed: Container[str] | None = None) -> Track:
        """``label`` from ``frame`` over ``scope``; ``allowed`` (a set or a `LabelTree`)
        refuses unknown labels."""
        if not isinstance(label, str) or not label:
            raise self._fail(f"a label is non-empty text, got {label!r}", frame)
        if allowed is not None and label not in allowed:
            raise self._fail(f"label {label!r} is not an allowed label", frame)
        return self._change(frame, scope, lambda k: replace(k, label=label))

    def set_attributes(self, attributes: Mapping[str, Any], frame: int, scope: Scope) -> Track:
        """Update attributes from ``frame`` over ``scope``: the given keys take the given
        values (None removes the key); other keys keep theirs on every keyframe."""
        return self._change(frame, scope, lambda k: replace(k, attributes={
            a: v for a, v in {**k.attributes, **attributes}.items() if v is not None}))

    def _change(self, frame: int, scope: Scope, edit: Callable[[Keyframe], Keyframe]) -> Track:
        """Apply ``edit`` to the keyframes of frame..stop, after materialising the states at
        ``frame`` and at stop + 1 (where the old value resumes)."""
        self._inside(frame)
        last = self.last_frame
        if scope == "end":
            stop = last
        elif scope == "next":
            i = bisect.bisect_right(self.frames, frame)
            stop = self.frames[i] - 1 if i < len(self.frames) else last
        elif isinstance(scope, tuple) and len(scope) == 2 and scope[0] == "range":
            stop = int(scope[1])
            if not frame <= stop <= last:
                raise self._fail(f"a range must end within {frame}..{last}, got {stop}", frame)
        else:
            raise self._fail(f'scope must be "next", "end" or ("range", last_frame), got '
                             f"{scope!r}", frame)
        before = self._with(self._at(frame), self._at(stop + 1) if stop < last else None)
        after = [edit(k) if frame <= k.frame <= stop else k for k in before]
        return self if after == before else self._rebuild(after)


def tracks_to_table(tracks: Iterable[Track], times_s: Mapping[tuple[str, int], Any] | None = None,
                    offsets: Mapping[tuple[str, int], int] | None = None) -> pa.Table:
    """`KEYFRAME_SCHEMA` rows. ``times_s`` maps (recording, clip_index) to the clip's frame
    timestamps (time_s is null for other clips: unknown, not guessed from a rate); ``offsets``
    maps it to the clip's first global frame (0 where not given)."""
    kfs = [(t, k) for t in tracks for k in t.keyframes]
    clocks, offsets = times_s or {}, offsets or {}

    def time_of(t: Track, frame: int) -> float | None:
        clock = clocks.get((t.recording, t.clip_index))
        if clock is None:
            return None
        if frame >= len(clock):
            raise t._fail(f"no timestamp (the clip's timeline has {len(clock)})", frame)
        return float(clock[frame])

    frame = np.array([k.frame for _, k in kfs], np.int64)
    box = np.array([k.box for _, k in kfs], np.float32).reshape(-1, 4)
    columns = {
        "recording": [t.recording for t, _ in kfs], "clip_index": [t.clip_index for t, _ in kfs],
        "track_id": [t.track_id for t, _ in kfs], "frame": frame,
        "global_frame": frame + np.array([offsets.get((t.recording, t.clip_index), 0)
                                          for t, _ in kfs], np.int64),
        "time_s": [time_of(t, k.frame) for t, k in kfs], "label": [k.label for _, k in kfs],
        **{c: box[:, i] for i, c in enumerate(BOX)}, "hidden": [k.hidden for _, k in kfs],
        "kind": [k.kind for _, k in kfs], "mode": [t.mode for t, _ in kfs],
        "end_frame": [t.end for t, _ in kfs], "attributes": [k.attributes.json for _, k in kfs],
        "source": [k.source for _, k in kfs], "score": [k.score for _, k in kfs]}
    return pa.table(columns, schema=KEYFRAME_SCHEMA)


_REQUIRED = ["recording", "clip_index", "track_id", "frame", "label", *BOX, "hidden", "kind",
             "mode"]


def tracks_from_table(keyframes: pa.Table,
                      clip_frames: Mapping[tuple[str, int], int] | None = None) -> list[Track]:
    """The tracks of a `KEYFRAME_SCHEMA` table, in (recording, clip_index, track_id) order;
    ``clip_frames`` maps (recording, clip_index) to the clip's frame count where known."""
    missing = [c for c in KEYFRAME_SCHEMA.names if c not in keyframes.column_names]
    if missing:
        raise EditError(f"keyframes table lacks columns {missing}")
    try:
        table = sort_tracks(keyframes.select(KEYFRAME_SCHEMA.names).cast(KEYFRAME_SCHEMA))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise EditError(f"keyframes table does not fit KEYFRAME_SCHEMA: {e}") from e
    nulls = [c for c in _REQUIRED if table[c].null_count]
    if nulls:
        raise EditError(f"keyframes table has nulls in {nulls}")
    if table.num_rows == 0:
        return []
    starts = track_starts(table)
    bounds = np.append(starts, table.num_rows)
    track_of = np.repeat(np.arange(len(starts)), np.diff(bounds))
    text = {c: table[c].to_pylist() for c in ("recording", "label", "kind", "mode")}
    ids = table["track_id"].to_numpy()
    no_end = table["end_frame"].is_null().to_numpy(zero_copy_only=False)
    end = pc.fill_null(table["end_frame"], 0).to_numpy()
    mode = np.asarray(text["mode"], object)
    for name, values in (("mode", mode), ("end_frame", end), ("end_frame", no_end)):
        bad = np.flatnonzero(values != values[starts][track_of])
        if bad.size:
            raise EditError(f"track {ids[bad[0]]} of {text['recording'][bad[0]]!r}: {name} "
                            f"differs between its keyframes")
    cache = {s: Attributes(s or "{}") for s in set(table["attributes"].to_pylist())}
    kfs = [Keyframe(f, b, h, lab, cache[a], kind, src or "interpolated", 1.0 if sc is None else sc)
           for f, b, h, lab, a, kind, src, sc in zip(
               table["frame"].to_numpy().tolist(),
               np.column_stack([table[c].to_numpy() for c in BOX]).tolist(),
               table["hidden"].to_pylist(), text["label"], table["attributes"].to_pylist(),
               text["kind"], table["source"].to_pylist(), table["score"].to_pylist())]
    clips = table["clip_index"].to_numpy()
    keys = [(text["recording"][a], int(clips[a])) for a in starts]
    return [Track(*key, int(ids[a]), mode[a], tuple(kfs[a:b]), None if no_end[a] else int(end[a]),
                  None if clip_frames is None else clip_frames.get(key))
            for key, a, b in zip(keys, bounds[:-1], bounds[1:])]
