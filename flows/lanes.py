"""The lanes of the DAG's chains (`flows.run`): each stage's tasks run within that stage's
own limit (clips at once per stage, objects at once for tracking, one queue writer), so
clip k is detected while clip k+1 converts and a clip's objects track while others detect.
Each lane method takes one clip one stage further: the answer found before any task
(`flows.look_ahead`), else its task; a failure is the clip's, reported, and the batch goes
on (nothing was recorded as done, so the next run redoes it).
"""

from __future__ import annotations

import contextvars
import heapq
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from prefect import get_run_logger

from flows import units
from flows.runtime import gather, stage_limit
from tasks import progress
from tasks.convert.batch import failed_record
from tasks.errors import ReviewStorageError

if TYPE_CHECKING:
    from flows.job import ClipRun, Job


class Lane:
    """``limit`` slots of one stage; a freed slot goes to the waiting clip that comes first
    in the recording (lowest order), so the first clips finish first and their review
    tasks come early, instead of every clip advancing at the same pace."""

    def __init__(self, limit: int | None):
        self.limit, self.busy = limit, 0
        self.waiting: list[int] = []  # heap of orders
        self.cond = threading.Condition()

    def acquire(self, order: int) -> None:
        if self.limit is None:
            return
        with self.cond:
            heapq.heappush(self.waiting, order)
            while self.busy >= self.limit or self.waiting[0] != order:
                self.cond.wait()
            heapq.heappop(self.waiting)
            self.busy += 1
            self.cond.notify_all()

    def release(self) -> None:
        if self.limit is None:
            return
        with self.cond:
            self.busy -= 1
            self.cond.notify_all()


class Lanes:
    """Runs the clips' chains, and each stage of a chain within that stage's `Lane`."""

    def __init__(self, job: "Job", chain):
        self.job, self.chain = job, chain  # chain(job, lanes, run): one clip's way
        recipe = job.recipe
        clips = stage_limit(recipe, recipe.run.max_parallel_clips)
        objects = stage_limit(recipe, recipe.track.max_parallel)
        self.slots = {name: Lane(n) for name, n in (
            ("convert", clips), ("detect", clips), ("plan", clips), ("object", objects),
            ("finish", clips), ("compact", clips), ("export", clips), ("review", 1))}
        # Chains at once: enough to keep every stage's lane busy with different clips.
        self.width = 3 * (clips or recipe.run.workers * recipe.run.threads_per_worker)
        self.watching = progress.current()
        self.logger = get_run_logger()

    def run_chains(self, runs: list["ClipRun"]) -> None:
        if not runs:
            return
        pool = ThreadPoolExecutor(min(self.width, len(runs)), thread_name_prefix="clip-chain")
        try:
            futures = [pool.submit(contextvars.copy_context().run, self.chain, self.job, self, r)
                       for r in runs]
            for future in futures:
                future.result()
        finally:  # Ctrl-C or SIGTERM while waiting: chains not started never start
            pool.shutdown(wait=False, cancel_futures=True)

    def take_found(self, run: "ClipRun") -> None:
        """A clip with nothing to do: its answers, as if its chain had run."""
        for stage in ("convert", "detect", "track", "compact", "export", "review"):
            run.set(stage, run.found.get(stage))
            if self.watching and stage != "review" and run.found.get(stage) is not None:
                self.watching.finish(stage, run.uri)

    def _call(self, lane: str, run: "ClipRun", task, *args):
        """``task(*args)`` as a task run within ``lane``'s limit; its result."""
        slot = self.slots[lane]
        slot.acquire(run.order)
        try:
            progress.check_stop(lane)
            return task.submit(*args).result()
        finally:
            slot.release()

    def _step(self, stage: str, run: "ClipRun", task, *args, lane: str | None = None):
        """One stage of one clip: its found answer, else its task's result, else None with
        the failure reported."""
        if self.watching and stage != "review":
            self.watching.add(stage, run.uri)
        answer = run.found.get(stage)
        if answer is None:
            try:
                answer = self._call(lane or stage, run, task, *args)
            except Exception as e:
                self._failed(run, stage, f"{stage} {run.record.output_uri}", e)
                return None
        if self.watching and stage != "review":
            self.watching.finish(stage, run.uri)
        return answer

    def _failed(self, run: "ClipRun", stage: str, what: str, e: BaseException) -> None:
        self.logger.error("%s failed: %s", what, e)
        entry = {"unit": what, "clip": run.record.output_uri,
                 "error": f"{type(e).__name__}: {e}"}
        if stage in ("detect", "export"):
            entry.pop("unit")
        if stage == "review":  # the queue's failure, not the clip's: the run fails, not it
            entry = {"unit": "review queue", "error": f"{what}: {type(e).__name__}: {e}"}
        run.failed.setdefault(stage, []).append(entry)
        return None

    # --- the stages, in the order a clip meets them ---

    def convert(self, run: "ClipRun") -> dict[str, Any]:
        job = self.job
        record = run.found.get("convert")
        if record is None:
            try:
                record = self._call("convert", run, units.process_clip, run.source, job.uri,
                                    job.out, job.recipe, job.mode)
            except Exception as e:  # the batch goes on: the clip is reported, redone next run
                self.logger.error("%s failed: %s", run.uri, e)
                record = failed_record(run.source, e)
        if self.watching:
            self.watching.finish("convert", run.uri)
        return record

    def detect(self, run: "ClipRun") -> dict[str, Any] | None:
        return self._step("detect", run, units.detect_clip, run.record, self.job.out,
                          self.job.recipe)

    def track(self, run: "ClipRun") -> dict[str, Any] | None:
        """Plan the clip's objects, track each (its chunks in order inside, each persisted),
        then its tracks table and review; the clip's result, or None if a unit failed."""
        if self.watching:
            self.watching.add("track", run.uri)
        finished = run.found.get("track")
        if finished is None:
            finished = self._track(run)
        if finished is not None and self.watching:
            self.watching.finish("track", run.uri)
        return finished

    def compact(self, run: "ClipRun") -> dict[str, Any] | None:
        job = self.job
        return self._step("compact", run, units.compact_clip, run.record, job.out, job.recipe,
                          job.track_key, job.max_error_px, job.min_iou)

    def export(self, run: "ClipRun") -> dict[str, Any] | None:
        """The clip's files in every format that needs only the clip."""
        job = self.job
        return self._step("export", run, units.export_clip, run.record, job.out, job.recipe,
                          job.clip_formats(), run.compacted)

    def review(self, run: "ClipRun") -> dict[str, Any] | None:
        """The clip's review task(s), enqueued as soon as its files exist."""
        job = self.job
        shots = [int(s["first"]) for s in (run.detected or {}).get("shots") or []]
        return self._step("review", run, units.enqueue_clip_review, job.out, job.recipe,
                          run.record, run.exported["files"], shots, job.uri,
                          os.path.abspath(job.config) if job.config else None, job.track_key)

    def _track(self, run: "ClipRun") -> dict[str, Any] | None:
        job, record, uri = self.job, run.record, run.record.output_uri
        try:
            plan = self._call("plan", run, units.plan_clip, record, job.out, job.recipe,
                              job.keyframes, job.track_key)
        except Exception as e:
            return self._failed(run, "track", f"plan {uri}", e)
        objects = plan["objects"]
        futures = self._objects(run, objects)
        # An object that fails is reported; the other objects and clips go on.
        tracked = gather(objects, futures,
                         lambda tid, e: self._failed(run, "track", f"track {uri} #{tid}", e))
        if len(tracked) < len(objects):
            return None
        try:
            finished = self._call("finish", run, units.finish_clip, record, job.out, job.recipe,
                                  job.track_key, objects)
        except ReviewStorageError as e:  # its table is assembled: the machine's tracks stand
            finished = {"tracks": e.tracks, "review": None, "review_error": f"StorageError: {e}"}
        except Exception as e:
            return self._failed(run, "track", f"assemble {uri}", e)
        if finished["review_error"]:  # reported; the clip keeps its machine tracks
            what = f"apply review {uri}"
            self.logger.error("%s failed: %s", what, finished["review_error"])
            run.failed["track"].append({"unit": what, "clip": uri,
                                        "error": finished["review_error"]})
        return finished

    def _objects(self, run: "ClipRun", objects: list[int]) -> list:
        """One task per object, within the objects' limit shared by every clip."""
        job, slot = self.job, self.slots["object"]
        futures = []
        for tid in objects:
            progress.check_stop("track")
            slot.acquire(run.order)  # a slot frees as soon as any running object ends
            future = units.run_object.submit(run.record, job.out, job.recipe, job.track_key, tid)
            future.add_done_callback(lambda _: slot.release())
            futures.append(future)
        return futures
