"""Review handoff to Label Studio: tasks pushed and pulled per second against a local server.

Makes one recording of N one-second clips (the first second of carphone, copied), runs
`preannotate run` on it (exports in our JSON and Label Studio's format, one review task per
clip), starts a Label Studio server on 127.0.0.1 (`tests/ls_server.py`: the `.venv-ls`
environment from `tests/setup-peers.sh`), then measures, side by side in this process:

- `review push` (lease, project, uploads of every WebM, import) against the reference: one
  import of the exported `tasks.json` into a fresh project (what a user does by hand, with no
  video upload and a video the editor cannot load);
- a reviewer submitting every task through the API (a box moved 10 px), not timed;
- `review pull` (completing every queue task through validation; `seconds` in its output,
  without applying) against the reference: the server's JSON export of the project;
- applying the results (one pipeline run re-tracking every clip), reported apart;
- `review push --timeline` (the recording's review video joined, uploaded, one task per part)
  and, after a range is labelled on each task, `review pull --timeline` (spans and frame
  labels in recording time), against the server's JSON export of that project.

``--screenshot FILE`` (and ``--timeline-screenshot FILE``) also opens the first task in
headless Chromium (Debian's ``/usr/bin/chromium`` driven by pip ``playwright``) and saves
what a reviewer sees.

    python -m benchmarks.label_studio_handoff --clips 50
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.noop_rerun import dataset, one_second_clip  # noqa: E402
from tests import ls_server  # noqa: E402

WORK = Path(__file__).resolve().parent / "_work" / "label_studio_handoff"
RECIPE = ("detect: {every_nth: 5}\nexport: {formats: [json, labelstudio]}\n"
          "review: {formats: [json, labelstudio], label_studio: {batch: 10000}}\n"
          f"labels: {{file: {ROOT / 'configs' / 'labels' / 'example.yaml'}}}\n")


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, text=True,
                          capture_output=True, env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - started
    if done.returncode not in (0,):
        raise SystemExit(f"{' '.join(args[:2])} failed ({done.returncode}):\n{done.stderr[-3000:]}"
                         f"\n{done.stdout[-3000:]}")
    return seconds, (json.loads(done.stdout) if done.stdout.strip().startswith("{") else {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=50)
    parser.add_argument("--screenshot", default=None, metavar="FILE")
    parser.add_argument("--timeline-screenshot", default=None, metavar="FILE")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    clip = one_second_clip(WORK.parent / "noop_rerun" / "one-second.mp4")
    data = dataset(WORK / f"data-{args.clips}", args.clips, clip)
    out = WORK / f"out-{args.clips}"
    shutil.rmtree(out, ignore_errors=True)
    config = WORK / "recipe.yaml"
    config.write_text(RECIPE)
    first, _ = cli("run", str(data), "--out", str(out), "--config", str(config))
    print(f"{args.clips} clips: pipeline run {first:.1f} s", flush=True)

    with ls_server.local_server() as server:
        env = {"LABEL_STUDIO_URL": server.url, "LABEL_STUDIO_API_KEY": server.token}
        api = httpx.Client(base_url=server.url, timeout=300,
                           headers={"Authorization": f"Token {server.token}"})
        # Reference: the exported tasks.json imported by hand into a fresh project.
        tasks_json = json.loads((out / "exports" / "labelstudio" / "tasks.json").read_bytes())
        label_config = (out / "exports" / "labelstudio" / "config.xml").read_text()
        started = time.perf_counter()
        ref = api.post("/api/projects", json={"title": "by hand", "label_config": label_config})
        api.post(f"/api/projects/{ref.json()['id']}/import", json=tasks_json).raise_for_status()
        by_hand = time.perf_counter() - started

        push_s, pushed = cli("review", "push", "--out", str(out), "--config", str(config), env=env)
        assert pushed["pushed"] == args.clips, pushed
        again_s, again = cli("review", "push", "--out", str(out), "--config", str(config), env=env)
        assert again["pushed"] == 0, again

        tasks = api.get("/api/tasks", params={"project": pushed["project"], "fields": "all",
                                               "page_size": 100_000}).json()["tasks"]
        width = 176  # carphone's width
        for task in tasks:
            result = copy.deepcopy(task["predictions"][0]["result"])
            if result:  # the first box moved 10 px toward the frame's middle
                box = result[0]["value"]["sequence"][0]
                box["x"] += (10 if box["x"] + box["width"] / 2 < 50 else -10) / width * 100
            api.post(f"/api/tasks/{task['id']}/annotations",
                     json={"result": result, "was_cancelled": False}).raise_for_status()

        started = time.perf_counter()
        api.get(f"/api/projects/{pushed['project']}/export",
                params={"exportType": "JSON"}).raise_for_status()
        export_s = time.perf_counter() - started
        pull_s, pulled = cli("review", "pull", "--out", str(out), "--config", str(config), env=env)
        assert len(pulled["completed"]) == args.clips, {k: pulled[k] for k in ("waiting", "refused")}
        if args.screenshot:
            screenshot(server, pushed["project"], tasks[0]["id"], args.screenshot)

        # Whole-recording time spans: the N clips joined into the recording's review video,
        # one TimelineLabels task per part; a range labelled, pulled into frame labels.
        timeline = ("review", "push", "--out", str(out), "--config", str(config), "--timeline")
        tl_push_s, tl_pushed = cli(*timeline, env=env)
        tl_tasks = api.get("/api/tasks", params={"project": tl_pushed["project"],
                                                  "fields": "all"}).json()["tasks"]
        for task in tl_tasks:
            region = {"id": "s1", "type": "timelinelabels", "from_name": "activity",
                      "to_name": "video", "origin": "manual",
                      "value": {"ranges": [{"start": 16, "end": 45}],
                                "timelinelabels": ["Task 1/Sub Task 1.1"]}}
            api.post(f"/api/tasks/{task['id']}/annotations",
                     json={"result": [region]}).raise_for_status()
        started = time.perf_counter()
        api.get(f"/api/projects/{tl_pushed['project']}/export",
                params={"exportType": "JSON"}).raise_for_status()
        tl_export_s = time.perf_counter() - started
        tl_pull_s, tl_pulled = cli(*timeline[:1], "pull", *timeline[2:], env=env)
        assert tl_pulled["submitted"] == len(tl_tasks), tl_pulled
        if args.timeline_screenshot:
            screenshot(server, tl_pushed["project"], tl_tasks[0]["id"], args.timeline_screenshot,
                       tab=None)

    n = args.clips
    result = {
        "clips": n, "pipeline_run_s": round(first, 2),
        "push_command_s": round(push_s, 2), "push_s": pushed["seconds"],
        "push_tasks_per_s": round(n / pushed["seconds"], 1),
        "reference_import_s": round(by_hand, 3),
        "push_over_reference": round(pushed["seconds"] / by_hand, 2),
        "second_push_s": again["seconds"],
        "pull_command_s": round(pull_s, 2), "pull_s": pulled["seconds"],
        "pull_tasks_per_s": round(n / pulled["seconds"], 1),
        "reference_export_s": round(export_s, 3),
        "pull_over_reference": round(pulled["seconds"] / export_s, 2),
        "applied_frames_retracked": sum(a["frames_retracked"] for a in
                                        pulled["applied"]["reviews_applied"]),
        "timeline": {"parts": tl_pushed["parts"], "push_command_s": round(tl_push_s, 2),
                     "push_s": tl_pushed["seconds"], "pull_command_s": round(tl_pull_s, 2),
                     "pull_s": tl_pulled["seconds"], "reference_export_s": round(tl_export_s, 3),
                     "frame_labels": tl_pulled["spans"]["frame_labels"]},
    }
    print(json.dumps(result, indent=2))
    (WORK.parent / "label_studio_handoff.json").write_text(json.dumps(result, indent=2))


def screenshot(server, project: int, task: int, path: str, tab: str | None = "preannotate"
               ) -> None:
    """What a reviewer sees: log in as the server's user, open the task, show our
    prediction a second into the clip (``tab``: the prediction's tab to click, if any)."""
    from playwright.sync_api import sync_playwright

    email, password = server.email, server.password
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{server.url}/user/login/")
        page.fill("input[name=email]", email)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")
        page.goto(f"{server.url}/projects/{project}/data?task={task}")
        page.wait_for_load_state("networkidle")
        time.sleep(6)
        if tab:
            page.get_by_text(tab, exact=True).first.click()
            time.sleep(2)
        page.screenshot(path=path)
        browser.close()


if __name__ == "__main__":
    main()
