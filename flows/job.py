"""What one run of the DAG is asked to do (`Job`), and one clip's way through it (`ClipRun`).

Plain dataclasses without Prefect, so a check that needs no flow (a rerun with nothing to
do, `flows.unchanged`) imports them in a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from tasks import progress
from tasks.convert.listing import ClipSource
from tasks.export.stage import WHOLE_RUN_FORMATS, parse_formats
from tasks.recipe import Recipe
from tasks.store.items import is_converted
from tasks.store.record import ClipRecord

STAGES = progress.STAGES  # convert, detect, track, compact, export
Stage = Literal["convert", "detect", "track", "compact", "export"]


@dataclass(frozen=True)
class Job:
    """What one run of the DAG is asked to do."""

    uri: str
    out: str
    recipe: Recipe
    until: Stage = "export"
    mode: Literal["ingest", "convert"] = "convert"
    config: str | None = None  # the recipe file, named in review tasks
    track_key: str = ""  # the tracking settings (and human keyframes) tracks are made with
    keyframes: str | None = None  # a human keyframes file (`track --keyframes`)
    formats: list[str] | None = None  # export formats, else the recipe's
    spans: str | None = None  # a time-spans file to turn into frame labels
    max_error_px: float | None = None  # `compact`'s tolerance, else the recipe's
    min_iou: float | None = None

    def all_formats(self) -> list[str]:
        return parse_formats(self.formats or self.recipe.export.formats)

    def clip_formats(self) -> list[str]:
        """The formats a clip's chain writes: those that need only the clip."""
        return [f for f in self.all_formats() if f not in ("parquet", *WHOLE_RUN_FORMATS)]

    def reaches(self, stage: Stage) -> bool:
        """Whether the job runs ``stage`` (ingesting is the first stage in its light mode)."""
        if stage == "convert":
            return True
        return self.mode == "convert" and STAGES.index(stage) <= STAGES.index(self.until)


@dataclass
class ClipRun:
    """One clip's way through the chain: what each stage answered, and what failed."""

    source: ClipSource
    order: int  # its place in the listing: lanes serve earlier clips first
    found: dict[str, Any] = field(default_factory=dict)  # answers known before any task
    record: ClipRecord | None = None  # convert: the clip's record (its items row)
    detected: dict[str, Any] | None = None  # detect: its summary
    tracked: dict[str, Any] | None = None  # track: {"tracks", "review", "review_error"}
    compacted: dict[str, Any] | None = None  # compact: where its keyframes are kept
    exported: dict[str, Any] | None = None  # export: its files (formats that need only it)
    reviewed: dict[str, Any] | None = None  # review: its tasks in the queue
    failed: dict[str, list[dict[str, str]]] = field(
        default_factory=lambda: {stage: [] for stage in (*STAGES, "review")})

    _FIELDS = {"convert": "record", "detect": "detected", "track": "tracked",
               "compact": "compacted", "export": "exported", "review": "reviewed"}

    @property
    def uri(self) -> str:
        return self.source.source_uri

    def set(self, stage: str, answer: Any) -> None:
        setattr(self, self._FIELDS[stage], answer)

    def done(self, stage: str) -> bool:
        return getattr(self, self._FIELDS[stage]) is not None

    def needs_work(self, job: Job) -> bool:
        """Whether any stage the job reaches was not found done (a blocked clip stops)."""
        for stage in ("convert", "detect", "track", "compact", "export", "review"):
            if stage == "review":
                return job.reaches("export") and job.recipe.review.enqueue \
                    and self.found.get(stage) is None
            if not job.reaches(stage):
                return False
            if self.found.get(stage) is None:
                return True
            if stage == "convert" and not is_converted(self.found[stage]):
                return False
        return False


def whole_job(uri: str, out: str, config: str | None) -> Job:
    """Every stage (`run`), with the recipe at ``config``."""
    from tasks.recipe import load_recipe
    from tasks.track.state import track_key

    recipe = load_recipe(config)
    return Job(uri, out, recipe, config=config, track_key=track_key(recipe, None))
