"""A converted WebM is trusted on a rerun only while it is the one written (issue 15, point 3):
size and the store's version token, then its content digest."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq

from tasks.convert import clip
from tasks.convert.batch import run_batch
from tasks.recipe import parse_recipe
from tasks.store.storage import digest_object
from tests import synth


def _run(tmp_path):
    summary = run_batch(str(tmp_path / "data"), str(tmp_path / "out"), parse_recipe({}), "convert")
    (row,) = pq.read_table(tmp_path / "out" / "items.parquet").to_pylist()
    return summary, row


def test_bytes_changed_in_place_are_converted_again(tmp_path):
    (tmp_path / "data" / "cam").mkdir(parents=True)
    synth.make_clip(tmp_path / "data" / "cam" / "1.mp4", frames=50)
    _, first = _run(tmp_path)
    webm = first["output_uri"]
    good = open(webm, "rb").read()
    assert first["status"] == "converted" and len(first["output_digest"]) == 32
    # Bytes inverted in the middle, same size (what a bad disk or a stray write does).
    damaged = bytearray(good)
    middle = len(damaged) // 2
    damaged[middle:middle + 2000] = bytes(255 - b for b in damaged[middle:middle + 2000])
    with open(webm, "r+b") as f:
        f.write(damaged)
    summary, again = _run(tmp_path)
    assert again["status"] == "converted" and open(webm, "rb").read() == good


def _version(tmp_path) -> str:
    """The WebM's version token in the clip's state record (not an items column: it differs
    from machine to machine, and items rows must not)."""
    (record,) = (json.loads(p.read_text()) for p in (tmp_path / "out/_state/clips").glob("*.json"))
    return record["output_version"]


def test_a_touched_but_identical_webm_is_kept_after_a_hash(tmp_path, monkeypatch):
    hashed = []
    monkeypatch.setattr(clip, "digest_object", lambda *a: hashed.append(a) or digest_object(*a))
    (tmp_path / "data" / "cam").mkdir(parents=True)
    synth.make_clip(tmp_path / "data" / "cam" / "1.mp4", frames=50)
    _, first = _run(tmp_path)
    token = _version(tmp_path)
    assert "output_version" not in first
    hashed.clear()
    _, again = _run(tmp_path)  # untouched: trusted without reading it
    assert (again["status"], again["last_run"]) == ("converted", "skipped") and not hashed
    os.utime(first["output_uri"], ns=(1, 1))  # a copy or restore: new mtime, same bytes
    _, again = _run(tmp_path)
    assert again["last_run"] == "skipped" and len(hashed) == 1 and _version(tmp_path) != token
    _, third = _run(tmp_path)  # the new token was recorded: no hash needed any more
    assert third["last_run"] == "skipped" and len(hashed) == 1
