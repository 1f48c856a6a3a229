"""Progress of a run, unit by unit (a stage of one clip) and frame by frame, for whoever is
watching: the CLI's progress bars and the run's Prefect progress artifact.

Work code asks for a `meter` per unit and adds frames to it; without a watcher installed in
this process (a Dask or Ray worker, a library call) that meter does nothing. The flow also
marks whole units done (`finish`), which works with any task runner, so the artifact moves
even when frames are counted in other processes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from tasks.errors import Stopped
from typing import Callable, Protocol

STAGES = ("convert", "detect", "track", "compact", "export")


class Watcher(Protocol):
    def changed(self, progress: "RunProgress", stage: str, unit: str) -> None: ...


@dataclass
class _Unit:
    total: int | None = None
    done: int = 0
    finished: bool = False

    def fraction(self) -> float:
        if self.finished:
            return 1.0
        return min(self.done / self.total, 0.99) if self.total else 0.0


@dataclass
class RunProgress:
    """Counters for one run: per stage, the units expected and each unit's frames."""

    watchers: list[Watcher] = field(default_factory=list)
    units: dict[str, dict[str, _Unit]] = field(default_factory=lambda: {s: {} for s in STAGES})
    expected: set[str] = field(default_factory=set)  # stages that said what they will do
    lock: threading.Lock = field(default_factory=threading.Lock)

    def expect(self, stage: str, units: list[str]) -> None:
        """The units ``stage`` will work on (known once the clips are listed)."""
        with self.lock:
            self.expected.add(stage)
            for unit in units:
                self.units[stage].setdefault(unit, _Unit())
        self._notify(stage, "")

    def add(self, stage: str, unit: str) -> None:
        """One more unit of ``stage``, whose full list is not known yet (a clip reaching it
        in the pipeline); `expect` says when the list is complete."""
        with self.lock:
            self.units[stage].setdefault(unit, _Unit())
        self._notify(stage, unit)

    def frames(self, stage: str, unit: str, added: int, total: int | None = None) -> None:
        with self.lock:
            entry = self.units[stage].setdefault(unit, _Unit())
            entry.done += added
            if total is not None:
                entry.total = total
        self._notify(stage, unit)

    def finish(self, stage: str, unit: str) -> None:
        with self.lock:
            self.units[stage].setdefault(unit, _Unit()).finished = True
        self._notify(stage, unit)

    def stage_counts(self, stage: str) -> tuple[int, int]:
        """(finished units, expected units) of a stage."""
        with self.lock:
            units = self.units[stage].values()
            return sum(u.finished for u in units), len(units)

    def unit(self, stage: str, unit: str) -> tuple[int, int | None, bool]:
        with self.lock:
            u = self.units[stage].get(unit) or _Unit()
            return u.done, u.total, u.finished

    def fraction(self) -> float:
        """The whole run's progress in [0, 1]: every stage weighs the same, every unit of a
        stage the same, a unit in progress by its frames. A stage that has not said what it
        will do counts as many units as the largest stage so far (none done); one that
        expects none (every clip blocked) is done."""
        with self.lock:
            known = [units for units in self.units.values() if units]
            if not known:
                return 0.0
            clips = max(len(units) for units in known)
            total = 0.0
            for stage, units in self.units.items():
                if stage in self.expected and not units:
                    total += 1.0
                    continue
                size = len(units) if stage in self.expected else max(len(units), clips)
                total += sum(u.fraction() for u in units.values()) / max(size, 1)
            return total / len(STAGES)

    def _notify(self, stage: str, unit: str) -> None:
        for watcher in list(self.watchers):
            watcher.changed(self, stage, unit)


_current: RunProgress | None = None
_current_lock = threading.Lock()


def current() -> RunProgress | None:
    return _current


def install(progress: RunProgress | None) -> RunProgress | None:
    """Make ``progress`` the one this process reports to; returns the previous one."""
    global _current
    with _current_lock:
        previous, _current = _current, progress
    return previous


_stopping = threading.Event()


def request_stop(stop: bool = True) -> None:
    """Ask every work loop of this process to stop at its next frame (on SIGTERM or Ctrl-C,
    so a clip's encode does not run on for minutes after a stop); False clears the request
    (a new run starts)."""
    if stop:
        _stopping.set()
    else:
        _stopping.clear()


def check_stop(what: str) -> None:
    """Raise `Stopped` when the run is stopping (before starting more work)."""
    if _stopping.is_set():
        raise Stopped(f"{what}: the run is stopping")


class Meter:
    """Frames of one unit, passed on at most every ``every_s`` seconds (work loops call
    `add` per frame; a lock and a watcher per frame would cost more than the frame)."""

    def __init__(self, progress: RunProgress | None, stage: str, unit: str, total: int | None,
                 every_s: float = 0.2, clock: Callable[[], float] = time.monotonic):
        self.progress, self.stage, self.unit, self.total = progress, stage, unit, total
        self.every_s, self.clock = every_s, clock
        self.pending = 0
        self.last = clock()
        if progress is not None:
            progress.frames(stage, unit, 0, total)

    def add(self, frames: int = 1) -> None:
        if _stopping.is_set():
            raise Stopped(f"{self.stage} of {self.unit} stopped: the run is stopping")
        if self.progress is None:
            return
        self.pending += frames
        now = self.clock()
        if now - self.last >= self.every_s:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        if self.progress is not None and self.pending:
            self.progress.frames(self.stage, self.unit, self.pending, self.total)
            self.pending = 0
        self.last = self.clock() if now is None else now

    def __enter__(self) -> "Meter":
        return self

    def __exit__(self, *exc) -> None:
        self.flush()


def meter(stage: str, unit: str, total: int | None) -> Meter:
    """A meter for ``unit`` of ``stage`` (frames ``total`` when known) on this process's
    progress; a no-op one when nothing watches."""
    return Meter(_current, stage, unit, total)
