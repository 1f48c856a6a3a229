"""`review push` / `review pull` against a real Label Studio server started on 127.0.0.1:
the queue's clip task becomes a Label Studio task whose video the server serves and whose
prediction is our tracks; a reviewer's annotation (a box moved 20 px, a track deleted) is
submitted through the server's API, pulled, completed in the queue and applied (the tracker
runs again from the moved box); pushing and pulling twice changes nothing."""

from __future__ import annotations

import copy
import json
import os

import httpx
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from configs import recipe_path
from flows.cli import EXIT_OK, main
from tests import ls_server
from tests.scene import render_scene


@pytest.fixture(scope="module")
def server():
    if ls_server.executable() is None:
        message = "Label Studio environment missing (.venv-ls): bash tests/setup-peers.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with ls_server.local_server() as running:
        yield running


@pytest.fixture(scope="module")
def exported(tmp_path_factory, prefect_harness):
    root = tmp_path_factory.mktemp("label-studio")
    (root / "data" / "cam").mkdir(parents=True)
    render_scene(root / "data" / "cam" / "1.mp4")
    recipe = yaml.safe_load(recipe_path("moving-objects").read_text())
    recipe["export"] = {"formats": ["json", "labelstudio"]}
    recipe["review"] = {"formats": ["json", "labelstudio"]}
    recipe["labels"]["file"] = str(recipe_path("moving-objects").parent / "labels" / "example.yaml")
    config = root / "recipe.yaml"
    config.write_text(yaml.safe_dump(recipe))
    out = root / "out"
    assert main(["export", str(root / "data"), "--out", str(out), "--config", str(config)]) == EXIT_OK
    return root, out, config


def _review(capsys, *args):
    code = main(["review", *args])
    printed = capsys.readouterr()
    return code, (json.loads(printed.out) if printed.out.strip() else None), printed


def test_push_review_pull(server, exported, capsys, monkeypatch):
    root, out, config = exported
    monkeypatch.setenv("LABEL_STUDIO_URL", server.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", server.token)
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Token {server.token}"},
                       timeout=60)

    code, pushed, printed = _review(capsys, "push", "--out", str(out), "--config", str(config))
    assert code == EXIT_OK and pushed["pushed"] == 1 and pushed["project_made"], printed.err
    assert server.token not in printed.out + printed.err
    code, again, _ = _review(capsys, "push", "--out", str(out), "--config", str(config))
    assert code == EXIT_OK and again["pushed"] == 0 and again["already_there"] == 1
    project = pushed["project"]
    assert again["project"] == project

    (task,) = api.get("/api/tasks", params={"project": project, "fields": "all"}).json()["tasks"]
    data = task["data"]
    assert data["clip"] == "1.mp4" and data["recording"] == "cam" and data["clip_index"] == 0
    assert data["clip_id"] and isinstance(data["queue_task"], int)
    # The editor loads the video from the server itself: no set-up needed.
    assert data["video"].startswith("/data/upload/")
    video = api.get(data["video"])
    assert video.status_code == 200 and video.content == (out / "cam" / "1.webm").read_bytes()
    ours = json.loads((out / "exports" / "labelstudio" / "cam" / "1.json").read_bytes())[0]
    (prediction,) = task["predictions"]
    assert prediction["result"] == ours["predictions"][0]["result"]
    config_xml = api.get(f"/api/projects/{project}").json()["label_config"]
    assert config_xml.strip() == (out / "exports" / "labelstudio" / "config.xml").read_text().strip()

    # The reviewer (through the server's API, as the editor saves): the first region's first
    # box moved 20 px right, the second region deleted.
    result = copy.deepcopy(prediction["result"])
    moved = result[0]
    first = moved["value"]["sequence"][0]
    webm_width = pq.read_table(out / "items.parquet")["output_width"][0].as_py()
    first["x"] += 20 / webm_width * 100
    deleted = result.pop(1)
    made = api.post(f"/api/tasks/{task['id']}/annotations",
                    json={"result": result, "was_cancelled": False})
    assert made.status_code == 201, made.text[:500]

    code, pulled, printed = _review(capsys, "pull", "--out", str(out), "--config", str(config))
    assert code == EXIT_OK, printed.err
    (done,) = pulled["completed"]
    moved_id, deleted_id = (int(r["id"].split("-")[1]) for r in (moved, deleted))
    assert done["changes"]["tracks_deleted"] == [deleted_id]
    assert done["changes"]["keyframes"]["moved"] == 1
    (change,) = done["changes"]["tracks"][str(moved_id)]["moved"]
    assert change["frame"] == first["frame"] - 1 and change["px"] == pytest.approx(20, abs=0.01)
    (applied,) = pulled["applied"]["reviews_applied"]
    assert applied["status"] == "applied" and applied["frames_retracked"] > 0

    tracks = pq.read_table(out / "tracks.parquet")
    assert deleted_id not in tracks["track_id"].to_pylist()
    keyframes = pq.read_table(out / "keyframes.parquet")
    human = keyframes.filter(pc.and_(pc.equal(keyframes["source"], "human"),
                                     pc.equal(keyframes["track_id"], moved_id)))
    assert human["frame"].to_pylist() == [first["frame"] - 1]
    x1 = human["x1"][0].as_py()
    assert x1 == pytest.approx(first["x"] / 100 * webm_width, abs=1e-3)

    # Pulling again applies nothing twice; the queue task is done.
    code, twice, _ = _review(capsys, "pull", "--out", str(out), "--config", str(config))
    assert code == EXIT_OK and twice["completed"] == [] and twice["already_applied"] == 1
    code, stats, _ = _review(capsys, "stats", "--out", str(out))
    assert stats["done"] == 1 and stats["total"] == 1


def test_a_bad_token_is_refused_without_showing_it(server, exported, capsys, monkeypatch):
    _, out, config = exported
    monkeypatch.setenv("LABEL_STUDIO_URL", server.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "not-the-token-0123456789")
    code, _, printed = _review(capsys, "push", "--out", str(out), "--config", str(config))
    assert code == 1 and "HTTP 401" in printed.err
    assert "not-the-token-0123456789" not in printed.out + printed.err
    monkeypatch.delenv("LABEL_STUDIO_API_KEY")
    code, _, printed = _review(capsys, "pull", "--out", str(out), "--config", str(config))
    assert code == 2 and "LABEL_STUDIO_API_KEY" in printed.err


def test_timeline_labels_config_and_the_servers_export_give_spans(server, tmp_path):
    """The TimelineLabels config made from a hierarchical labels file is one the server takes;
    a range labelled in it comes back in the server's own JSON export, and that file is a
    spans file: frames 26..50 at 25 fps are [1.0 s, 2.0 s) of the recording."""
    from tasks.annotations.spans import load_spans
    from tasks.formats.labelstudio import timeline_config
    from tasks.labels import load_label_tree

    tree = load_label_tree(recipe_path("moving-objects").parent / "labels" / "example.yaml")
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Token {server.token}"},
                       timeout=60)
    made = api.post("/api/projects", json={"title": "activities",
                                           "label_config": timeline_config(list(tree.paths))})
    assert made.status_code == 201, made.text[:500]
    project = made.json()["id"]
    api.post(f"/api/projects/{project}/import", json=[{"data": {
        "video": "/data/upload/1/x.webm", "fps": 25.0, "recording": "site/cam 1"}}]).raise_for_status()
    (task,) = api.get("/api/tasks", params={"project": project}).json()["tasks"]
    leaf = tree.leaves()[0]
    region = {"id": "s1", "type": "timelinelabels", "from_name": "activity", "to_name": "video",
              "origin": "manual", "value": {"ranges": [{"start": 26, "end": 50}],
                                            "timelinelabels": [leaf]}}
    api.post(f"/api/tasks/{task['id']}/annotations", json={"result": [region]}).raise_for_status()
    exported = tmp_path / "export.json"
    exported.write_bytes(api.get(f"/api/projects/{project}/export",
                                 params={"exportType": "JSON"}).content)
    (span,) = load_spans(str(exported), tree).to_pylist()
    assert (span["recording"], span["start_s"], span["end_s"], span["label"]) == (
        "site/cam 1", 1.0, 2.0, leaf)


def test_push_label_and_pull_whole_recording_time_spans(server, exported, capsys, monkeypatch):
    """`review push --timeline`: the recording's review video in a TimelineLabels project;
    a range labelled through the server's API comes back by `review pull --timeline` as
    recording-time spans and the clip's frames."""
    _, out, config = exported
    monkeypatch.setenv("LABEL_STUDIO_URL", server.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", server.token)
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Token {server.token}"},
                       timeout=60)
    args = ["--out", str(out), "--config", str(config), "--timeline"]
    code, pushed, printed = _review(capsys, "push", *args)
    assert code == EXIT_OK and pushed["pushed"] == 1 == pushed["parts"], printed.err
    assert pushed["videos_made"] == ["cam"] and server.token not in printed.out + printed.err
    code, again, _ = _review(capsys, "push", *args)
    assert code == EXIT_OK and again["pushed"] == 0 and again["videos_made"] == []
    project = pushed["project"]
    config_xml = api.get(f"/api/projects/{project}").json()["label_config"]
    assert config_xml.strip() == (out / "exports" / "labelstudio" / "timeline.xml").read_text().strip()
    (task,) = api.get("/api/tasks", params={"project": project, "fields": "all"}).json()["tasks"]
    data = task["data"]
    assert data["review_video"] == "cam.part-001" and data["recording"] == "cam"
    part = out / "review_video" / "cam.part-001.webm"
    assert api.get(data["video"]).content == part.read_bytes()

    # Nothing submitted yet: the pull says so and writes no spans.
    code, waiting, _ = _review(capsys, "pull", *args)
    assert code == EXIT_OK and waiting["waiting"] == 1 and "spans" not in waiting
    label = "Task 1/Sub Task 1.2"
    region = {"id": "s1", "type": "timelinelabels", "from_name": "activity", "to_name": "video",
              "origin": "manual", "value": {"ranges": [{"start": 11, "end": 20}],
                                            "timelinelabels": [label]}}
    api.post(f"/api/tasks/{task['id']}/annotations", json={"result": [region]}).raise_for_status()
    code, pulled, printed = _review(capsys, "pull", *args)
    assert code == EXIT_OK and pulled["submitted"] == 1, printed.err
    rows = pq.read_table(out / "frame_labels.parquet").to_pylist()
    frames = pq.read_table(out / "review_video" / "cam.frames.parquet").to_pylist()
    fps = data["fps"]
    expected = [r["frame"] for r in frames if 11 <= round(r["part_time_s"] * fps) + 1 <= 20]
    assert [r["frame"] for r in rows] == expected and len(expected) == 10
    assert {r["label"] for r in rows} == {label}
    (span,) = pq.read_table(out / "spans.parquet").to_pylist()
    assert span["start_s"] == frames[expected[0]]["recording_time_s"]
    assert span["end_s"] == frames[expected[-1] + 1]["recording_time_s"]
    # A second pull reads the same answer: the same tables.
    before = (out / "frame_labels.parquet").read_bytes()
    code, twice, _ = _review(capsys, "pull", *args)
    assert code == EXIT_OK and (out / "frame_labels.parquet").read_bytes() == before
