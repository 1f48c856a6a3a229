"""Whole-recording time-span labelling in Label Studio: `push` makes every recording's review
video (`tasks.annotations.review_video`) and imports one ``TimelineLabels`` task per part into
a project of its own (``exports/labelstudio/timeline.xml``: the hierarchical labels file's
paths); `pull` reads back what reviewers labelled, as recording time, into
``OUT/spans.parquet`` and ``OUT/frame_labels.parquet``.

A task carries its part's name and the signature of the WebMs it was joined from
(``data.review_video``, ``data.review_signature``). Pushing twice adds nothing; a recording
whose clips changed gets a task for its new video, and the old task's labels are left out of
a pull (they were made on other frames) and reported. These tasks are not in the review
queue: a pull takes every submitted task each time, so it is idempotent by construction.
Existing frame labels (``OUT/frame_labels.parquet``) are shown as the task's prediction.
"""

from __future__ import annotations

import json
import time
from fractions import Fraction
from typing import Any

import numpy as np
import pyarrow.compute as pc

from tasks.errors import ConfigError
from tasks.formats.labelstudio import TIMELINE_NAME, VIDEO_NAME
from tasks.recipe import Recipe
from tasks.annotations import review_frames, review_video
from tasks.review.ls_client import LabelStudio
from tasks.review.ls_sync import project_title, pushed_project, uploads_by_name, webm_url
from tasks.store.storage import Location, open_location, read_bytes, write_bytes_atomic

# In OUT/review_video/: the tasks a pull read; no recording's file starts with "_"
PULLED_FILE = "_label_studio_pull.json"


def timeline_title(recipe: Recipe, out: Location) -> str:
    return recipe.review.label_studio.timeline_project or f"{project_title(recipe, out)} timeline"


def push(recipe: Recipe, out_uri: str, client: LabelStudio) -> dict[str, Any]:
    """Review videos made (or kept), their parts imported as tasks the project lacks."""
    started = time.perf_counter()
    out = open_location(out_uri, recipe.storage)
    config = read_bytes(out, out.path("exports", "labelstudio", "timeline.xml"))
    if config is None:
        raise ConfigError(f"no exports/labelstudio/timeline.xml in {out_uri}: set labels.file "
                          "(the hierarchical labels) and export labelstudio, then run again")
    made = review_video.build_all(out_uri, recipe)
    project, project_made = client.project(timeline_title(recipe, out), config.decode("utf-8"))
    present = {(t["data"].get("review_video"), t["data"].get("review_signature"))
               for t in client.tasks(project) if isinstance(t.get("data"), dict)}
    uploads = {} if recipe.review.label_studio.video == "template" else \
        uploads_by_name(client, project)
    spans = _spans(out)
    new = []
    for video in made["videos"]:
        frames = review_frames.read_frame_map(out, video["recording"]) if spans else None
        for part in video["parts"]:
            if (part["name"], video["signature"]) in present:
                continue
            data = {"video": webm_url(part["uri"], out, recipe, client, project, uploads),
                    "fps": float(Fraction(video["fps"])),
                    "recording": video["recording"], "review_video": part["name"],
                    "part": part["part"], "review_signature": video["signature"],
                    "recording_start_s": part["recording_start_s"]}
            task: dict[str, Any] = {"data": data}
            ranges = _prediction(video, part, frames, spans)
            if ranges:
                task["predictions"] = [{"model_version": "preannotate spans", "result": ranges}]
            new.append(task)
    imported = client.import_tasks(project, new)
    return {"project": project, "project_url": f"{client.url}/projects/{project}",
            "project_made": project_made, "pushed": imported,
            "parts": sum(len(v["parts"]) for v in made["videos"]),
            "videos_made": [v["recording"] for v in made["videos"] if v["made"]],
            "recordings_without_video": made["skipped"],
            "seconds": round(time.perf_counter() - started, 3)}


def pull(recipe: Recipe, out_uri: str, client: LabelStudio) -> dict[str, Any]:
    """Every submitted timeline task -> ``OUT/spans.parquet`` and ``frame_labels.parquet``."""
    from tasks.annotations.spans import frame_labels_uri

    started = time.perf_counter()
    out = open_location(out_uri, recipe.storage)
    project = pushed_project(client, timeline_title(recipe, out), "review push --timeline")
    current = {part["name"]: info["signature"] for info in _infos(out)
               for part in info["parts"]}
    taken, waiting, skipped, outdated = [], 0, 0, []
    for task in client.tasks(project):
        data = task.get("data") or {}
        name = data.get("review_video")
        if not name:
            continue
        annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
        if not annotations:
            waiting += 1
        elif all(a.get("was_cancelled") for a in annotations):
            skipped += 1
        elif current.get(name) != data.get("review_signature"):
            outdated.append({"ls_task": task.get("id"), "review_video": name,
                             "why": "its clips were converted again since the push: label "
                             "the new task"})
        else:
            task = {**task, "predictions": []}  # a reviewer's answer only, never our own
            taken.append(task)
    pulled = out.path(review_frames.VIDEO_DIR, PULLED_FILE)
    write_bytes_atomic(out, pulled, json.dumps(taken, indent=1).encode())
    summary: dict[str, Any] = {"project": project, "submitted": len(taken),
                               "waiting": waiting, "skipped": skipped, "outdated": outdated}
    if taken:
        summary["spans"] = frame_labels_uri(out_uri, recipe, out.url(pulled))
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


def _infos(out: Location) -> list[dict[str, Any]]:
    """The description of every review video in OUT (unreadable ones left out)."""
    folder = out.path(review_frames.VIDEO_DIR)
    if not out.fs.exists(folder):
        return []
    found = []
    for path in out.fs.ls(folder, detail=False):
        name = str(path).rsplit("/", 1)[-1]
        if name.endswith(".json") and not name.startswith("_"):
            info = review_frames.read_info_file(out, str(path))
            if info is not None:
                found.append(info)
    return found


def _spans(out: Location):
    from tasks.annotations.spans import FRAME_LABELS_FILE
    from tasks.store.tables import read_table

    return read_table(out, out.path(FRAME_LABELS_FILE))


def _prediction(video: dict, part: dict, frame_map, frame_labels) -> list[dict[str, Any]]:
    """The frame labels of OUT on this part, as timeline ranges (1-based frames at fps)."""
    if frame_labels is None or not frame_labels.num_rows or frame_map is None:
        return []
    labelled = frame_labels.filter(pc.equal(frame_labels["recording"], video["recording"]))
    if not labelled.num_rows:
        return []
    frames = frame_map.filter(pc.equal(frame_map["part"], part["part"]))
    rate = Fraction(video["fps"])
    global_frames = frames["global_frame"].to_numpy()
    slots = review_frames.frame_slots(np.rint(frames["part_time_s"].to_numpy() * 1e6), rate)
    result = []
    for label in dict.fromkeys(labelled["label"].to_pylist()):
        wanted = labelled.filter(pc.equal(labelled["label"], label))
        on = np.isin(global_frames, wanted["global_frame"].to_numpy())
        for a, b in _runs(on):
            result.append({"id": f"span-{len(result) + 1}", "type": "timelinelabels",
                           "from_name": TIMELINE_NAME, "to_name": VIDEO_NAME, "origin": "prediction",
                           "value": {"ranges": [{"start": int(slots[a]),
                                                 "end": int(slots[b - 1])}],
                                     "timelinelabels": [label]}})
    return result


def _runs(on: np.ndarray) -> list[tuple[int, int]]:
    """``[a, b)`` of every run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], on.astype(np.int8), [0]))))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))
