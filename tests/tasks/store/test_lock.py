"""One writer per OUT (issue 15, point 1): the lock on a local disk and on S3 (moto over HTTP),
stale and dead holders taken over, and two real processes on one OUT."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tasks.store.lock import LOCK_PATH, WriterLock, _process_start
from tasks.errors import OutBusyError
from tasks.store.storage import open_location
from tests.tasks.store.test_s3 import BUCKET, s3, s3_server  # noqa: F401  (fixtures)


def _lock_file(root) -> str:
    return os.path.join(str(root), *LOCK_PATH)


def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    out = open_location(str(tmp_path))
    with WriterLock(out, "preannotate run"):
        assert os.path.exists(_lock_file(tmp_path))
        with pytest.raises(OutBusyError, match=rf"is being written by preannotate run \(pid "
                                               rf"{os.getpid()} on {socket.gethostname()}"):
            with WriterLock(out, "preannotate convert"):
                pass
    assert not os.path.exists(_lock_file(tmp_path))  # released
    with WriterLock(out, "preannotate convert"):
        pass


def _write_holder(tmp_path, **fields):
    os.makedirs(os.path.dirname(_lock_file(tmp_path)), exist_ok=True)
    holder = {"token": "old", "what": "preannotate run", "host": socket.gethostname(),
              "pid": os.getpid(), "pid_start": _process_start(os.getpid()),
              "started_at": "2026-01-01T00:00:00+00:00", "heartbeat_at": time.time(), **fields}
    with open(_lock_file(tmp_path), "w") as f:
        json.dump(holder, f)


def test_a_holder_whose_process_is_gone_is_taken_over_at_once(tmp_path, caplog):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _write_holder(tmp_path, pid=gone.pid, pid_start="1")
    with WriterLock(open_location(str(tmp_path)), "preannotate run") as lock:
        assert json.load(open(_lock_file(tmp_path)))["token"] == lock.token
    assert "its process is gone" in caplog.text


def test_a_silent_holder_elsewhere_is_taken_over_when_stale(tmp_path):
    _write_holder(tmp_path, host="another-machine", heartbeat_at=time.time() - 30)
    out = open_location(str(tmp_path))
    with pytest.raises(OutBusyError, match="another-machine"):
        with WriterLock(out, "preannotate run", stale_s=120):
            pass
    _write_holder(tmp_path, host="another-machine", heartbeat_at=time.time() - 300)
    with WriterLock(out, "preannotate run", stale_s=120):
        pass


def test_the_heartbeat_keeps_a_long_run_fresh(tmp_path):
    out = open_location(str(tmp_path))
    with WriterLock(out, "preannotate run", beat_s=0.05):
        first = json.load(open(_lock_file(tmp_path)))["heartbeat_at"]
        time.sleep(0.3)
        assert json.load(open(_lock_file(tmp_path)))["heartbeat_at"] > first


def test_the_lock_on_a_bucket_is_exclusive(s3):  # noqa: F811
    out = open_location(f"s3://{BUCKET}/out")
    with WriterLock(out, "preannotate run"):
        assert s3.exists(f"{BUCKET}/out/_state/writer.lock")
        with pytest.raises(OutBusyError, match="is being written by preannotate run"):
            with WriterLock(out, "preannotate convert"):
                pass
    assert not s3.exists(f"{BUCKET}/out/_state/writer.lock")


def test_two_real_runs_on_one_out(samples, tmp_path):
    import shutil

    data = tmp_path / "data" / "cam"
    data.mkdir(parents=True)
    for i in range(10):
        shutil.copy(samples["bikes"], data / f"{i}.mp4")
    config = tmp_path / "one.yaml"
    config.write_text("run: {max_parallel_clips: 1}\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "flows.cli", "convert", str(tmp_path / "data"), "--out", str(out),
           "--config", str(config)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not os.path.exists(_lock_file(out)) and time.time() < deadline:
        time.sleep(0.1)
    # Freeze the holder so the second run meets its lock whatever the machine's speed (a lock
    # renewed under 120 s ago by a live process must be respected), then let it finish.
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stdout + stderr
    assert second.returncode != 0
    assert f"is being written by preannotate convert (pid {first.pid}" in second.stderr
    assert "10 converted" in stdout
    assert not os.path.exists(_lock_file(out))
