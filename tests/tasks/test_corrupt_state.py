"""A state record that cannot be read is a cache miss: the unit is redone, the file named in
a warning, and the outputs are what an undamaged run gives (issue 15, point 5)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from configs import recipe_path
from tasks.convert.batch import run_batch
from tasks.compact.stage import CACHE_DIR, compact_uri
from tasks.detect.stage import detect_clip
from tasks.detect.state import state_paths
from tasks.errors import PipelineError
from tasks.store.items import read_records
from tasks.recipe import parse_recipe
from tasks.store.storage import open_location
from tasks.store.tables import read_table
from tasks.track.chunks import run_object
from tasks.track.plan import plan_clip
from tasks.track.state import clip_dir, track_key
from tasks.track.assemble import assemble_clip, write_tracks
from tests.scene import render_scene


def _recipe():
    data = yaml.safe_load(recipe_path("moving-objects").read_text())
    data["track"]["frames_per_execution"] = 15
    return parse_recipe(data)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("state")
    (root / "data" / "cam").mkdir(parents=True)
    render_scene(root / "data" / "cam" / "1.mp4", frames=90)
    recipe = _recipe()
    run_batch(str(root / "data"), str(root / "out"), recipe, "convert")
    return root, recipe


def _track(out, record, recipe):
    detect_clip(record, out, recipe)
    key = track_key(recipe, None)
    plan = plan_clip(record, out, recipe, None, key)
    for tid in plan["objects"]:
        run_object(record, out, recipe, key, tid)
    assemble_clip(record, out, key, plan["objects"])
    write_tracks(out, [{"recording": record.recording, "clip_index": record.clip_index}],
                 [record], key)
    compact_uri(out.url(out.path("tracks.parquet")), out.url(out.root), recipe)
    return key, plan


@pytest.fixture
def copy(converted, tmp_path):
    """A private copy of the converted output, then detected, tracked and compacted once."""
    root, recipe = converted
    shutil.copytree(root / "out", tmp_path / "out")
    out = open_location(str(tmp_path / "out"))
    (record,) = read_records(out)
    record = record.replace(output_uri=record.output_uri.replace(str(root / "out"),
                                                                 str(tmp_path / "out")))
    _track(out, record, recipe)
    tables = {n: (tmp_path / "out" / n).read_bytes() for n in ("tracks.parquet", "keyframes.parquet")}
    return out, record, recipe, tmp_path / "out", tables


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _check_rerun(out, record, recipe, root, tables, caplog, bad: Path):
    with caplog.at_level(logging.WARNING):
        _track(out, record, recipe)
    assert str(bad) in caplog.text and "redoing" in caplog.text
    assert {n: (root / n).read_bytes() for n in tables} == tables


def test_a_truncated_detections_state_is_redone(copy, caplog):
    out, record, recipe, root, tables = copy
    bad = Path(state_paths(out, record)[1])
    _truncate(bad)
    _check_rerun(out, record, recipe, root, tables, caplog, bad)
    assert detect_clip(record, out, recipe)["status"] == "skipped"  # whole again


def test_a_truncated_tracks_state_is_rebuilt_not_emptied(copy, caplog):
    out, record, recipe, root, tables = copy
    bad = Path(clip_dir(out, record, track_key(recipe, None))) / "tracks.parquet"
    _truncate(bad)
    _check_rerun(out, record, recipe, root, tables, caplog, bad)
    assert pq.read_table(root / "tracks.parquet").num_rows > 0


def test_truncated_object_and_plan_tables_are_redone(copy, caplog):
    out, record, recipe, root, tables = copy
    base = Path(clip_dir(out, record, track_key(recipe, None)))
    (base / "tracks.parquet").unlink()
    bad = sorted((base / "objects").glob("*.parquet"))[0]
    _truncate(bad)
    _truncate(base / "plan.parquet")
    _check_rerun(out, record, recipe, root, tables, caplog, bad)


def test_a_garbled_tracking_chunk_is_redone(copy, caplog):
    out, record, recipe, root, tables = copy
    key = track_key(recipe, None)
    base = Path(clip_dir(out, record, key))
    plan = json.loads((base / "plan.json").read_text())
    tid = plan["objects"][0]
    (base / "tracks.parquet").unlink()
    (base / "objects" / f"{tid}.parquet").unlink()
    assert run_object(record, out, recipe, key, tid, stop_after_chunks=2)["status"] == "interrupted"
    chunk = base / "objects" / str(tid) / "c0000001.json"
    chunk.write_bytes(b"\x00garbled" + chunk.read_bytes()[9:])
    with caplog.at_level(logging.WARNING):
        resumed = run_object(record, out, recipe, key, tid)
    assert resumed["status"] == "tracked" and resumed["resumed_at_chunk"] == 1
    assert str(chunk) in caplog.text
    _check_rerun(out, record, recipe, root, tables, caplog, chunk)


def test_a_truncated_compaction_cache_is_recomputed(copy, caplog):
    out, record, recipe, root, tables = copy
    (bad,) = sorted((root / CACHE_DIR).glob("*.parquet"))
    _truncate(bad)
    with caplog.at_level(logging.WARNING):
        summary = compact_uri(out.url(out.path("tracks.parquet")), out.url(out.root), recipe)
    assert summary["computed"] == 1 and str(bad) in caplog.text
    assert (root / "keyframes.parquet").read_bytes() == tables["keyframes.parquet"]


def test_an_unreadable_output_table_names_its_file(copy):
    out, record, recipe, root, tables = copy
    _truncate(root / "keyframes.parquet")
    with pytest.raises(PipelineError, match=r"keyframes.parquet is not readable Parquet"):
        read_table(out, out.path("keyframes.parquet"))
