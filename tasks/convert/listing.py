"""Listing a dataset into recordings and naturally ordered clips (no media is read here).

A recording is a folder of clips (``recording_by: folder``) or a single file
(``recording_by: file``). Clips are ordered with natsort (case-insensitive, numbers by
value, so ``2.mp4`` < ``10.mp4`` and ``02.mp4`` sits beside ``2.mp4``); ties fall back to
the raw name so the order is total and the same on every run.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from dataclasses import dataclass

from natsort import natsort_keygen, ns

from tasks.recipe import Recipe
from tasks.store.storage import Location, SourceObject, list_objects, redact, safe_component
from tasks.store.items import clip_id_for

_natural = natsort_keygen(alg=ns.IGNORECASE | ns.INT)


def natural_key(name: str) -> tuple:
    """Sort key: natural order first, then the raw string to break ties deterministically."""
    return (_natural(name), name)


@dataclass(frozen=True)
class ClipSource:
    """One clip to work on: where it is, where its outputs go, and its place in a recording."""

    source_uri: str
    path: str
    size: int
    version: str
    recording: str
    clip_name: str
    clip_index: int
    output_relpath: str

    @property
    def clip_id(self) -> str:
        """Stable name for this clip's state record (independent of the key's characters)."""
        return clip_id_for(self.source_uri)


def plan_clips(src: Location, recipe: Recipe, exclude: str | None = None,
               ignored: list[tuple[str, int, str]] | None = None) -> list[ClipSource]:
    """List ``src`` and return its clips, recordings and clips both in natural order; files
    that are not clips go to ``ignored`` with the reason."""
    objects = list_objects(src, recipe.ingest.extensions, exclude=exclude, ignored=ignored)
    groups: dict[tuple[str, ...], list[tuple[str, SourceObject]]] = defaultdict(list)
    for obj in objects:
        # Keys are data: strip the root as text (relpath would resolve "..") and keep
        # every part; "a//b" or "/abs" give empty parts, dropped here.
        prefix = src.root.rstrip("/") + "/"
        rel = obj.path[len(prefix):] if obj.path.startswith(prefix) else posixpath.basename(obj.path)
        parts = [p for p in rel.split("/") if p]
        name = parts[-1] if parts else posixpath.basename(obj.path)
        if recipe.ingest.recording_by == "file":
            folder = tuple(parts[:-1]) + (posixpath.splitext(name)[0],)
        else:
            folder = tuple(parts[:-1]) or (posixpath.basename(src.root) or "recording",)
        groups[folder].append((name, obj))

    clips: list[ClipSource] = []
    for folder in sorted(groups, key=lambda f: natural_key("/".join(f))):
        members = sorted(groups[folder], key=lambda m: natural_key(m[0]))
        stems = [posixpath.splitext(name)[0] for name, _ in members]
        recording = "/".join(folder)
        rec_rel = "/".join(safe_component(p) for p in folder)
        for index, (name, obj) in enumerate(members):
            stem = stems[index]
            # Two clips with one stem ("a.mp4", "a.mov") keep their extension to stay apart.
            base = name if stems.count(stem) > 1 else stem
            clips.append(ClipSource(
                source_uri=redact(src.url(obj.path)), path=obj.path, size=obj.size,
                version=obj.version, recording=recording, clip_name=name, clip_index=index,
                output_relpath=f"{rec_rel}/{safe_component(base)}.webm",
            ))
    return clips
