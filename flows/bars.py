"""Progress bars for the CLI (rich, which Prefect already brings): one bar per stage (clips
done of clips expected) and one per clip in progress (frames). Shown on stderr only when it
is a terminal, so logs, pipes and CI output stay clean."""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from typing import Iterator

from tasks import progress


def _short(unit: str) -> str:
    parts = [p for p in unit.replace("\\", "/").split("/") if p]
    return "/".join(parts[-2:]) if parts else unit


class Bars:
    """A `progress.Watcher` drawing rich progress bars."""

    def __init__(self, console=None):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)

        self.view = Progress(TextColumn("{task.description}", style="bold"), BarColumn(),
                             MofNCompleteColumn(), TimeElapsedColumn(),
                             console=console or Console(stderr=True), transient=False)
        self.stages: dict[str, int] = {}
        self.units: dict[tuple[str, str], int] = {}
        self.lock = threading.Lock()

    def changed(self, run: progress.RunProgress, stage: str, unit: str) -> None:
        with self.lock:
            finished, expected = run.stage_counts(stage)
            if stage not in self.stages:
                self.stages[stage] = self.view.add_task(f"{stage:8} clips", total=expected)
            self.view.update(self.stages[stage], total=expected, completed=finished)
            if not unit:
                return
            done, total, over = run.unit(stage, unit)
            key = (stage, unit)
            if over:
                if key in self.units:
                    self.view.remove_task(self.units.pop(key))
                return
            if key not in self.units:
                self.units[key] = self.view.add_task(f"  {stage} {_short(unit)} frames",
                                                     total=total)
            self.view.update(self.units[key], completed=done, total=total)


@contextmanager
def bars(enabled: bool | None = None) -> Iterator[progress.RunProgress | None]:
    """Install a run progress with bars while the block runs, when stderr is a terminal
    (or ``enabled`` says so); otherwise nothing is drawn."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield None
        return
    view = Bars()
    run = progress.RunProgress(watchers=[view])
    previous = progress.install(run)
    try:
        with view.view:
            yield run
    finally:
        progress.install(previous)
