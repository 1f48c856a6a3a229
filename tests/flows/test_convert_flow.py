"""The real Prefect engine, and the CLI killed with SIGKILL mid-batch then rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tasks.store.items import TIMING_COLUMNS
from tests import synth


def test_flow_converts_on_prefect(prefect_harness, dataset, tmp_path):
    from flows.convert import run_convert

    out = tmp_path / "out"
    summary = run_convert(str(dataset), str(out), None, "convert")
    assert summary["counts"] == {"converted": 2}
    assert summary["items_uri"] == str(out / "items.parquet")
    again = run_convert(str(dataset), str(out), None, "convert")
    assert again["counts"] == {"skipped": 2}


def _cli(args: list[str], api_url: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_API_URL": api_url}
    return subprocess.Popen([sys.executable, "-m", "flows.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kwargs)


def _comparable(out: Path) -> tuple[list[dict], dict[str, bytes]]:
    rows = pq.read_table(out / "items.parquet").to_pylist()
    for row in rows:
        for name in (*TIMING_COLUMNS, "last_run", "detail", "output_uri"):  # status: the same
            row.pop(name)
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.webm"))}
    return rows, files


@pytest.fixture
def batch(tmp_path) -> Path:
    """Four clips, big enough that a conversion takes a moment to interrupt."""
    root = tmp_path / "batch" / "cam"
    root.mkdir(parents=True)
    for i in range(1, 5):
        synth.make_clip(root / f"{i}.mp4", frames=90, size=(320, 240), audio=True)
    (root / "5.mp4").write_bytes(b"")  # one blocked clip rides along
    return root.parent


def test_kill_mid_batch_then_rerun_matches_uninterrupted(prefect_harness, batch, tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    config = tmp_path / "serial.yaml"
    config.write_text("run: {max_parallel_clips: 1}\n")
    args = ["convert", str(batch), "--config", str(config)]

    done = _cli([*args, "--out", str(ref)], prefect_harness)
    assert done.wait(timeout=300) == 3, done.stdout.read()  # 3: finished with a blocked clip

    proc = _cli([*args, "--out", str(killed)], prefect_harness)
    state, tmp = killed / "_state" / "clips", killed / ".tmp"
    deadline = time.monotonic() + 240
    # Kill while a WebM is half written, after at least one clip was recorded.
    while time.monotonic() < deadline and proc.poll() is None:
        recorded = len(list(state.glob("*.json"))) if state.exists() else 0
        if recorded >= 1 and tmp.exists() and any(tmp.glob("*.webm")):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    half = list(tmp.glob("*.webm"))
    assert half, "the kill did not land mid-write"

    rerun = _cli([*args, "--out", str(killed)], prefect_harness)
    output = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 3, output
    rows = pq.read_table(killed / "items.parquet").to_pylist()
    last_run, statuses = [r["last_run"] for r in rows], [r["status"] for r in rows]
    assert "skipped" in last_run and "converted" in last_run
    assert statuses.count("converted") == 4  # the clip's state, whatever the last run did
    assert statuses.count("blocked") == 1 and len(statuses) == 5  # no duplicate rows
    assert not tmp.exists() or not any(tmp.iterdir())  # no half files left
    assert _comparable(killed) == _comparable(ref)  # same rows, byte-identical WebM


def test_demo_command_runs_the_pipeline_on_the_samples(prefect_harness, tmp_path):
    """The README's main command, as a newcomer runs it (the samples, into --out): every
    stage, then where the outputs, previews and review queue are."""
    out = tmp_path / "out"
    done = _cli(["demo", "--out", str(out)], prefect_harness)
    output = done.communicate(timeout=600)[0]
    assert done.returncode == 0, output
    assert "run completed: 4 done, 0 blocked, 0 failed clip(s)" in output
    for line in (f"outputs: {out}", f"previews: {out}/previews", f"review queue: sqlite:///{out}/review.db"):
        assert line in output, output
    rows = pq.read_table(out / "items.parquet").to_pylist()
    assert sorted(r["recording"] for r in rows) == [
        "bigbuckbunny", "bikes", "carphone_distorted", "carphone_pristine"]
    assert all(Path(r["output_uri"]).exists() for r in rows)
    assert len(list((out / "previews").rglob("*.contact.jpg"))) == 4
    assert pq.read_table(out / "keyframes.parquet").num_rows > 0
    assert len(list((out / "exports" / "cvat").rglob("*.xml"))) == 4
