"""One clip's unit of work: skip it, ingest it (probe) or convert it (transcode + parity).

Plain functions over URIs and a recipe, so a Prefect task (or a test) calls them with
small arguments and gets back one `ClipRecord`: the clip's row of the items table.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import posixpath
import shutil
import tempfile
import time
import uuid
from fractions import Fraction
from contextlib import contextmanager
from typing import Any, Iterator, Literal

from tasks import progress
from tasks.convert.transcode import ENCODERS, transcode
from tasks.errors import Blocked, BlockedWithProbe, Reason, StorageError
from tasks.store.fingerprint import HashingReader
from tasks.convert.geometry import plan_geometry
from tasks.convert.listing import ClipSource
from tasks.store.items import STATE_DIR, load_record, save_record, state_path
from tasks.store.record import ClipRecord
from tasks.store.ledger import Ledger, Unit
from tasks.media.probe import StreamProbe, choose_video_stream, count_by_demux, open_media, probe_streams
from tasks.recipe import Recipe
from tasks.convert.signature import SignatureSpill
from tasks.store.storage import (Location, commit_file, digest_object, object_version,
                                 open_location, open_read, redact, remove_atomic_temps)

log = logging.getLogger(__name__)
Mode = Literal["ingest", "convert"]
TMP_DIR = ".tmp"


def process_clip(clip: ClipSource, src: Location, out: Location, recipe: Recipe,
                 mode: Mode) -> ClipRecord:
    """Return the clip's record for this run, doing only the work that is not done yet."""
    reused = reused_record(clip, out, recipe, mode)
    if reused is not None:
        return reused
    record = _identity(clip)  # filled as the work goes, typed once it is done
    with _opened(src, clip) as reader:
        try:
            if mode == "ingest":
                _ingest(reader, clip, recipe, record)
            else:
                _convert(reader, clip, out, recipe, record)
        except Blocked as b:
            if reader.error is not None:  # the store failed, not the clip: retry, record nothing
                raise reader.error from b
            record.update(status="blocked", reason=b.reason.value, detail=redact(b.detail),
                          output_uri=None, parity_ok=False if mode == "convert" else None)
        if reader.error is not None:
            raise reader.error
        record["fingerprint"] = _fingerprint(reader, src, clip)
    if mode == "convert":
        record["convert_key"] = recipe.convert_key()
    done = ClipRecord(**record)
    save_record(out, clip.clip_id, done)
    log.info("%s: %s%s", clip.source_uri, done.status,
             f" ({done.reason}: {done.detail})" if done.reason else "")
    return done


def reused_record(clip: ClipSource, out: Location, recipe: Recipe,
                  mode: Mode) -> ClipRecord | None:
    """The clip's record for this run when its earlier work still holds, read from its state
    record without opening the source; None when there is work to do."""
    previous = load_record(out, clip.clip_id)
    reused = _reuse(previous, clip, out, recipe, mode)
    if reused is not None and reused.output_version != previous.output_version:
        # Same bytes under a new token (checked by hash): remember it, hash once only.
        save_record(out, clip.clip_id, previous.replace(output_version=reused.output_version))
    return reused


def reused_record_uri(clip: ClipSource, src_uri: str, out_uri: str, recipe: Recipe,
                      mode: Mode) -> ClipRecord | None:
    """`reused_record` with the arguments of `process_clip_uris` (the flow's look-up)."""
    return reused_record(clip, open_location(out_uri, recipe.storage), recipe, mode)


def convert_ledger(clips: list[ClipSource], out_uri: str, recipe: Recipe, mode: Mode) -> Ledger:
    """The `reused_record` answers of ``clips`` kept from the last run (`tasks.store.ledger`): each
    reads the clip's state record and looks at its WebM."""
    out = open_location(out_uri, recipe.storage)
    state, key = out.path(STATE_DIR), recipe.convert_key()
    units = []
    for clip in clips:
        webm = out.path(clip.output_relpath)
        units.append(Unit([dataclasses.asdict(clip), key, mode],
                          ((state, state_path(out, clip.clip_id)), (posixpath.dirname(webm), webm))))
    return Ledger(out, mode, units, ClipRecord.as_dict, ClipRecord.from_dict)


def _reuse(previous: ClipRecord | None, clip: ClipSource, out: Location, recipe: Recipe,
           mode: Mode) -> ClipRecord | None:
    """The previous record when the clip is unchanged and its work is still valid."""
    if not previous or previous.source_version != clip.version \
            or previous.source_size != clip.size:
        return None
    record = previous.replace(**_identity(clip))
    if mode == "ingest":
        if previous.status == "blocked":
            return record
        return record.replace(status="skipped", detail="unchanged since it was last ingested")
    if previous.convert_key != recipe.convert_key():
        return None  # converted with other settings (or only ingested): redo
    if previous.status == "blocked":
        return record
    if previous.parity_ok and previous.output_uri:
        return _kept_webm(record, out, out.path(clip.output_relpath))
    return None


def _kept_webm(record: ClipRecord, out: Location, path: str) -> ClipRecord | None:
    """The record as skipped when the WebM is still the one converted, else None (redo).

    Identity: size and the store's version token, then content. An unchanged token (same
    mtime and inode, same ETag or generation) means nobody wrote the object since, so it is
    trusted without reading it: a rerun of 10,000 clips reads no WebM. A changed token with
    the same size (a copy, a restore, or bytes overwritten in place) is settled by hashing
    the WebM against the digest taken when it was written."""
    found = object_version(out, path)
    if found is None or found[0] != record.output_bytes:
        return None
    kept = record.replace(status="skipped", reason=None,
                          detail="unchanged since it was converted; WebM kept")
    if found[1] == record.output_version:
        return kept
    if record.output_digest and digest_object(out, path) == record.output_digest:
        return kept.replace(output_version=found[1])
    log.warning("%s changed since it was converted (same size, other bytes): converting again",
                out.url(path))
    return None


def _identity(clip: ClipSource) -> dict[str, Any]:
    return {"source_uri": clip.source_uri, "recording": clip.recording,
            "clip_name": clip.clip_name, "clip_index": clip.clip_index,
            "source_size": clip.size, "source_version": clip.version}


@contextmanager
def _opened(src: Location, clip: ClipSource) -> Iterator[HashingReader]:
    reader = HashingReader(open_read(src, clip.path), clip.size)
    try:
        yield reader
    finally:
        reader.close()


def _fingerprint(reader: HashingReader, src: Location, clip: ClipSource) -> str:
    try:
        return reader.fingerprint()
    except OSError as e:
        raise StorageError(f"cannot read {clip.source_uri}: {redact(str(e))}") from e


def _fill_probe(record: dict[str, Any], probe: StreamProbe) -> None:
    record.update(
        container=probe.container, video_streams=probe.video_streams,
        audio_streams=probe.audio_streams, video_stream_index=probe.video_stream_index,
        video_codec=probe.video_codec, pix_fmt=probe.pix_fmt, bit_depth=probe.bit_depth,
        chroma=probe.chroma, fps=_frac(probe.avg_rate), real_fps=_frac(probe.real_rate),
        time_base=_frac(probe.time_base), start_time_s=probe.start_time_s,
        header_frame_count=probe.header_frame_count, stored_width=probe.stored_width,
        stored_height=probe.stored_height, sar=_frac(probe.sar), audio_codec=probe.audio_codec,
        audio_sample_rate=probe.audio_sample_rate, audio_channels=probe.audio_channels,
    )


def _frac(value) -> str | None:
    """Fractions always as ``num/den`` (``25/1``, ``30000/1001``), never as floats."""
    if value is None:
        return None
    value = Fraction(value)
    return f"{value.numerator}/{value.denominator}"


def _ingest(reader: HashingReader, clip: ClipSource, recipe: Recipe, record: dict) -> None:
    container = open_media(reader, clip.size)
    try:
        video = choose_video_stream(container, recipe.ingest.multiple_video_streams)
        probe = probe_streams(container, video)
        _fill_probe(record, probe)
        counted = count_by_demux(container, video)
    finally:
        container.close()
    stats, tb = counted.stats, probe.time_base
    geometry = plan_geometry(probe.stored_width, probe.stored_height, probe.sar,
                             counted.rotation, None)
    record.update(
        frame_count=counted.frame_count, discarded_frames=counted.discarded,
        rotation=counted.rotation, width=geometry.display_width, height=geometry.display_height,
        vfr=stats.is_vfr(), duration_s=float(stats.duration_ticks() * tb),
        measured_fps=_measured(stats.count, stats.first, stats.last, tb),
        status="ingested", detail=f"{counted.frame_count} frames",
    )
    if probe.start_time_s is None and stats.first is not None:
        record["start_time_s"] = float(stats.first * tb)
    header = probe.header_frame_count
    if header and counted.frame_count + counted.discarded < header:
        raise Blocked(Reason.TRUNCATED, f"the header lists {header} video frames but only "
                      f"{counted.frame_count + counted.discarded} are in the file")
    if counted.frame_count == 0:
        raise Blocked(Reason.NO_FRAMES, "the video stream has no frames")


def _measured(count: int, first, last, tb) -> str | None:
    if count < 2 or first is None or last is None or last <= first:
        return None
    return _frac((count - 1) / ((last - first) * tb))


def _convert(reader: HashingReader, clip: ClipSource, out: Location, recipe: Recipe,
             record: dict) -> None:
    with _work_files(out) as (webm_path, spill_path):
        spill = SignatureSpill(spill_path)
        try:
            with progress.meter("convert", clip.source_uri, None) as frames:
                result = transcode(reader, clip.size, recipe.convert,
                                   recipe.ingest.multiple_video_streams, webm_path, spill,
                                   recipe.parity.content_mean_tolerance, frames)
        except BlockedWithProbe as b:
            _fill_probe(record, b.probe)  # a blocked clip's row still says what it is
            if b.result is not None:
                record.update(frame_count=b.result.frame_count,
                              discarded_frames=b.result.discarded)
            raise
        finally:
            spill.close()
        probe, geometry, stats = result.probe, result.geometry, result.stats
        _fill_probe(record, probe)
        tb = probe.time_base
        record.update(
            frame_count=result.frame_count, discarded_frames=result.discarded,
            rotation=geometry.rotation, width=geometry.display_width,
            height=geometry.display_height, vfr=stats.is_vfr(),
            duration_s=float(stats.duration_ticks() * tb),
            start_time_s=float(result.first_pts * tb), encode_seconds=round(result.encode_seconds, 3),
            output_codec=recipe.convert.codec,
        )
        started = time.perf_counter()
        report = result.parity.finish(result.decoded, stats.duration_ticks())
        record.update(
            parity_ok=True, output_frames=report.output_frames,
            timestamp_max_error_ms=report.timestamp_max_error_ms,
            measured_fps=report.source_fps_measured,
            output_fps_measured=report.output_fps_measured,
            output_duration_s=report.output_duration_s, output_width=report.output_width,
            output_height=report.output_height, content_mean_diff=report.content_mean_diff,
            content_worst_diff=report.content_worst_diff,
            content_worst_frame=report.content_worst_frame,
            parity_seconds=round(time.perf_counter() - started, 3),
            output_bytes=os.path.getsize(webm_path),
        )
        target = out.path(clip.output_relpath)
        digest = digest_object(open_location("/"), webm_path)  # the local temp, still cached
        commit_file(out, webm_path, target)
        record.update(output_digest=digest, output_version=(object_version(out, target) or
                                                            (0, None))[1])
        record.update(status="converted", output_uri=out.url(target),
                      detail=f"{report.output_frames} frames converted to "
                      f"{ENCODERS[recipe.convert.codec]}, parity proven")


@contextmanager
def _work_files(out: Location) -> Iterator[tuple[str, str]]:
    """Temp paths for one conversion: beside the outputs when local (so the final move is
    a rename), in the system temp folder when the outputs go to an object store."""
    base = out.path(TMP_DIR) if out.is_local else tempfile.gettempdir()
    os.makedirs(base, exist_ok=True)
    stem = os.path.join(base, f"{uuid.uuid4().hex}")
    webm, spill = f"{stem}.webm", f"{stem}.sig"
    try:
        yield webm, spill
    finally:
        for path in (webm, spill):
            if os.path.exists(path):
                os.unlink(path)


def clean_work_dir(out: Location) -> None:
    """Remove temp files a killed run left behind (one writer per OUT at a time): the work
    folder, and half-written files beside outputs (not under ``reviews/``, which the review
    commands write while a run may be going)."""
    if out.is_local:
        shutil.rmtree(out.path(TMP_DIR), ignore_errors=True)
        remove_atomic_temps(out, keep=("reviews",))


def process_clip_uris(clip: ClipSource, src_uri: str, out_uri: str, recipe: Recipe,
                      mode: Mode) -> ClipRecord:
    """`process_clip` from URIs (what a task on another worker receives)."""
    src = open_location(src_uri, recipe.storage)
    out = open_location(out_uri, recipe.storage)
    return process_clip(clip, src, out, recipe, mode)


__all__ = ["process_clip", "process_clip_uris", "clean_work_dir"]
