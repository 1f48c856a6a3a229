"""The mechanics of the DAG's chains (`flows.run`): the look-ahead that answers unchanged
clips in bulk before any task runs, the lanes that run each stage's tasks within its own
limit, and the ledgers kept for the next run."""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from prefect import get_run_logger

from flows import units
from flows.runners import stage_limit
from tasks import progress
from tasks.batch import failed_record
from tasks.clip import convert_ledger, reused_record_uri
from tasks.detect import detect_ledger, detected_before_uri, is_converted
from tasks.errors import ReviewStorageError
from tasks.ledger import fill_missing
from tasks.track import track_ledger, tracked_before_uri

if TYPE_CHECKING:
    from flows.run import ClipRun, Job


# --- the look-ahead: every stage's answers for unchanged clips, in bulk ----------------------

def look_ahead(job: "Job", runs: list["ClipRun"]) -> None:
    """Fill ``run.found`` stage by stage for the clips whose earlier stages are found done:
    ledgers first, then one state read per clip the ledger cannot answer."""
    recipe = job.recipe
    calls = [(r.source, job.uri, job.out, recipe, job.mode) for r in runs]
    found = look_up(reused_record_uri, calls, convert_ledger([r.source for r in runs], job.out,
                                                              recipe, job.mode))
    for run, answer in zip(runs, found):
        run.found["convert"] = answer
    if not job.reaches("detect"):
        return
    ready = [r for r in runs if is_converted(r.found["convert"])]
    records = [r.found["convert"] for r in ready]
    found = look_up(detected_before_uri, [(rec, job.out, recipe) for rec in records],
                    detect_ledger(records, job.out, recipe))
    for run, answer in zip(ready, found):
        run.found["detect"] = answer
    if not job.reaches("track"):
        return
    ready = [r for r in ready if r.found["detect"] is not None]
    records = [r.found["convert"] for r in ready]
    found = look_up(tracked_before_uri, [(rec, job.out, recipe, job.track_key) for rec in records],
                    track_ledger(records, job.out, recipe, job.track_key))
    for run, answer in zip(ready, found):
        run.found["track"] = answer


def look_up(done, calls: list[tuple], ledger) -> list:
    """``done(*call)`` per call, answered from ``ledger`` where its state is unchanged."""
    return fill_missing(ledger.answers(), lambda i: done(*calls[i]))


# --- the lanes: each stage's limit, its task calls and its failures --------------------------

class Lanes:
    """Runs the chains: each stage's tasks within its own limit, so clip k is detected while
    clip k+1 converts, and a clip's objects are tracked while other clips detect."""

    def __init__(self, job: "Job", chain):
        self.job, self.chain = job, chain  # chain(job, lanes, run): one clip's way
        recipe = job.recipe
        clips = stage_limit(recipe, recipe.run.max_parallel_clips)
        objects = stage_limit(recipe, recipe.track.max_parallel)
        self.slots = {name: threading.Semaphore(n) if n else None for name, n in (
            ("convert", clips), ("detect", clips), ("plan", clips), ("object", objects),
            ("finish", clips))}
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
        run.record = run.found.get("convert")
        run.detected = run.found.get("detect")
        run.tracked = run.found.get("track")
        if self.watching:
            self.watching.finish("convert", run.uri)
            for stage, answer in (("detect", run.detected), ("track", run.tracked)):
                if answer is not None:
                    self.watching.finish(stage, run.uri)

    def _call(self, lane: str, task, *args):
        """``task(*args)`` as a task run within ``lane``'s limit; its result."""
        slot = self.slots[lane]
        if slot is not None:
            slot.acquire()
        try:
            progress.check_stop(lane)
            return task.submit(*args).result()
        finally:
            if slot is not None:
                slot.release()

    def _started(self, stage: str, run: "ClipRun") -> None:
        if self.watching:
            self.watching.add(stage, run.uri)

    def _ended(self, stage: str, run: "ClipRun") -> None:
        if self.watching:
            self.watching.finish(stage, run.uri)

    def convert(self, run: "ClipRun") -> dict[str, Any]:
        job = self.job
        record = run.found.get("convert")
        if record is None:
            try:
                record = self._call("convert", units.process_clip, run.source, job.uri, job.out,
                                    job.recipe, job.mode)
            except Exception as e:  # the batch goes on: the clip is reported, redone next run
                self.logger.error("%s failed: %s", run.uri, e)
                record = failed_record(run.source, e)
        self._ended("convert", run)
        return record

    def detect(self, run: "ClipRun") -> dict[str, Any] | None:
        job, record = self.job, run.record
        self._started("detect", run)
        summary = run.found.get("detect")
        if summary is None:
            try:
                summary = self._call("detect", units.detect_clip, record, job.out, job.recipe)
            except Exception as e:  # nothing was recorded, so it is redone next run
                self.logger.error("detect %s failed: %s", record["output_uri"], e)
                run.failed["detect"].append({"clip": record["output_uri"],
                                             "error": f"{type(e).__name__}: {e}"})
        self._ended("detect", run)
        return summary

    def track(self, run: "ClipRun") -> dict[str, Any] | None:
        """Plan the clip's objects, track each (its chunks in order inside, each persisted),
        then its tracks table and review; the clip's result, or None if a unit failed."""
        self._started("track", run)
        finished = run.found.get("track")
        if finished is None:
            finished = self._track(run)
        if finished is not None:
            self._ended("track", run)
        return finished

    def _track(self, run: "ClipRun") -> dict[str, Any] | None:
        job, record, uri = self.job, run.record, run.record["output_uri"]
        try:
            plan = self._call("plan", units.plan_clip, record, job.out, job.recipe,
                              job.keyframes, job.track_key)
        except Exception as e:
            return self._failed(run, f"plan {uri}", e)
        objects = plan["objects"]
        futures = self._objects(record, objects)
        broken = False
        for tid, future in zip(objects, futures):
            try:
                future.result()
            except Exception as e:  # the other objects and clips go on
                self._failed(run, f"track {uri} #{tid}", e)
                broken = True
        if broken:
            return None
        try:
            finished = self._call("finish", units.finish_clip, record, job.out, job.recipe,
                                  job.track_key, objects)
        except ReviewStorageError as e:  # its table is assembled: the machine's tracks stand
            finished = {"tracks": e.tracks, "review": None, "review_error": f"StorageError: {e}"}
        except Exception as e:
            return self._failed(run, f"assemble {uri}", e)
        if finished["review_error"]:  # reported; the clip keeps its machine tracks
            what = f"apply review {uri}"
            self.logger.error("%s failed: %s", what, finished["review_error"])
            run.failed["track"].append({"unit": what, "clip": uri,
                                        "error": finished["review_error"]})
        return finished

    def _objects(self, record: dict[str, Any], objects: list[int]) -> list:
        """One task per object, within the objects' limit shared by every clip."""
        job, slot = self.job, self.slots["object"]
        futures = []
        for tid in objects:
            progress.check_stop("track")
            if slot is not None:
                slot.acquire()  # a slot frees as soon as any running object ends
            future = units.run_object.submit(record, job.out, job.recipe, job.track_key, tid)
            if slot is not None:
                future.add_done_callback(lambda _: slot.release())
            futures.append(future)
        return futures

    def _failed(self, run: "ClipRun", what: str, e: BaseException) -> None:
        self.logger.error("%s failed: %s", what, e)
        run.failed["track"].append({"unit": what, "clip": run.record["output_uri"],
                                    "error": f"{type(e).__name__}: {e}"})
        return None


def settle_ledgers(job: "Job", runs: list["ClipRun"], items: list[dict[str, Any]]) -> None:
    """Keep every done unit's answer for the next run (`tasks.ledger.Ledger.settle`): units
    found done keep theirs, the others are looked up once more."""
    recipe = job.recipe
    ledger = convert_ledger([r.source for r in runs], job.out, recipe, job.mode)
    calls = [(r.source, job.uri, job.out, recipe, job.mode) for r in runs]
    ledger.settle([r.found.get("convert") for r in runs],
                  lambda i: reused_record_uri(*calls[i]))
    if not job.reaches("detect"):
        return
    by_uri = {r.uri: r for r in runs}
    ready = [rec for rec in items if is_converted(rec)]
    ledger = detect_ledger(ready, job.out, recipe)
    ledger.settle([by_uri[rec["source_uri"]].found.get("detect") for rec in ready],
                  lambda i: detected_before_uri(ready[i], job.out, recipe))
    if not job.reaches("track"):
        return
    ready = [rec for rec in ready if not by_uri[rec["source_uri"]].failed["detect"]]
    ledger = track_ledger(ready, job.out, recipe, job.track_key)
    ledger.settle([by_uri[rec["source_uri"]].found.get("track") for rec in ready],
                  lambda i: tracked_before_uri(ready[i], job.out, recipe, job.track_key))
