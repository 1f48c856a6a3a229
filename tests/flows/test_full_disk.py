"""A real full disk (a 300 KB tmpfs as OUT, mounted in a private mount namespace): a clip
whose WebM does not fit is a failure to retry, never a verdict on the media; once space is
freed the next run converts it (issue 15, point 2)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest


def _namespaces_work() -> bool:
    if not shutil.which("unshare"):
        return False
    done = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return done.returncode == 0


@pytest.mark.skipif(not _namespaces_work(), reason="needs unshare -rm (user and mount namespaces)")
def test_a_full_disk_fails_the_clip_and_a_rerun_with_space_converts_it(samples, tmp_path):
    data = tmp_path / "data" / "cam"
    data.mkdir(parents=True)
    shutil.copy(samples["bikes"], data / "1.mp4")  # about 1 MB of WebM: more than the disk
    out = tmp_path / "out"
    out.mkdir()
    cli = f"{sys.executable} -m flows.cli convert {tmp_path / 'data'} --out {out} --json"
    items = (f"{sys.executable} -c \"import pyarrow.parquet as pq, json; print(json.dumps("
             f"pq.read_table('{out}/items.parquet').select(['status','reason']).to_pylist()))\"")
    script = textwrap.dedent(f"""
        mount -t tmpfs -o size=300k tmpfs {out}
        {cli} > {tmp_path}/first.json; echo "rc=$?"
        {items}
        df -k {out} | tail -1
        mount -o remount,size=64m {out}
        {cli} > {tmp_path}/second.json; echo "rc=$?"
        {items}
    """)
    done = subprocess.run(["unshare", "-rm", "bash", "-c", script], capture_output=True,
                          text=True, timeout=300)
    lines = done.stdout.splitlines()
    assert lines[0] == "rc=1", done.stdout + done.stderr
    assert json.loads(lines[1]) == [{"status": "failed", "reason": "storage_error"}]
    used = int(lines[2].split()[2])
    assert used < 100, lines[2]  # nothing half-written left on the full disk
    first = json.loads((tmp_path / "first.json").read_text())
    assert first["counts"] == {"failed": 1} and "blocked" not in first["counts"]
    assert lines[3] == "rc=0", done.stdout + done.stderr
    assert json.loads(lines[4]) == [{"status": "converted", "reason": None}]
