"""One error hierarchy for the whole pipeline.

Caller mistakes (bad recipe, bad URI) raise; a clip that cannot be trusted is *data*
(`Blocked` is raised inside a clip's work and turned into a row with a reason code),
so one bad clip never stops a batch.
"""

from __future__ import annotations

from enum import StrEnum


class PipelineError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(PipelineError):
    """A recipe or argument is invalid; raised before any work starts."""


class InputNotFoundError(ConfigError):
    """The dataset URI names nothing: a bad argument, not a storage fault worth a retry."""


class StorageError(PipelineError):
    """Reading or writing the object store failed (the only kind of error worth a retry)."""


class BadBackendError(PipelineError):
    """A model backend broke its contract."""


class Reason(StrEnum):
    """Machine-readable codes for a blocked clip (the `reason` column)."""

    EMPTY_FILE = "empty_file"
    UNREADABLE = "unreadable"
    NO_VIDEO_STREAM = "no_video_stream"
    MULTIPLE_VIDEO_STREAMS = "multiple_video_streams"
    TRUNCATED = "truncated"
    DECODE_ERROR = "decode_error"
    NO_FRAMES = "no_frames"
    BAD_TIMESTAMPS = "bad_timestamps"
    ENCODE_ERROR = "encode_error"
    FRAME_COUNT_MISMATCH = "frame_count_mismatch"
    TIMESTAMP_MISMATCH = "timestamp_mismatch"
    RATE_MISMATCH = "rate_mismatch"
    DURATION_MISMATCH = "duration_mismatch"
    SIZE_MISMATCH = "size_mismatch"
    CONTENT_MISALIGNED = "content_misaligned"


class Blocked(PipelineError):
    """A clip cannot be accepted; carries a reason code and a sentence for people."""

    def __init__(self, reason: Reason, detail: str):
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
