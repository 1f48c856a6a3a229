"""A converted clip's WebM, on any store: its path in OUT, opened with PyAV, and its
exact-frame reader and timeline (decoded timestamps), checked against the parity proof."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from tasks.store.record import ClipRecord
from tasks.errors import MediaReadError, PipelineError
from tasks.media.frames import FrameReader, Timeline
from tasks.media.probe import choose_video_stream, open_media
from tasks.store.storage import Location, open_read, size_of

def webm_path(out: Location, record: ClipRecord) -> str:
    """The WebM's path inside OUT (items rows hold its URL)."""
    url: str = record.output_uri
    root_url = out.url(out.root)
    if not url.startswith(root_url):
        raise MediaReadError(f"{url} is not under {root_url}")
    return out.path(*url[len(root_url):].strip("/").split("/"))


@contextmanager
def open_webm_container(out: Location, path: str):
    """A converted WebM (any store) opened with PyAV; missing or unreadable is a
    `MediaReadError` naming it."""
    size = size_of(out, path)
    if size is None:
        raise MediaReadError(f"{out.url(path)} is missing; convert the clip again")
    with open_read(out, path) as file:
        try:
            container = open_media(file, size)
        except PipelineError as e:
            raise MediaReadError(f"{out.url(path)}: {e}") from e
        with container:
            yield container


@contextmanager
def open_webm(out: Location, record: ClipRecord, timeline=None) -> Iterator[FrameReader]:
    """An exact-frame reader (`tasks.media.frames.FrameReader`) on a converted clip's WebM. Without
    a known ``timeline`` it is built by demuxing and must hold the frames the parity proof
    counted (a WebM changed since conversion is refused)."""
    path = webm_path(out, record)
    with open_webm_container(out, path) as container:
        try:
            reader = FrameReader(container, choose_video_stream(container, "first"), timeline)
        except PipelineError as e:
            raise MediaReadError(f"{out.url(path)}: {e}") from e
        try:
            expected = record.output_frames
            if timeline is None and expected is not None and len(reader) != expected:
                raise MediaReadError(f"{out.url(path)}: {len(reader)} frames, the parity proof "
                                     f"counted {expected}; the WebM changed since conversion")
            yield reader
        finally:
            reader.close()


def webm_timeline(out: Location, record: ClipRecord) -> Timeline:
    with open_webm(out, record) as reader:
        return reader.timeline
