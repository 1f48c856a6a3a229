"""What a run shows in the Prefect UI while it works: a progress artifact that moves during
one long clip too, and the artifact key of a clip's previews."""

from __future__ import annotations

import contextvars
import hashlib
import re
import threading
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from tasks import progress


class ProgressArtifact:
    """Pushes the run's progress to its Prefect progress artifact every ``every_s`` seconds
    while it changes (from a thread, so it moves during one long clip too)."""

    def __init__(self, watching: progress.RunProgress, every_s: float = 2.0):
        self.watching, self.every_s = watching, every_s
        self.id = create_progress_artifact(0.0, description="share of the run's units done "
                                           "(convert, detect, track, compact, export per clip)")
        self.stop = threading.Event()
        self.sent = 0.0
        self.thread = threading.Thread(target=contextvars.copy_context().run,
                                       args=(self._loop,), daemon=True, name="progress-artifact")
        self.thread.start()

    def _push(self, value: float) -> None:
        if abs(value - self.sent) >= 0.1:
            try:
                update_progress_artifact(self.id, value)
                self.sent = value
            except Exception:  # progress is for watching; never fail a run over it
                pass

    def _loop(self) -> None:
        while not self.stop.wait(self.every_s):
            self._push(round(100 * self.watching.fraction(), 1))

    def close(self, value: float = 100.0) -> None:
        self.stop.set()
        self.thread.join()
        self._push(value)


def artifact_key(row: dict[str, Any]) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", row["clip"].lower()).strip("-")[:40]
    return f"clip-{slug}-{hashlib.blake2b(row['clip'].encode(), digest_size=3).hexdigest()}"
