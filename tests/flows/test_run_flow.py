"""`preannotate run` end to end on the real Prefect engine: what the UI shows (table,
progress and per-clip markdown artifacts with previews), a rerun that does no work twice, a
changed recipe that redoes only the stages it affects, and the CLI killed with SIGKILL at
several points then rerun to the very outputs of an uninterrupted run."""

from __future__ import annotations

import base64
import os
import re
import signal
import sqlite3
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from configs import recipe_path
from tasks.store.items import TIMING_COLUMNS
from tests.flows.test_convert_flow import _cli
from tests.scene import render_scene


def _recipe(root: Path, name: str, **changes) -> Path:
    recipe = yaml.safe_load(recipe_path("moving-objects").read_text())
    recipe["export"] = {"formats": ["parquet", "json", "cvat", "mot"]}
    for section, values in changes.items():
        recipe.setdefault(section, {}).update(values)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Two synthetic scenes with known objects, and an empty file that is blocked."""
    root = tmp_path_factory.mktemp("run")
    cam = root / "data" / "cam"
    cam.mkdir(parents=True)
    render_scene(cam / "1.mp4", frames=120)
    render_scene(cam / "2.mp4", frames=120, seed=1)
    (cam / "3.mp4").write_bytes(b"")
    return root


def _artifacts(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))


def _run(data: Path, out: Path, config: Path):
    from flows.run import run_flow

    state = run_flow(uri=str(data / "data"), out=str(out), config=str(config), return_state=True)
    return state, state.result(raise_on_failure=False)


@pytest.fixture(scope="module")
def thread_run(prefect_harness, data):
    out = data / "thread"
    state, result = _run(data, out, _recipe(data, "thread"))
    return state, result, out


def test_run_shows_what_happened_in_the_ui(thread_run):
    state, result, out = thread_run
    assert state.is_completed() and state.message == "2 done, 1 blocked, 0 failed clip(s)"
    assert result["outcomes"] == {"done": 2, "blocked": 1, "failed": 0}
    artifacts = _artifacts(state.state_details.flow_run_id)
    by_type = {}
    for a in artifacts:
        by_type.setdefault(a.type, []).append(a)

    (table,) = by_type["table"]
    rows = table.data if isinstance(table.data, list) else __import__("json").loads(table.data)
    assert [r["clip"] for r in rows] == ["cam/1.mp4", "cam/2.mp4", "cam/3.mp4"]
    assert [r["status"] for r in rows] == ["done", "done", "blocked"]
    assert rows[2]["reason"] == "empty_file" and rows[2]["frames"] == 0
    tracks = pq.read_table(out / "tracks.parquet")
    for row, index in zip(rows[:2], (0, 1)):
        assert row["frames"] == 120 and row["review_tasks"] == 1
        assert row["detections"] > 0 and row["keyframes"] > row["tracks"] > 0
        mine = tracks.filter(tracks["clip_index"].to_numpy() == index)
        assert row["tracks"] == len(set(mine["track_id"].to_pylist()))

    (bar,) = by_type["progress"]
    assert float(bar.data) == 100.0

    sheets = by_type["markdown"]
    assert len(sheets) == 2 and {a.key for a in sheets} == {
        a.key for a in sheets if a.key and a.key.startswith("clip-cam-")}
    for artifact in sheets:
        images = re.findall(r"data:image/(jpeg|png);base64,([A-Za-z0-9+/=]+)", artifact.data)
        assert sorted(kind for kind, _ in images) == ["jpeg", "png"]
        assert all(base64.b64decode(b64)[:4] in (b"\xff\xd8\xff\xe0", b"\x89PNG")
                   for _, b64 in images)
    previews = sorted(p.name for p in (out / "previews" / "cam").iterdir())
    assert previews == ["1.contact.jpg", "1.timeline.png", "2.contact.jpg", "2.timeline.png"]
    assert result["previews"]["cam/1.mp4"]["contact_sheet"].endswith("1.contact.jpg")


def test_rerun_does_no_work_twice_and_a_changed_recipe_redoes_only_what_it_affects(
        prefect_harness, data, monkeypatch):
    out = data / "rerun"
    config = _recipe(data, "rerun")
    _, first = _run(data, out, config)
    keyframes = (out / "keyframes.parquet").read_bytes()
    exported = {p: p.stat().st_mtime_ns for p in (out / "exports").rglob("*") if p.is_file()}

    # The stages' ledgers answer for every unchanged clip: no clip's state is read.
    import flows.look_ahead

    looked: list[str] = []
    for name in ("reused_record_uri", "detected_before_uri", "tracked_before_uri",
                 "compacted_before_uri"):
        module = flows.look_ahead
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _real=real, _name=name: (
            looked.append(_name), _real(*a))[1])
    state, again = _run(data, out, config)
    assert looked == []
    monkeypatch.undo()
    # Nothing to do costs no task run per clip or object (issue 15, point 12): only the
    # stages' fixed steps (listing, the merged tables, compaction, the queue) run as tasks.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        ran = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    per_unit = ("convert ", "detect ", "plan ", "track ", "tracks table", "compact ", "export ",
                "review task ", "previews ")
    names = [r.name for r in ran]
    assert names and not [n for n in names if n.startswith(per_unit)], names
    assert again["previews_unchanged"] == 2 and again["previews"] == {}
    assert again["convert"]["counts"] == {"skipped": 2, "blocked": 1}
    assert again["detect"]["skipped"] == 2 and again["detect"]["detected"] == 0
    assert again["track"]["reused"] == 2
    assert again["compact"]["computed"] == 0 and again["compact"]["reused"] == 2
    assert again["export"]["unchanged"] == 2
    assert again["review"]["new"] == 0 and again["review"]["tasks"] == 2
    assert (out / "keyframes.parquet").read_bytes() == keyframes
    assert {p: p.stat().st_mtime_ns for p in exported} == exported  # not even rewritten

    # A new tolerance: compaction and exports again, nothing before them.
    looser = _recipe(data, "looser", compact={"max_error_px": 3.0})
    _, loose = _run(data, out, looser)
    assert loose["convert"]["counts"] == {"skipped": 2, "blocked": 1}
    assert loose["detect"]["skipped"] == 2 and loose["track"]["reused"] == 2
    assert loose["compact"]["computed"] == 2
    assert loose["compact"]["keyframes"] < first["compact"]["keyframes"]
    assert loose["export"]["unchanged"] == 0
    # New tracker settings: tracking, compaction and exports; detections are kept.
    retracked = _recipe(data, "retracked", track={"frames_per_execution": 7})
    _, changed = _run(data, out, retracked)
    assert changed["detect"]["skipped"] == 2 and changed["track"]["reused"] == 0


@pytest.mark.parametrize("runner", ["dask", "ray"])
def test_dask_and_ray_runners_give_the_thread_runners_outputs(prefect_harness, data, thread_run,
                                                              runner):
    """The same flow on a local cluster of 2 worker processes, chosen in the recipe only."""
    from flows.run import run_pipeline

    out = data / runner
    config = _recipe(data, runner, run={"task_runner": runner, "workers": 2})
    result = run_pipeline(str(data / "data"), str(out), str(config))
    assert result["state"] == "COMPLETED" and result["outcomes"] == thread_run[1]["outcomes"]
    expected, got = _comparable(thread_run[2]), _comparable(out)
    assert got.keys() == expected.keys()
    for name in expected:
        assert got[name] == expected[name], name


# --- kill -9 at several points --------------------------------------------------------------

def _files(out: Path, pattern: str) -> bool:
    return any(p.is_file() for p in out.glob(pattern))


# Each point is reached by the run that starts after the previous one was killed.
KILL_POINTS = {
    "mid-convert": lambda out: _files(out, "_state/clips/*.json"),
    "mid-detect": lambda out: _files(out, "_state/detect/*.json"),
    "mid-track": lambda out: _files(out, "_state/track/*/*/objects/*/*"),
    "mid-export": lambda out: _files(out, "exports/*/cam/*"),
    "at-review": lambda out: (out / "review.db").exists(),
}


def _comparable(out: Path) -> dict:
    """Everything a run leaves that must not depend on crashes: tables (timings and the
    OUT path aside), WebM, export and preview bytes, review task keys and priorities."""
    root = str(out)
    seen: dict = {}
    items = pq.read_table(out / "items.parquet").to_pylist()
    for row in items:
        for name in (*TIMING_COLUMNS, "last_run", "detail", "output_uri"):  # status: the same
            row.pop(name)
    seen["items"] = items
    for table in ("detections", "tracks", "keyframes"):
        seen[table] = pq.read_table(out / f"{table}.parquet").to_pylist()
    for folder in ("cam", "exports", "previews"):
        for path in sorted((out / folder).rglob("*")):
            if path.is_file():
                seen[str(path.relative_to(out))] = path.read_bytes().replace(root.encode(), b"OUT")
    with sqlite3.connect(out / "review.db") as db:
        seen["review"] = db.execute("SELECT key, priority, state FROM review_tasks ORDER BY key").fetchall()
    return seen


def test_kill_9_at_several_points_then_rerun_matches_an_uninterrupted_run(
        prefect_harness, data):
    config = _recipe(data, "kill", run={"max_parallel_clips": 1})
    reference, killed = data / "reference", data / "killed"
    args = ["run", str(data / "data"), "--config", str(config)]
    whole = _cli([*args, "--out", str(reference)], prefect_harness)
    assert whole.wait(timeout=600) == 3, whole.stdout.read()  # 3: done, one clip blocked

    for point, reached in KILL_POINTS.items():
        proc = _cli([*args, "--out", str(killed)], prefect_harness)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and not reached(killed):
            time.sleep(0.005)
        assert proc.poll() is None, f"the run ended before {point}: {proc.stdout.read()}"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    rerun = _cli([*args, "--out", str(killed)], prefect_harness)
    output = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 3, output
    assert "2 done, 1 blocked, 0 failed" in output
    leftovers = [p for p in killed.rglob("*") if ".tmp" in p.name]
    assert not leftovers, leftovers  # no half files
    expected, got = _comparable(reference), _comparable(killed)
    assert got.keys() == expected.keys()
    for name in expected:
        assert got[name] == expected[name], name
    assert len(got["review"]) == 2  # one task per done clip, none twice
