"""Recipes: YAML files parsed into frozen, validated config before any work starts.

Validation uses pydantic (strict types, unknown keys forbidden). Every problem is reported
in one `ConfigError` naming the file, the key path and what is allowed, e.g.
``configs/x.yaml: convert.crf: must be at most 63 (got 99)``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from configs import recipe_path
from tasks.errors import ConfigError


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


class RunConfig(_Section):
    max_parallel_clips: int = Field(2, ge=1, le=256)


class Recipe(_Section):
    version: Literal[1] = 1
    storage: StorageConfig = StorageConfig()
    ingest: IngestConfig = IngestConfig()
    convert: ConvertConfig = ConvertConfig()
    parity: ParityConfig = ParityConfig()
    run: RunConfig = RunConfig()

    def convert_key(self) -> str:
        """Hash of every setting that changes a converted WebM or its verdict."""
        blob = json.dumps(
            {"convert": self.convert.model_dump(), "parity": self.parity.model_dump(),
             "multi": self.ingest.multiple_video_streams, "converter": CONVERTER_VERSION},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Bump when the converter's output for the same settings changes, so old outputs are redone.
CONVERTER_VERSION = 1


def load_recipe(path: str | Path | None = None) -> Recipe:
    """Load and validate a recipe; ``None`` loads the bundled ``configs/default.yaml``."""
    source = Path(path) if path is not None else recipe_path("default")
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{source}: cannot read recipe ({e.strerror or e})") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ConfigError(f"{source}: not valid YAML{at}: {getattr(e, 'problem', e)}") from e
    return parse_recipe(data if data is not None else {}, source=str(source))


def parse_recipe(data: Any, source: str = "<recipe>") -> Recipe:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a recipe is a mapping of sections, got {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        lines = [_describe(err) for err in e.errors()]
        raise ConfigError(f"{source}: invalid recipe:\n  " + "\n  ".join(lines)) from None


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
