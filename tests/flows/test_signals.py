"""SIGTERM stops a run as Ctrl-C does (issue 15, point 8): a real signal to a real CLI with
its embedded Prefect server; afterwards no process of the run is left, no temp file, no
lock, and a rerun gives the outputs of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from tasks.convert.batch import run_batch
from tasks.store.items import TIMING_COLUMNS
from tasks.recipe import parse_recipe
from tests import synth


def _session_members(sid: int) -> list[str]:
    """Processes still in session ``sid`` (the CLI started its own)."""
    left = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid and fields[0] != "Z":  # session id; zombies are gone
            left.append(f"{entry} {cmd}")
    return left


def _comparable(out: Path):
    rows = pq.read_table(out / "items.parquet").to_pylist()
    for row in rows:
        for name in (*TIMING_COLUMNS, "last_run", "detail", "output_uri"):  # status: the same
            row.pop(name)
    return rows, {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.webm"))}


def test_sigterm_stops_cleanly_and_a_rerun_matches(prefect_harness, tmp_path):
    data = tmp_path / "data" / "cam"
    data.mkdir(parents=True)
    for i in range(1, 6):
        synth.make_clip(data / f"{i}.mp4", frames=120, size=(320, 240), audio=True)
    config = tmp_path / "serial.yaml"
    config.write_text("run: {max_parallel_clips: 1}\n")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "flows.cli", "convert", str(tmp_path / "data"), "--out",
            str(out), "--config", str(config)]
    alone = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # embedded server
    proc = subprocess.Popen(args, env=alone, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    state = out / "_state" / "clips"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if state.exists() and any(state.glob("*.json")) and any((out / ".tmp").glob("*")):
            break  # one clip recorded, the next one half written
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before the signal"
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "stopped by SIGTERM" in output
    time.sleep(1)  # the server's stop is asynchronous to our wait
    assert _session_members(proc.pid) == []  # the embedded server is gone with it
    assert not (out / ".tmp").exists() or not any((out / ".tmp").iterdir())
    assert not [p for p in out.rglob("*.tmp-*") if p.is_file()]
    assert not (out / "_state" / "writer.lock").exists()
    done = len(list(state.glob("*.json")))
    assert 1 <= done < 5

    rerun = subprocess.run(args, env={**os.environ, "PREFECT_API_URL": prefect_harness},
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{done} skipped" in rerun.stdout
    ref = tmp_path / "ref"
    run_batch(str(tmp_path / "data"), str(ref), parse_recipe({}), "convert")
    assert _comparable(out) == _comparable(ref)
