"""A whole batch without Prefect: the items table, reruns that skip, and what redoes work."""

from __future__ import annotations

import os
import shutil

import pyarrow.parquet as pq

from tasks.convert.batch import run_batch
from tasks.store.items import SCHEMA
from tasks.recipe import parse_recipe
from tests import synth

REQUIRED = ["source_uri", "recording", "clip_index", "fingerprint", "frame_count",
            "global_first_frame", "fps", "width", "height", "status", "reason", "output_uri"]


def rows(out) -> list[dict]:
    return pq.read_table(out / "items.parquet").to_pylist()


def test_convert_then_rerun_skips(tmp_path, dataset):
    out = tmp_path / "out"
    recipe = parse_recipe({})
    summary = run_batch(str(dataset), str(out), recipe, "convert")
    assert summary.counts == {"converted": 2} and summary.blocked == 0
    table = pq.read_table(out / "items.parquet")
    assert table.schema == SCHEMA and set(REQUIRED) <= set(table.column_names)
    first = rows(out)
    assert [(r["clip_name"], r["clip_index"], r["global_first_frame"]) for r in first] == [
        ("2.mp4", 0, 0), ("10.mp4", 1, 120)]
    assert first[1]["recording_start_s"] == 4.004
    webms = sorted((out / "cam").glob("*.webm"))
    assert [p.name for p in webms] == ["10.webm", "2.webm"]
    mtimes = [p.stat().st_mtime_ns for p in webms]

    again = run_batch(str(dataset), str(out), recipe, "convert")
    assert again.counts == {"skipped": 2}
    assert [p.stat().st_mtime_ns for p in webms] == mtimes  # nothing rewritten
    second = rows(out)
    assert [r["fingerprint"] for r in second] == [r["fingerprint"] for r in first]
    assert not (out / ".tmp").exists() or not os.listdir(out / ".tmp")


def test_changed_clip_with_same_name_is_redone(tmp_path, dataset):
    out = tmp_path / "out"
    recipe = parse_recipe({})
    run_batch(str(dataset), str(out), recipe, "convert")
    before = {r["clip_name"]: r for r in rows(out)}
    synth.make_clip(dataset / "cam" / "10.mp4", frames=12)  # new content, same name
    summary = run_batch(str(dataset), str(out), recipe, "convert")
    assert summary.counts == {"skipped": 1, "converted": 1}
    after = {r["clip_name"]: r for r in rows(out)}
    assert after["10.mp4"]["status"] == "converted" and after["10.mp4"]["frame_count"] == 12
    assert after["10.mp4"]["fingerprint"] != before["10.mp4"]["fingerprint"]
    # The clip's state stays converted after a rerun; what the run did is `last_run`.
    assert (after["2.mp4"]["status"], after["2.mp4"]["last_run"]) == ("converted", "skipped")
    assert (after["10.mp4"]["status"], after["10.mp4"]["last_run"]) == ("converted", "converted")
    assert all(r["status"] == "converted" for r in after.values())


def test_changed_recipe_or_lost_output_is_redone(tmp_path, dataset):
    out = tmp_path / "out"
    run_batch(str(dataset), str(out), parse_recipe({}), "convert")
    summary = run_batch(str(dataset), str(out), parse_recipe({"convert": {"crf": 40}}), "convert")
    assert summary.counts == {"converted": 2}
    os.unlink(out / "cam" / "2.webm")
    summary = run_batch(str(dataset), str(out), parse_recipe({"convert": {"crf": 40}}), "convert")
    assert summary.counts == {"converted": 1, "skipped": 1}


def test_ingest_probes_without_writing_video(tmp_path, dataset):
    out = tmp_path / "out"
    summary = run_batch(str(dataset), str(out), parse_recipe({}), "ingest")
    assert summary.counts == {"ingested": 2}
    got = rows(out)
    assert [r["frame_count"] for r in got] == [120, 120]
    assert all(r["fps"] == "30000/1001" and r["output_uri"] is None for r in got)
    assert all(r["header_frame_count"] == 120 for r in got)
    assert not list(out.rglob("*.webm"))
    assert run_batch(str(dataset), str(out), parse_recipe({}), "ingest").counts == {"skipped": 2}
    # converting after an ingest does the conversion (ingest made no WebM)
    assert run_batch(str(dataset), str(out), parse_recipe({}), "convert").counts == {"converted": 2}


def test_bad_clips_do_not_stop_the_batch(tmp_path, dataset):
    for kind in ("zero_bytes", "text_as_mp4", "corrupted"):
        synth.KINDS[kind](dataset / "cam" / f"{kind}.mp4")
    out = tmp_path / "out"
    summary = run_batch(str(dataset), str(out), parse_recipe({}), "convert")
    assert summary.counts == {"converted": 2, "blocked": 3}
    assert summary.reasons == {"empty_file": 1, "unreadable": 1, "decode_error": 1}
    # blocked clips are not retried while unchanged, and stay blocked
    assert run_batch(str(dataset), str(out), parse_recipe({}), "convert").counts == {
        "skipped": 2, "blocked": 3}


def test_every_file_is_accounted_for(tmp_path, dataset):
    """A file that is not a clip is listed as ignored with its reason; an audio-only file
    with a video extension is a clip, blocked with a reason (issue 15, point 11)."""
    (dataset / "cam" / "notes.txt").write_text("shift 2")
    (dataset / "cam" / "README").write_text("no extension")
    synth.KINDS["audio_only"](dataset / "cam" / "voice.m4a")
    synth.KINDS["audio_only"](dataset / "cam" / "voice.mp4")
    out = tmp_path / "out"
    summary = run_batch(str(dataset), str(out), parse_recipe({}), "convert")
    assert summary.counts == {"converted": 2, "blocked": 1}
    assert summary.reasons == {"no_video_stream": 1}
    assert summary.ignored == {"extension .m4a is not in ingest.extensions": 1,
                               "extension .txt is not in ingest.extensions": 1,
                               "no extension (ingest.extensions lists what is ingested)": 1}
    ignored = pq.read_table(out / "ignored.parquet").to_pylist()
    assert sorted(os.path.basename(r["source_uri"]) for r in ignored) == [
        "README", "notes.txt", "voice.m4a"]
    assert "  ignored 1 file(s) x extension .txt is not in ingest.extensions" in summary.lines()
    (dataset / "cam" / "notes.txt").unlink()  # the table says what the last listing saw
    assert run_batch(str(dataset), str(out), parse_recipe({}), "convert").ignored == {
        "extension .m4a is not in ingest.extensions": 1,
        "no extension (ingest.extensions lists what is ingested)": 1}


def test_output_inside_dataset_is_not_ingested(tmp_path, dataset):
    out = dataset / "out"
    run_batch(str(dataset), str(out), parse_recipe({}), "convert")
    summary = run_batch(str(dataset), str(out), parse_recipe({}), "convert")
    assert summary.total == 2


def test_odd_keys_stay_inside_out(tmp_path, samples):
    src = tmp_path / "src" / "we ird$rec"
    src.mkdir(parents=True)
    shutil.copy(samples["carphone_distorted"], src / "..clip 1?.mp4")
    out = tmp_path / "out"
    run_batch(str(tmp_path / "src"), str(out), parse_recipe({}), "convert")
    (row,) = rows(out)
    assert row["status"] == "converted"
    assert os.path.realpath(row["output_uri"]).startswith(str(out) + os.sep)
    assert row["recording"] == "we ird$rec" and row["clip_name"] == "..clip 1?.mp4"


class _BreakingFile:
    """A file whose reads fail after a few kilobytes, as a dropped connection does."""

    def __init__(self, f):
        self._f = f

    def read(self, n=-1):
        if self._f.tell() > 4000:
            raise ConnectionResetError("connection reset by peer")
        return self._f.read(n)

    def __getattr__(self, name):
        return getattr(self._f, name)


def _flaky_filesystem():
    """A real fsspec filesystem ("flaky://") over local files whose reads break midway."""
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    class FlakyFileSystem(LocalFileSystem):
        protocol = "flaky"

        @classmethod
        def _strip_protocol(cls, path):
            return super()._strip_protocol(str(path).removeprefix("flaky://"))

        def _open(self, path, mode="rb", **kwargs):
            return _BreakingFile(super()._open(path, mode, **kwargs))

    fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)


def test_storage_failure_mid_read_is_not_a_verdict(tmp_path, dataset):
    """A read that fails halfway is a StorageError (which the flow retries), never a clip
    recorded as truncated or unreadable."""
    import pytest

    from tasks.convert.clip import process_clip
    from tasks.errors import StorageError
    from tasks.convert.listing import plan_clips
    from tasks.store.items import load_record
    from tasks.store.storage import open_location

    _flaky_filesystem()
    src = open_location(f"flaky://{dataset}")
    out = open_location(str(tmp_path / "out"))
    recipe = parse_recipe({})
    clip = plan_clips(src, recipe)[0]
    for mode in ("ingest", "convert"):
        with pytest.raises(StorageError, match="connection reset"):
            process_clip(clip, src, out, recipe, mode)
    assert load_record(out, clip.clip_id) is None  # nothing recorded: the next run redoes it
