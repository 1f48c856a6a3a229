"""The review queue in a Label Studio project: `push` leases queued clip tasks to the worker
``review.label_studio.worker`` and imports each as a Label Studio task with our tracks as its
prediction and a video URL the editor loads; `pull` takes back every submitted (or skipped)
annotation, completes its queue task with it, and leaves applying the results (re-tracking
from moved boxes) to the caller, once per OUT.

Both are idempotent. A Label Studio task carries its queue task's id (``data.queue_task``)
and clip id (``data.clip_id``): a push imports only queue tasks the project lacks, and a pull
completes only queue tasks still leased to the worker, so a pull interrupted after some
completions picks up the rest and applies each result once.
"""

from __future__ import annotations

import json
import posixpath
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tasks.errors import ConfigError, NotReviewedError, QueueError
from tasks.export.video_url import fill
from tasks.recipe import Recipe
from tasks.review.ls_client import LabelStudio, upload_url
from tasks.review.results import submit_result, tasks_in_state
from tasks.store.storage import Location, open_location, read_bytes


UPLOADS_AT_ONCE = 4


def project_title(recipe: Recipe, out: Location) -> str:
    name = posixpath.basename(out.root.rstrip("/")) or out.root
    return recipe.review.label_studio.project or f"preannotate {name}"


def push(queue, recipe: Recipe, out_uri: str, client: LabelStudio) -> dict[str, Any]:
    """Lease up to ``batch`` queued tasks of ``out_uri`` and import those the project lacks
    (with the tasks this worker already holds). Returns counts and the project's URL."""
    started = time.perf_counter()
    settings = recipe.review.label_studio
    if recipe.review.unit != "clip":
        raise ConfigError("review push sends one Label Studio task per clip: set review.unit: "
                          "clip (a track task has no task file of its own)")
    out = open_location(out_uri, recipe.storage)
    config = read_bytes(out, out.path("exports", "labelstudio", "config.xml"))
    if config is None:
        raise ConfigError(f"no Label Studio export in {out_uri}: add labelstudio to "
                          "export.formats and review.formats, then run again")
    project, made = client.project(project_title(recipe, out), config.decode("utf-8"))
    present = {t["data"].get("queue_task") for t in client.tasks(project)
               if isinstance(t.get("data"), dict)}
    held = [t for t in _leased(queue, settings.worker) if _same_out(t, out)]
    leased = queue.lease_many(settings.worker, settings.lease_seconds, settings.batch)
    for task in leased:
        if not _same_out(task, out):  # another OUT's task (a shared queue): not ours to push
            queue.release(task.id, settings.worker)
    mine = {t.id: t for t in [*held, *(t for t in leased if _same_out(t, out))]}
    uploads = {} if settings.video == "template" else uploads_by_name(client, project)
    for task in mine.values():
        queue.heartbeat(task.id, settings.worker, settings.lease_seconds)
    todo = [task for task in mine.values() if task.id not in present]
    # Uploads wait on the server (about 0.1 s each): several at once.
    with ThreadPoolExecutor(UPLOADS_AT_ONCE, thread_name_prefix="ls-upload") as pool:
        new = list(pool.map(lambda task: _task(task, out, recipe, client, project, uploads),
                            todo))
    imported = client.import_tasks(project, new)
    return {"project": project, "project_url": f"{client.url}/projects/{project}",
            "project_made": made, "pushed": imported, "already_there": len(mine) - len(new),
            "seconds": round(time.perf_counter() - started, 3)}


def pull(queue, recipe: Recipe, client: LabelStudio, out_uri: str) -> dict[str, Any]:
    """Complete every queue task whose Label Studio task was submitted or skipped; renew the
    leases of the others. Returns what was done, and the OUTs with new results to apply."""
    started = time.perf_counter()
    settings = recipe.review.label_studio
    out = open_location(out_uri, recipe.storage)
    project = pushed_project(client, project_title(recipe, out), "review push")
    completed, skipped, waiting, already, refused = [], [], 0, 0, []
    for ls_task in client.tasks(project):
        task_id = (ls_task.get("data") or {}).get("queue_task")
        if not isinstance(task_id, int):
            continue
        try:
            task = queue.get(task_id)
        except QueueError:
            refused.append({"ls_task": ls_task.get("id"), "error": f"no queue task {task_id}"})
            continue
        annotations = sorted(a["id"] for a in ls_task.get("annotations") or []
                             if isinstance(a, dict) and "id" in a)
        if task.state == "done" or (annotations and _handled(queue, task_id, annotations)):
            already += 1  # applied, or skipped and handled, by an earlier pull
            continue
        if task.state != "leased" or task.worker != settings.worker:
            refused.append({"task": task_id, "error": f"the queue task is {task.state}, not "
                            f"leased to {settings.worker} (its lease ran out): push again"})
            continue
        if not ls_task.get("annotations"):
            queue.heartbeat(task_id, settings.worker, settings.lease_seconds)
            waiting += 1
            continue
        data = json.dumps([ls_task]).encode("utf-8")
        try:
            done = submit_result(queue, task_id, settings.worker, data, "labelstudio", recipe)
        except NotReviewedError:  # drafts only, nothing submitted: still the reviewer's
            queue.heartbeat(task_id, settings.worker, settings.lease_seconds)
            waiting += 1
            continue
        except Exception as e:  # a bad result: reported, the others go on
            refused.append({"task": task_id, "ls_task": ls_task.get("id"),
                            "error": f"{type(e).__name__}: {e}"})
            continue
        queue.record(task_id, "label_studio", {"ls_task": ls_task.get("id"),
                                               "annotations": annotations})
        (skipped if "skipped" in done else completed).append(done)
    return {"project": project, "completed": completed, "skipped": skipped,
            "waiting": waiting, "already_applied": already, "refused": refused,
            "seconds": round(time.perf_counter() - started, 3)}


def pushed_project(client: LabelStudio, title: str, push: str) -> int:
    """The id of the project ``push`` made; a `ConfigError` saying to run it when missing."""
    found = client.find_project(title)
    if found is None:
        raise ConfigError(f"Label Studio has no project {title!r}: run `preannotate {push}` "
                          "first")
    return int(found["id"])


def _handled(queue, task_id: int, annotations: list[int]) -> bool:
    """Whether a pull already took these annotations of the task (a skip, released)."""
    return any(h["event"] == "label_studio" and (h.get("detail") or {}).get("annotations")
               == annotations for h in queue.history(task_id))


def _leased(queue, worker: str):
    return (t for t in tasks_in_state(queue, "leased") if t.worker == worker)


def _same_out(task, out: Location) -> bool:
    return str(task.payload.get("out", "")).rstrip("/") == out.url(out.root).rstrip("/")


def _task(task, out: Location, recipe: Recipe, client: LabelStudio, project: int,
          uploads: dict[tuple[str, int], str]) -> dict[str, Any]:
    """The Label Studio task of a queue task: our exported task file, its video URL as the
    recipe says, and the queue task's id and key."""
    path = task.payload.get("annotations", {}).get("labelstudio")
    if not path:
        raise ConfigError(f"queue task {task.id} has no Label Studio file: add labelstudio to "
                          "review.formats and export again")
    with out.fs.open(path, "rb") as f:
        (ls_task,) = json.loads(f.read())
    data = ls_task["data"]
    data.update(video=task_video_url(task, data["video"], out, recipe, client, project, uploads),
                queue_task=task.id, queue_key=task.key)
    return ls_task


def task_video_url(task, exported: str, out: Location, recipe: Recipe, client: LabelStudio,
           project: int, uploads: dict[tuple[str, int], str]) -> str:
    """The URL the editor loads a queue task's WebM from: `webm_url`, where the template's
    URL is ``exported`` (the export wrote it)."""
    return webm_url(task.payload["video"], out, recipe, client, project, uploads, exported)


def webm_url(webm: str, out: Location, recipe: Recipe, client: LabelStudio, project: int,
             uploads: dict[tuple[str, int], str], exported: str | None = None) -> str:
    """The URL the editor loads the WebM at ``webm`` from (``review.label_studio.video``):
    the export's template, a presigned URL, or an upload to the project (one per WebM:
    ``uploads`` holds those made before, by name and size)."""
    settings = recipe.review.label_studio
    mode = settings.video
    if mode == "auto":
        mode = "template" if recipe.export.video_url else (
            "upload" if out.is_local else "presigned")
    if mode == "template":
        if not recipe.export.video_url:
            raise ConfigError("review.label_studio.video: template needs export.video_url")
        return exported or fill(recipe.export.video_url, out, webm)
    path = webm.split("://", 1)[1] if "://" in webm and not out.is_local else webm
    if mode == "presigned":
        try:
            return out.fs.sign(path, expiration=settings.presign_seconds)
        except NotImplementedError:
            raise ConfigError(f"{out.protocol} cannot presign URLs: use video: upload or "
                              "export.video_url") from None
    size = out.fs.size(path)
    name = posixpath.basename(path)
    if (name, size) in uploads:
        return uploads[(name, size)]
    with out.fs.open(path, "rb") as f:
        url = client.upload(project, name, f)
    uploads[(name, size)] = url
    return url


def uploads_by_name(client: LabelStudio, project: int) -> dict[tuple[str, int], str]:
    """Files uploaded before (a push cut short after its uploads), by name and size: the
    server prefixes each stored name with 8 characters and a hyphen."""
    found = {}
    for upload in client.uploads(project):
        stored = posixpath.basename(str(upload.get("file", "")))
        name = stored.split("-", 1)[1] if "-" in stored else stored
        found[(name, int(upload.get("size") or -1))] = upload_url(upload)
    return found
