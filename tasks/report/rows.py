"""What a run did, clip by clip: the rows of the run's table artifact and the counts its
final state and exit code give. Read from the tables the stages wrote (so a clip a rerun
skipped still shows its detections, tracks and keyframes) and from the run's summary
(failures and review tasks)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow as pa

from tasks.store.record import ClipRecord
from tasks.store.storage import Location
from tasks.store.tables import clip_slices, read_table

COLUMNS = ("clip", "status", "reason", "frames", "detections", "tracks", "keyframes",
           "review_tasks")
# A clip's outcome: done (every stage ran or was already done), blocked (refused with a
# reason) or failed (a unit failed; the next run redoes it).
OUTCOMES = ("done", "blocked", "failed")
# Reasons the convert stage gives a clip whose task failed (`tasks.convert.batch.failed_record`).
TASK_FAILED = ("storage_error", "internal_error")


def _per_clip(table: pa.Table | None, distinct: str | None = None) -> Counter:
    """Rows (or distinct ``distinct`` values) per (recording, clip_index)."""
    if table is None or table.num_rows == 0:
        return Counter()
    columns = [table["recording"].to_pylist(), table["clip_index"].to_pylist()]
    if distinct is None:
        return Counter(zip(*columns))
    return Counter((r, c) for r, c, _ in set(zip(*columns, table[distinct].to_pylist())))


def stage_failures(summary: dict[str, Any]) -> list[dict[str, str]]:
    """Every failed unit of the run, with its stage: those of a clip name its WebM
    (``clip``), the others (the review queue) only a ``unit``."""
    return [{**f, "stage": stage} for stage in ("detect", "track", "compact", "export")
            for f in (summary.get(stage) or {}).get("failed", [])]


def _failures(summary: dict[str, Any]) -> dict[str, str]:
    """WebM URL -> the first stage failure of that clip (stage: error)."""
    failed: dict[str, str] = {}
    for f in stage_failures(summary):
        if f.get("clip"):
            failed.setdefault(f["clip"], f"{f['stage']}: {f['error']}")
    return failed


def clip_rows(out: Location, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per clip of the items table, in recording then clip order."""
    items = read_table(out, out.path("items.parquet"))
    if items is None:
        return []
    detections = _per_clip(read_table(out, out.path("detections.parquet")))
    tracks = _per_clip(read_table(out, out.path("tracks.parquet")), "track_id")
    keyframes = _per_clip(read_table(out, out.path("keyframes.parquet")))
    review = {(r, int(c)): n for r, c, n in (summary.get("review") or {}).get("per_clip", [])}
    failed = _failures(summary)
    rows = []
    for item in (ClipRecord.from_dict(row) for row in items.to_pylist()):
        where = (item.recording, item.clip_index)
        status, reason = item.status, item.reason or ""
        if status in ("converted", "skipped"):
            status = "done"
            if item.output_uri in failed:
                status, reason = "failed", failed[item.output_uri]
        elif status == "failed" or reason in TASK_FAILED:  # no verdict: redone next run
            status, reason = "failed", f"convert: {reason}: {item.detail}"
        rows.append({
            "clip": "/".join(p for p in (item.recording, item.clip_name) if p),
            "status": status, "reason": reason,
            "frames": int(item.output_frames or item.frame_count or 0),
            "detections": detections.get(where, 0), "tracks": tracks.get(where, 0),
            "keyframes": keyframes.get(where, 0), "review_tasks": review.get(where, 0),
            "recording": item.recording, "clip_index": item.clip_index,
            "source_uri": item.source_uri, "output_uri": item.output_uri})
    return rows


def outcome_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(row["status"] for row in rows)
    return {o: counts.get(o, 0) for o in OUTCOMES}


def outcome_line(counts: dict[str, int]) -> str:
    return ", ".join(f"{counts[o]} {o}" for o in OUTCOMES) + " clip(s)"


def artifact_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as the run's table artifact shows them (the columns in `COLUMNS`)."""
    return [{c: row[c] for c in COLUMNS} for row in rows]


def clip_rows_uri(out_uri: str, recipe, summary: dict[str, Any]) -> list[dict[str, Any]]:
    from tasks.store.storage import open_location

    return clip_rows(open_location(out_uri, recipe.storage), summary)


def clip_preview_uri(row: dict[str, Any], out_uri: str, recipe) -> dict[str, Any]:
    """One done clip's previews written to ``OUT/previews/`` (skipped when what they show is
    unchanged) and the markdown of its artifact: {"files": {...}, "markdown": str}."""
    from tasks.compact.stage import KEYFRAMES_FILE
    from tasks.export.stage import clip_keyframes
    from tasks.store.items import read_records
    from tasks.annotations.keyframes import KEYFRAME_SCHEMA
    from tasks.report.previews import clip_digest, clip_markdown, write_previews
    from tasks.detect.shots import clip_cuts
    from tasks.store.storage import open_location, read_bytes

    out = open_location(out_uri, recipe.storage)
    record = next(r for r in read_records(out) if r.source_uri == row["source_uri"])
    table = read_table(out, out.path(KEYFRAMES_FILE))
    keyframes = clip_keyframes(table.cast(KEYFRAME_SCHEMA), record) if table is not None \
        else KEYFRAME_SCHEMA.empty_table()
    cuts = clip_cuts(out, record)
    files = write_previews(out, record, keyframes, clip_digest(keyframes, record, cuts), cuts)
    images = {name: read_bytes(out, _path_of(out, url)) for name, url in files.items()}
    summary = {c: row[c] for c in COLUMNS if c != "clip"}
    return {"files": files, "markdown": clip_markdown(record, summary, images)}


def previews_current_uri(rows: list[dict[str, Any]], out_uri: str, recipe) -> list[bool]:
    """For each done clip's row, True when its previews show what the tables hold now (same
    digest in their state record, files there): the run makes neither a preview task nor an
    artifact for it. One read of the items, keyframes and shots tables for all clips."""
    import json
    from concurrent.futures import ThreadPoolExecutor

    from tasks.compact.stage import KEYFRAMES_FILE
    from tasks.store.items import read_records
    from tasks.annotations.keyframes import KEYFRAME_SCHEMA
    from tasks.report.previews import _state_path, clip_digest, preview_paths
    from tasks.detect.shots import SHOTS_FILE
    from tasks.store.storage import open_location, read_bytes, size_of

    out = open_location(out_uri, recipe.storage)
    records = {r.source_uri: r for r in read_records(out)}
    if not records or not rows:
        return [False] * len(rows)
    recorded = read_bytes(out, _previews_record(out))
    if recorded is not None and recorded.decode(errors="replace") == _previews_signature(
            out, rows, records):
        return [True] * len(rows)  # nothing they show changed since every one was made
    table = read_table(out, out.path(KEYFRAMES_FILE))
    slices = clip_slices(table.cast(KEYFRAME_SCHEMA)) if table is not None else {}
    shots = read_table(out, out.path(SHOTS_FILE))
    cuts: dict[tuple[str, int], list[int]] = {}
    if shots is not None:
        for shot in shots.filter(shots["cut"]).to_pylist():
            cuts.setdefault((shot["recording"], shot["clip_index"]), []).append(shot["first_frame"])

    def current(row: dict[str, Any]) -> bool:
        try:
            return _current(row)
        except Exception:  # the preview task makes them, and says what is wrong
            return False

    def _current(row: dict[str, Any]) -> bool:
        record = records.get(row["source_uri"])
        if record is None:
            return False
        where = (record.recording, int(record.clip_index))
        rows_ = slices.get(where, KEYFRAME_SCHEMA.empty_table())
        data = read_bytes(out, _state_path(out, record))
        try:
            state = json.loads(data) if data is not None else None
        except ValueError:
            return False
        return (isinstance(state, dict)
                and state.get("digest") == clip_digest(rows_, record, sorted(cuts.get(where, [])))
                and all(size_of(out, p) is not None for p in preview_paths(out, record).values()))

    with ThreadPoolExecutor(16, thread_name_prefix="look-up") as pool:
        return list(pool.map(current, rows))


def _previews_record(out: Location) -> str:
    from tasks.store.merged import STATE_DIR

    return out.path(STATE_DIR, "previews.sig")


def _previews_signature(out: Location, rows: list[dict[str, Any]],
                        records: dict[str, ClipRecord]) -> str:
    """What every done clip's previews are made from, without reading a table: the keyframes
    and shots tables' versions, each clip's WebM identity, and a listing of the previews and
    their state records."""
    from tasks.store import merged
    from tasks.compact.stage import KEYFRAMES_FILE
    from tasks.detect.state import webm_identity
    from tasks.report.previews import PREVIEW_VERSION
    from tasks.report.previews import STATE_DIR as PREVIEW_STATE
    from tasks.detect.shots import SHOTS_FILE
    from tasks.store.storage import object_version

    clips = [[r["source_uri"], *webm_identity(records.get(r["source_uri"]))] for r in rows]
    return merged.signature(out, [out.path("previews"), out.path(PREVIEW_STATE)], [
        PREVIEW_VERSION, object_version(out, out.path(KEYFRAMES_FILE)),
        object_version(out, out.path(SHOTS_FILE)), clips])


def note_previews_uri(rows: list[dict[str, Any]], out_uri: str, recipe) -> None:
    """After every done clip's previews were made: remember what they were made from, so
    the next run with nothing changed checks one signature instead of every clip."""
    from tasks.store.items import read_records
    from tasks.store.storage import open_location, read_bytes, write_bytes_atomic

    out = open_location(out_uri, recipe.storage)
    records = {r.source_uri: r for r in read_records(out)}
    sig = _previews_signature(out, rows, records).encode()
    if read_bytes(out, _previews_record(out)) != sig:
        write_bytes_atomic(out, _previews_record(out), sig)


def _path_of(out: Location, url: str) -> str:
    """The store path of a URL `Location.url` made."""
    return url.split("://", 1)[1] if "://" in url else url
