"""Recipes: YAML files parsed into frozen, validated config before any work starts.

Validation uses pydantic (strict types, unknown keys forbidden). Every problem is reported
in one `ConfigError` naming the file, the key path and what is allowed, e.g.
``configs/x.yaml: convert.crf: must be at most 63 (got 99)``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError,
                      ValidationInfo, field_validator, model_validator)

from configs import recipe_path
from tasks.errors import ConfigError
from tasks.safe_yaml import load_yaml


MAX_RECIPE_BYTES = 1 << 20  # recipes are hand-written; a bigger file is a mistake or an attack
MAX_LABEL_MAP = 20_000  # far beyond any model's classes (LVIS has 1,203)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class StorageConfig(_Section):
    """Object-store access. Anything left empty comes from the environment
    (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ...)."""

    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, Ceph, ...)")
    region: str | None = None
    key: SecretStr | None = Field(None, description="access key id; prefer the environment")
    secret: SecretStr | None = Field(None, description="secret access key; prefer the environment")
    anon: bool = False


class IngestConfig(_Section):
    # strict=False here only so a YAML list becomes the (immutable) tuple.
    extensions: tuple[str, ...] = Field(strict=False, default=(
        ".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
    ), min_length=1)
    recording_by: Literal["folder", "file"] = Field(
        "folder", description="folder: a folder of clips is one recording; file: each file is one"
    )
    multiple_video_streams: Literal["first", "block"] = Field(
        "first", description="first: convert the default (else first) video stream; block: refuse"
    )


class ConvertConfig(_Section):
    codec: Literal["vp9", "vp8"] = "vp9"
    crf: int = Field(32, ge=4, le=63, description="constant quality (lower is better)")
    bitrate_kbps: int | None = Field(None, ge=50, le=200_000, description="target/cap bitrate")
    max_height: int | None = Field(None, ge=16, le=8192, description="downscale taller video")
    speed: int = Field(8, ge=0, le=8, description="libvpx cpu-used: higher is faster")
    deadline: Literal["realtime", "good", "best"] = "realtime"
    threads: int = Field(2, ge=1, le=64, description="encoder threads per clip")
    audio: bool = True
    audio_bitrate_kbps: int = Field(96, ge=6, le=510)


class ParityConfig(_Section):
    content_mean_tolerance: float = Field(
        12.0, gt=0, le=255, description="largest mean luma difference (0-255) of a frame's 16x16 "
        "thumbnail against its source before the clip is blocked"
    )


# A running cluster's address, per runner (checked before anything starts).
_HOST_PORT = r"[A-Za-z0-9._-]+:\d{1,5}|\[[0-9A-Fa-f:.]+\]:\d{1,5}"
_ADDRESS = {"dask": rf"((tcp|tls)://)?({_HOST_PORT})", "ray": rf"auto|(ray://)?({_HOST_PORT})"}
_ADDRESS_HINT = {"dask": "tcp://host:port or tls://host:port",
                 "ray": "ray://host:port, host:port or auto"}


class RunConfig(_Section):
    """How tasks run: threads in this process, or worker processes of a Dask or Ray cluster
    (see flows/runtime/)."""

    max_parallel_clips: int = Field(2, ge=1, le=256, description="clips at once (threads)")
    task_runner: Literal["thread", "dask", "ray"] = Field(
        "thread", description="thread: a thread pool here; dask / ray: worker processes of a "
        "local cluster (or the one at `address`)")
    workers: int = Field(2, ge=1, le=1024, description="dask / ray: worker processes of the "
                         "local cluster")
    threads_per_worker: int = Field(1, ge=1, le=256, description="dask: tasks each worker "
                                    "process runs at once")
    address: str | None = Field(None, min_length=1, description="a running cluster to use "
                                "instead of a local one: Dask tcp://host:port, Ray "
                                "ray://host:port, host:port or auto")

    @field_validator("threads_per_worker")
    @classmethod
    def _threads_need_dask(cls, value: int, info: ValidationInfo) -> int:
        if value != 1 and info.data.get("task_runner") == "ray":
            raise ValueError("only task_runner dask runs several tasks per worker process "
                             "(Ray: set workers)")
        return value

    @field_validator("address")
    @classmethod
    def _address_fits_runner(cls, value: str | None, info: ValidationInfo) -> str | None:
        runner = info.data.get("task_runner")
        if value is None or runner is None:  # runner None: its own error is reported
            return value
        if runner == "thread":
            raise ValueError("needs task_runner dask or ray")
        if not re.fullmatch(_ADDRESS[runner], value):
            raise ValueError(f"not a {runner} address ({_ADDRESS_HINT[runner]})")
        return value


class DetectConfig(_Section):
    backend: str = Field("nanodet", min_length=1, description="a module under models/detectors/")
    # Passed to the backend's create(); each backend documents its own (strict=False: YAML).
    options: dict[str, Any] = Field(default_factory=dict, strict=False)
    batch_size: int = Field(8, ge=1, le=1024, description="frames per model call")
    every_nth: int = Field(1, ge=1, le=10_000, description="run the model on every Nth frame")
    max_side: int | None = Field(None, ge=16, le=8192, description="shrink frames so the longer "
                                 "side is at most this before the model; boxes map back")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="for backends that take one (nanodet, onnx, torchvision): auto = "
        "cuda if present")
    min_score: float = Field(0.0, ge=0, le=1, description="drop detections scoring lower")


class ShotsConfig(_Section):
    """Shot cuts, found while detecting (PySceneDetect's detectors on the decoded frames)."""

    detector: Literal["adaptive", "content"] | None = Field(
        "adaptive", description="adaptive: content change against its neighbours (robust to "
        "camera motion); content: a fixed threshold; null: no cut detection")
    threshold: float | None = Field(None, gt=0, le=255, description="the detector's threshold "
                                    "(null: its default, adaptive 3.0, content 27.0)")
    min_frames: int = Field(15, ge=1, le=100_000, description="shortest shot, frames")


class LabelsConfig(_Section):
    file: str | None = Field(None, description="labels file (tree or list of paths such as "
                             "'Task 1/Sub Task 1.2'); relative to the recipe")
    map: dict[str, str] = Field(default_factory=dict, strict=False, max_length=MAX_LABEL_MAP,
                                description="model label -> dataset label; unmapped labels are "
                                "dropped; empty keeps all")


class AssociateConfig(_Section):
    """Kalman-filter linking of per-frame detections into tracks (ByteTrack's two score
    stages, OC-SORT's observation-centric momentum, recovery and re-update, BoT-SORT's box
    state and camera-motion compensation): see tasks/track/associate.py."""

    high_score: float = Field(0.5, ge=0, le=1, description="detections that start and match tracks")
    low_score: float = Field(0.1, ge=0, le=1, description="weaker detections only extend tracks")
    match_iou: float = Field(0.2, gt=0, le=1, description="least IoU with a track's predicted box")
    low_match_iou: float = Field(0.5, gt=0, le=1, description="least IoU for a weak detection "
                                 "to extend a track")
    max_age: int = Field(30, ge=1, description="frames a track may go unseen before it ends")
    min_hits: int = Field(3, ge=1, description="matches before a new track is kept")
    class_aware: bool = True
    direction_weight: float = Field(0.2, ge=0, le=10, description="weight of direction "
                                    "consistency (OC-SORT momentum) against IoU; 0: IoU only")
    delta_t: int = Field(3, ge=1, le=100, description="detector frames back the direction of "
                         "motion is measured from")
    merged_ioa: float | None = Field(0.7, gt=0, le=1, description="a detection holding this "
                                     "much of two or more tracks' boxes is several objects "
                                     "merged: it updates none (null: off)")
    camera_motion: bool = Field(False, description="measure the camera's motion while "
                                "detecting and move tracks with it (moving cameras)")
    smooth: bool = Field(True, description="smooth each track's detector boxes from both "
                         "sides (Kalman RTS) before they become keyframes: less jitter, "
                         "fewer keyframes; false keeps the raw boxes")


class TrackConfig(_Section):
    tracker: str | None = Field("csrt", description="a module under models/trackers/, or null: "
                                "tracks are the associated detections, interpolated")
    options: dict[str, Any] = Field(default_factory=dict, strict=False)
    frames_per_execution: int = Field(10, ge=1, le=100_000, description="frames per tracker run")
    lost_score: float = Field(0.3, ge=0, le=1, description="below this the object is lost")
    carry_frames: int = Field(30, ge=0, description="frames the tracker may carry an object past "
                              "its last keyframe before the track ends")
    max_gap: int = Field(60, ge=0, description="without a tracker: longest gap between keyframes "
                         "that is interpolated; longer gaps are hidden")
    max_side: int | None = Field(None, ge=16, le=8192, description="shrink frames for the tracker")
    from_detections: bool = Field(True, description="track the associated detector tracks")
    max_parallel: int = Field(4, ge=1, le=256, description="object runs at once")


class CompactConfig(_Section):
    max_error_px: float | None = Field(1.0, ge=0, description="largest error of any box edge "
                                       "interpolation may make (pixels)")
    min_iou: float | None = Field(None, gt=0, le=1, description="or: least IoU of every "
                                  "interpolated box with the tracked one")

    @model_validator(mode="before")
    @classmethod
    def _iou_replaces_default(cls, data):
        if isinstance(data, dict) and data.get("min_iou") is not None and "max_error_px" not in data:
            data = {**data, "max_error_px": None}
        return data

    @model_validator(mode="after")
    def _one_tolerance(self):
        if (self.max_error_px is None) == (self.min_iou is None):
            raise ValueError("set exactly one of max_error_px and min_iou (the other null)")
        return self


EXPORT_FORMATS = ("parquet", "json", "cvat", "labelstudio", "dataloop", "mot")


class ExportConfig(_Section):
    formats: list[Literal[EXPORT_FORMATS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(EXPORT_FORMATS), description="formats `export` writes")
    spans: str | None = Field(None, description="time spans file (CSV, Parquet or JSON: "
                              "recording, start_s, end_s, label) turned into per-frame labels")
    video_url: str | None = Field(None, description="the URL reviewers' tools load a WebM "
                                  "from, as a template: {relpath} (under OUT), {path}, {uri}, "
                                  "{name}; e.g. /data/local-files/?d={relpath} for Label "
                                  "Studio's local files; null: the WebM's own path or URL")

    @field_validator("video_url")
    @classmethod
    def _known_placeholders(cls, value: str | None) -> str | None:
        if value is None:
            return value
        import string

        try:
            names = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
        except ValueError as e:
            raise ValueError(f"not a URL template: {e}") from None
        unknown = sorted(set(names) - {"relpath", "path", "uri", "name"})
        if unknown or not names:
            raise ValueError(f"placeholders {unknown or 'none'}: use {{relpath}}, {{path}}, "
                             "{uri} or {name}")
        return value


class ResultLimits(_Section):
    """What one review result may hold: a reviewer's file is outside input, read whole and
    stored in the queue, so its size is bounded before it is read."""

    max_bytes: int = Field(64 << 20, ge=1024, le=1 << 31, description="largest result file, "
                           "bytes (keyframes of a 10-minute clip with 100 tracks are ~10 MB)")
    max_tracks: int = Field(10_000, ge=1, le=10_000_000, description="most tracks in a result")
    max_boxes: int = Field(5_000_000, ge=1, le=1_000_000_000, description="most keyframe "
                           "boxes in a result")
    max_depth: int = Field(64, ge=8, le=500, description="deepest nesting of JSON objects "
                           "and lists (tools' files need about 10)")


class PriorityWeights(_Section):
    """A review task's priority: a weighted sum of its clip's (or track's) measures; higher
    is reviewed first. Each weight multiplies one measure."""

    low_confidence: float = Field(10.0, description="x (1 - mean score of the visible "
                                  "machine boxes)")
    lost_tracks: float = Field(1.0, description="x tracks that were lost (hidden) at least once")
    hidden_s: float = Field(0.5, description="x the longest hidden range (seconds)")
    tracks: float = Field(0.0, description="x tracks")
    no_boxes: float = Field(20.0, description="added when the clip has no visible machine box: "
                            "all its work is the reviewer's (or it is truly empty)")
    breaks: float = Field(0.5, description="x breaks per minute: places where a track starts, "
                          "ends or is lost inside a shot (fragmented tracks)")
    base: float = Field(0.0, description="added to every task")


class LabelStudioConfig(_Section):
    """`preannotate review push`/`pull`: the queue's tasks in a Label Studio project."""

    url: str | None = Field(None, description="the server, e.g. http://localhost:8080; the "
                            "LABEL_STUDIO_URL environment variable wins")
    token: SecretStr | None = Field(None, description="API token (legacy token or personal "
                                    "access token); the LABEL_STUDIO_API_KEY environment "
                                    "variable wins; never logged")
    project: str | None = Field(None, description="project title (made if missing); null: "
                                "'preannotate <OUT folder name>'")
    video: Literal["auto", "upload", "template", "presigned"] = Field(
        "auto", description="how the editor gets a WebM: upload it to the project, "
        "export.video_url's template, or a presigned HTTPS URL (buckets); auto: the template "
        "when set, presigned for a bucket, else upload (works with no set-up)")
    presign_seconds: int = Field(7 * 86400, ge=60, le=7 * 86400, description="life of a "
                                 "presigned URL (S3 allows at most 7 days)")
    worker: str = Field("label-studio", min_length=1, description="the queue worker name the "
                        "pushed tasks are leased to")
    lease_seconds: float = Field(7 * 86400, gt=0, le=7 * 86400, description="lease of a "
                                 "pushed task; every push and pull renews the open ones")
    batch: int = Field(100, ge=1, le=10_000, description="most tasks one push leases")
    timeline_project: str | None = Field(None, description="project of the whole-recording "
                                         "time-span tasks (`review push --timeline`); null: the "
                                         "project's title + ' timeline'")


class ReviewVideoConfig(_Section):
    """Each recording's review video (`tasks.annotations.review_video`): its clips joined in
    order for labelling time spans over the whole recording."""

    max_part_bytes: int = Field(200 << 20, ge=1 << 12, le=1 << 40, description="largest part, "
                                "bytes; a longer recording is split at a keyframe into parts "
                                "(Label Studio refuses uploads over 250 MB by default)")


class ReviewConfig(_Section):
    enqueue: bool = Field(True, description="export enqueues one review task per unit")
    db: str | None = Field(None, description="queue URL: sqlite:///path or postgresql://...; "
                           "null: sqlite:///OUT/review.db")
    unit: Literal["clip", "track"] = Field("clip", description="one review task per clip, or "
                                           "per track")
    max_attempts: int = Field(3, ge=1, le=1000, description="failures (or expired leases) "
                              "before a task is dead-lettered")
    lease_seconds: float = Field(1800.0, gt=0, le=7 * 86400, description="lease length "
                                 "reviewers get by default")
    on_skipped: Literal["release", "fail"] = Field(
        "release", description="a result whose task the reviewer skipped (Label Studio's Skip): "
        "release the queue task for another reviewer, or fail it with the reason (counted "
        "against max_attempts)")
    formats: list[Literal["json", "cvat", "labelstudio", "dataloop"]] = Field(  # type: ignore
        default_factory=lambda: ["json", "cvat", "labelstudio", "dataloop"],
        description="import-ready files a task's payload points to (those exported)")
    priority: PriorityWeights = PriorityWeights()
    limits: ResultLimits = ResultLimits()
    label_studio: LabelStudioConfig = LabelStudioConfig()
    recording_video: ReviewVideoConfig = ReviewVideoConfig()


class Recipe(_Section):
    version: Literal[1] = 1
    storage: StorageConfig = StorageConfig()
    ingest: IngestConfig = IngestConfig()
    convert: ConvertConfig = ConvertConfig()
    parity: ParityConfig = ParityConfig()
    run: RunConfig = RunConfig()
    detect: DetectConfig = DetectConfig()
    shots: ShotsConfig = ShotsConfig()
    labels: LabelsConfig = LabelsConfig()
    associate: AssociateConfig = AssociateConfig()
    track: TrackConfig = TrackConfig()
    compact: CompactConfig = CompactConfig()
    export: ExportConfig = ExportConfig()
    review: ReviewConfig = ReviewConfig()
    _source: str = PrivateAttr("<recipe>")  # the file it came from, for messages

    @property
    def source(self) -> str:
        return self._source

    def convert_key(self) -> str:
        """Hash of every setting that changes a converted WebM or its verdict."""
        blob = json.dumps(
            {"convert": self.convert.model_dump(), "parity": self.parity.model_dump(),
             "multi": self.ingest.multiple_video_streams, "converter": CONVERTER_VERSION},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


    def detect_key(self) -> str:
        """Hash of every setting that changes a clip's detections."""
        # The files a backend reads are part of its settings: a new model at the same path
        # redoes the clips (digests are cached per file size and mtime).
        files = {key: _file_digest(value) for key, value in sorted(self.detect.options.items())
                 if key in _FILE_OPTIONS and isinstance(value, str)}
        return _digest({"detect": self.detect.model_dump(), "labels": self.labels.model_dump(),
                        "labels_file": _file_digest(self.labels.file), "files": files,
                        "shots": self.shots.model_dump(),
                        "camera_motion": self.associate.camera_motion,
                        "version": DETECTOR_VERSION})

    def track_key(self) -> str:
        """Hash of every setting that changes a clip's tracks (detections included)."""
        return _digest({"detect": self.detect_key(), "associate": self.associate.model_dump(),
                        "track": {k: v for k, v in self.track.model_dump().items()
                                  if k != "max_parallel"}, "version": TRACKER_VERSION})

    def label_mapper(self):
        from tasks.labels import LabelMapper, load_label_tree

        tree = load_label_tree(self.labels.file) if self.labels.file else None
        return LabelMapper(self.labels.map, tree)


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


_FILE_OPTIONS = ("model_path", "checkpoint", "labels")
_DIGESTS: dict[tuple[str, int, int], str] = {}


def _file_digest(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        stat = Path(path).stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in _DIGESTS:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            _DIGESTS[key] = h.hexdigest()[:16]
        return _DIGESTS[key]
    except OSError:
        return None


# Bump when detection or tracking output for the same settings changes.
DETECTOR_VERSION = 3
TRACKER_VERSION = 2

# Bump when the converter's output for the same settings changes, so old outputs are redone.
CONVERTER_VERSION = 1


def load_recipe(path: str | Path | None = None) -> Recipe:
    """Load and validate a recipe; ``None`` loads the bundled ``configs/default.yaml``."""
    source = Path(path) if path is not None else recipe_path("default")
    try:
        size = source.stat().st_size
        if size > MAX_RECIPE_BYTES:
            raise ConfigError(f"{source}: a recipe of {size:,} bytes; at most "
                              f"{MAX_RECIPE_BYTES:,} are read (recipes are settings, not data: "
                              "put long label lists in labels.file)")
        text = source.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{source}: cannot read recipe ({e.strerror or e})") from e
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ConfigError(f"{source}: not valid YAML{at}: {getattr(e, 'problem', e)}") from e
    data = data if data is not None else {}
    _resolve_relative(data, source.parent)
    recipe = parse_recipe(data, source=str(source))
    try:
        recipe.label_mapper()  # a bad labels file or mapping fails now, not mid-batch
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return recipe


def _resolve_relative(data: Any, base: Path) -> None:
    """Paths in a recipe are relative to the recipe file, wherever the command runs."""
    if not isinstance(data, dict):
        return
    for section, key in (("labels", "file"), ("export", "spans")):
        block = data.get(section)
        if isinstance(block, dict) and isinstance(block.get(key), str) and "://" not in block[key]:
            block[key] = str((base / block[key]).resolve())
    review = data.get("review")
    if isinstance(review, dict) and isinstance(review.get("db"), str) \
            and review["db"].startswith("sqlite:///") and not review["db"].startswith("sqlite:////"):
        # sqlite:///relative/queue.db: relative to the recipe, like a labels file
        review["db"] = "sqlite:///" + str((base / review["db"][len("sqlite:///"):]).resolve())
    for section in ("detect", "track"):
        options = (data.get(section) or {}).get("options") if isinstance(data.get(section), dict) \
            else None
        if isinstance(options, dict):
            for key in ("model_path", "checkpoint", "labels"):
                value = options.get(key)
                if isinstance(value, str) and "://" not in value and (
                        key != "labels" or value.endswith((".txt", ".yaml", ".yml", ".json"))):
                    options[key] = str((base / value).resolve())


def parse_recipe(data: Any, source: str = "<recipe>") -> Recipe:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a recipe is a mapping of sections, got {type(data).__name__}")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        lines = [_describe(err) for err in e.errors()]
        raise ConfigError(f"{source}: invalid recipe:\n  " + "\n  ".join(lines)) from None
    recipe._source = source
    return recipe


def _describe(err: dict) -> str:
    loc = [str(part) for part in err["loc"]]
    key = ".".join(loc) or "(top level)"
    kind = err["type"]
    if loc and loc[0] == "storage" and loc[-1] in ("key", "secret"):
        err = {**err, "input": "***"}  # never echo a credential back
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        return f"{key}: unknown key; allowed here: {', '.join(allowed)}"
    ctx = err.get("ctx") or {}
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        bound = next(iter(ctx.values()))
        word = {"greater_than_equal": "at least", "less_than_equal": "at most",
                "greater_than": "more than", "less_than": "less than"}[kind]
        return f"{key}: must be {word} {bound} (got {err['input']!r})"
    got = err.get("input")
    return f"{key}: {err['msg']} (got {'***' if got == '***' else _short(got)})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _allowed_keys(loc: list[str]) -> list[str]:
    model: type[BaseModel] = Recipe
    for part in loc:
        field = model.model_fields.get(part)
        if field is None or not isinstance(field.annotation, type) or not issubclass(
            field.annotation, BaseModel
        ):
            return []
        model = field.annotation
    return sorted(model.model_fields)
