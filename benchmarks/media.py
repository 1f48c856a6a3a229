"""Benchmark inputs made from the bundled samples, by stream copy (no re-encoding)."""

from __future__ import annotations

from pathlib import Path

import av

from tasks.media.samples import sample_dir


def loop_clip(source: Path, target: Path, loops: int) -> Path:
    """Write ``source`` ``loops`` times back to back into ``target`` (packets copied, with
    timestamps shifted by one clip duration per loop). Same content, any length."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part" + target.suffix)
    with av.open(str(source)) as probe:
        span = {s.index: _span(probe, s) for s in probe.streams if s.type in ("video", "audio")}
    with av.open(str(tmp), "w") as out:
        with av.open(str(source)) as first:
            mapping = {s.index: out.add_stream_from_template(s) for s in first.streams
                       if s.index in span}
        for loop in range(loops):
            with av.open(str(source)) as src:
                for packet in src.demux(*[s for s in src.streams if s.index in span]):
                    if packet.dts is None:
                        continue
                    shift = span[packet.stream.index] * loop
                    packet.pts = None if packet.pts is None else packet.pts + shift
                    packet.dts += shift
                    packet.stream = mapping[packet.stream.index]
                    out.mux(packet)
    tmp.rename(target)
    return target


def _span(container, stream) -> int:
    """Length of a stream in its own ticks: last end minus first start."""
    first = last = None
    for packet in container.demux(stream):
        if packet.pts is None:
            continue
        first = packet.pts if first is None else min(first, packet.pts)
        end = packet.pts + (packet.duration or 0)
        last = end if last is None else max(last, end)
    container.seek(0)
    return (last or 0) - (first or 0)


def sample(name: str) -> Path:
    return sample_dir() / f"{name}.mp4"
