"""`preannotate review ...`: the review queue from the command line, JSON in and out, and
the flow step that applies reviewers' corrections (the export flow again: the track stage
applies each clip's review, then compaction and exports rerun; clips without a new review
are skipped by every stage)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

ACTIONS = ("list", "lease", "heartbeat", "complete", "release", "fail", "stats", "history", "apply",
           "push", "pull", "video")
EXIT_LEASE_LOST = 4


def add_parser(sub) -> None:
    review = sub.add_parser(
        "review", help="the review queue: list, lease, heartbeat, complete, release, fail, "
        "stats, history, apply (JSON output)",
        description="Work the review queue the export stage fills (one task per clip or per "
        "track). A completed task's result is a reviewed annotation file (our JSON, CVAT XML, "
        "Label Studio JSON or Dataloop JSON); it is validated, stored with the task, and "
        "applied: the tracker runs again from the reviewer's boxes, then compaction and the "
        "exports. Output is JSON.")
    actions = review.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--db", metavar="URL", help="queue: sqlite:///path/review.db or "
                           "postgresql://user@host:port/db")
        where.add_argument("--out", metavar="OUT", help="the pipeline's output folder: its "
                           "queue (the recipe's review.db, else OUT/review.db)")
        p.add_argument("--config", metavar="FILE", default=None,
                       help="YAML recipe (default: the one each task was made with)")

    def task_and_worker(p: argparse.ArgumentParser) -> None:
        p.add_argument("id", type=int, metavar="ID", help="task id")
        p.add_argument("--worker", required=True, metavar="NAME", help="who holds the lease")

    p = actions.add_parser("list", help="tasks, highest priority first")
    common(p)
    p.add_argument("--state", choices=("queued", "leased", "done", "dead"), default=None)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--offset", type=int, default=0)
    p = actions.add_parser("lease", help="lease the next task (or --count tasks); null if none")
    common(p)
    p.add_argument("--worker", required=True, metavar="NAME")
    p.add_argument("--lease-seconds", type=float, default=None, metavar="S",
                   help="default: the recipe's review.lease_seconds")
    p.add_argument("--count", type=int, default=1, metavar="N", help="bulk lease N tasks")
    p = actions.add_parser("heartbeat", help="renew a lease")
    common(p)
    task_and_worker(p)
    p.add_argument("--lease-seconds", type=float, default=None, metavar="S")
    p = actions.add_parser("complete", help="validate a reviewed file, complete the task with "
                           "it and apply it")
    common(p)
    task_and_worker(p)
    p.add_argument("--result", required=True, metavar="FILE", help="the reviewed annotations")
    p.add_argument("--format", dest="fmt", default=None,
                   choices=("json", "cvat", "labelstudio", "dataloop"),
                   help="the file's format (default: recognised from its content)")
    p.add_argument("--no-apply", action="store_true", help="store the result only; "
                   "`review apply` applies stored results later")
    p = actions.add_parser("release", help="give a task back without counting an attempt")
    common(p)
    task_and_worker(p)
    p = actions.add_parser("fail", help="give a task back as failed (dead after max_attempts)")
    common(p)
    task_and_worker(p)
    p.add_argument("--reason", required=True, metavar="TEXT")
    p = actions.add_parser("stats", help="counts per state")
    common(p)
    p = actions.add_parser("history", help="a task's audit trail")
    common(p)
    p.add_argument("id", type=int, metavar="ID")
    p = actions.add_parser("apply", help="write every stored result's review again and rerun "
                           "the pipeline for the reviewed outputs")
    common(p)
    for name, text in (("push", "lease queued clip tasks and import them into a Label Studio "
                        "project (made or updated) with our tracks as predictions and a video "
                        "URL the editor loads; pushing twice adds nothing"),
                       ("pull", "complete the queue tasks whose Label Studio tasks were "
                        "submitted (or skipped) and apply the results; each result once")):
        p = actions.add_parser(name, help=text, description=text + ". The server and token "
                               "come from LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY, else the "
                               "recipe's review.label_studio.")
        p.add_argument("--out", required=True, metavar="OUT", help="the pipeline's output folder")
        p.add_argument("--db", metavar="URL", default=None, help="queue URL (default: OUT's)")
        p.add_argument("--config", metavar="FILE", default=None, help="YAML recipe")
        p.add_argument("--url", metavar="URL", default=None, help="Label Studio's URL")
        p.add_argument("--timeline", action="store_true", help="whole-recording time-span "
                       "tasks instead: each recording's review video, labelled with the "
                       "hierarchical labels (TimelineLabels); pull writes OUT/spans.parquet "
                       "and OUT/frame_labels.parquet in recording time")
    p = actions.add_parser("video", help="join each recording's converted clips into its "
                           "review video (OUT/review_video/: parts of at most "
                           "review.recording_video.max_part_bytes, and a map of every frame "
                           "back to its clip and frame)")
    p.add_argument("--out", required=True, metavar="OUT", help="the pipeline's output folder")
    p.add_argument("--config", metavar="FILE", default=None, help="YAML recipe")
    p.add_argument("--recording", action="append", default=None, metavar="NAME",
                   help="only this recording (repeat for more)")


def guess_format(data: bytes) -> str:
    """The result's format from its content: XML is CVAT; a JSON list is Label Studio's task
    list; an object with ``annotations`` Dataloop's; our JSON names its schema."""
    text = data.lstrip()[:1]
    if text == b"<":
        return "cvat"
    try:
        doc = json.loads(data)
    except ValueError:
        return "json"  # the JSON reader names what is wrong
    if isinstance(doc, list):
        return "dataloop" if doc and isinstance(doc[0], dict) and "metadata" in doc[0] \
            and "system" in (doc[0].get("metadata") or {}) else "labelstudio"
    if isinstance(doc, dict) and "data" in doc:
        return "labelstudio"
    if isinstance(doc, dict) and "annotations" in doc and "schema" not in doc:
        return "dataloop"
    return "json"


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(getattr(value, k)) for k in value.__dataclass_fields__}
    return value


def _recipe_for(args, payload: dict | None = None):
    from tasks.recipe import load_recipe

    config = args.config or (payload or {}).get("config")
    return load_recipe(config), config


def apply_reviews(dataset: str, out: str, config: str | None) -> dict[str, Any]:
    """Rerun the pipeline for ``out``: every stage skips what is done; the track stage
    applies new reviews (the tracker again from the reviewers' boxes), compaction and the
    exports follow."""
    from flows.compact import is_table
    from flows.export import run_export
    from tasks.errors import ConfigError
    from tasks.recipe import load_recipe
    from tasks.track.review_store import review_lock
    from tasks.store.storage import open_location

    if is_table(dataset):
        raise ConfigError(f"the task's outputs were exported from a tracks table ({dataset}); "
                          "reviews are applied by the track stage: export from a dataset URI")
    # One run applying reviews per OUT at a time (two completions at once queue up here).
    with review_lock(open_location(out, load_recipe(config).storage)):
        summary = run_export(dataset, out, config, None, None)
    return {"reviews_applied": summary["track"]["reviews_applied"],
            "keyframes": summary["compact"]["keyframes"],
            "exported_clips": summary["export"]["clips"],
            "failed": summary["track"]["failed"] + summary["export"]["failed"]}


def run(args) -> tuple[int, Any]:
    """Do one review action; returns (exit code, JSON-able result)."""
    from tasks.review.handoff import open_queue
    from tasks.review.results import rebuild_reviews, submit_result
    from tasks.formats.limits import check_size

    recipe, _ = _recipe_for(args)
    if args.action == "video" or getattr(args, "timeline", False):
        return _without_queue(recipe, args)
    queue = open_queue(recipe, args.out or ".", args.db)
    with queue:
        action = args.action
        if action == "list":
            return 0, queue.list(state=args.state, limit=args.limit, offset=args.offset)
        if action == "stats":
            return 0, queue.stats()
        if action == "history":
            return 0, queue.history(args.id)
        if action == "lease":
            seconds = args.lease_seconds or recipe.review.lease_seconds
            if args.count == 1:
                return 0, queue.lease(args.worker, seconds)
            return 0, queue.lease_many(args.worker, seconds, args.count)
        if action == "heartbeat":
            return 0, queue.heartbeat(args.id, args.worker,
                                      args.lease_seconds or recipe.review.lease_seconds)
        if action == "release":
            return 0, queue.release(args.id, args.worker)
        if action == "fail":
            return 0, queue.fail(args.id, args.worker, args.reason)
        if action == "complete":
            task = queue.get(args.id)
            recipe, config = _recipe_for(args, task.payload)
            check_size(Path(args.result).stat().st_size, recipe.review.limits)  # before reading
            data = Path(args.result).read_bytes()
            fmt = args.fmt or guess_format(data)
            done = submit_result(queue, args.id, args.worker, data, fmt, recipe)
            done["format"] = fmt
            if "skipped" in done:  # the reviewer skipped it: the queue task went back or failed
                return 0, done
            if not args.no_apply:
                done["applied"] = apply_reviews(task.payload["dataset"], task.payload["out"], config)
                if done["applied"]["failed"]:
                    return 1, done
            return 0, done
        if action in ("push", "pull"):
            return _label_studio(action, queue, recipe, args)
        if action == "apply":
            rebuilt = rebuild_reviews(queue, recipe, None)
            outs = {}
            for task in queue.list(state="done", limit=1_000_000):
                outs.setdefault(task.payload["out"], (task.payload["dataset"],
                                                      args.config or task.payload.get("config")))
            applied = {out: apply_reviews(dataset, out, config) for out, (dataset, config) in outs.items()}
            failed = any(a["failed"] for a in applied.values())
            return (1 if failed else 0), {"rebuilt": rebuilt, "applied": applied}
    raise AssertionError(action)


def _without_queue(recipe, args) -> tuple[int, Any]:
    """Review videos, and the whole-recording timeline tasks made from them."""
    from tasks.annotations import review_video
    from tasks.review import ls_timeline
    from tasks.review.ls_client import LabelStudio

    if args.action == "video":
        return 0, review_video.build_all(args.out, recipe, args.recording)
    with LabelStudio.from_settings(recipe.review.label_studio, args.url) as client:
        if args.action == "push":
            return 0, ls_timeline.push(recipe, args.out, client)
        return 0, ls_timeline.pull(recipe, args.out, client)


def _label_studio(action: str, queue, recipe, args) -> tuple[int, Any]:
    from tasks.review.ls_client import LabelStudio
    from tasks.review.ls_sync import pull, push

    with LabelStudio.from_settings(recipe.review.label_studio, args.url) as client:
        if action == "push":
            return 0, push(queue, recipe, args.out, client)
        pulled = pull(queue, recipe, client, args.out)
    if pulled["completed"]:
        first = queue.get(pulled["completed"][0]["task"]).payload
        pulled["applied"] = apply_reviews(first["dataset"], first["out"],
                                          args.config or first.get("config"))
        if pulled["applied"]["failed"]:
            return 1, pulled
    return (1 if pulled["refused"] else 0), pulled


def main(args) -> int:
    from tasks.errors import ConfigError, PipelineError
    from tasks.errors import FormatError
    from tasks.errors import LeaseLost
    from tasks.store.storage import redact

    try:
        code, result = run(args)
    except LeaseLost as e:
        print(f"preannotate review: {redact(str(e))}", file=sys.stderr)
        return EXIT_LEASE_LOST
    except (ConfigError, FormatError, OSError) as e:
        print(f"preannotate review: {redact(str(e))}", file=sys.stderr)
        return 2
    except PipelineError as e:  # QueueError: unknown task, database failure
        print(f"preannotate review: {redact(str(e))}", file=sys.stderr)
        return 1
    print(json.dumps(_plain(result), indent=2, sort_keys=True))
    return code
