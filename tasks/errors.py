"""One error hierarchy for the whole pipeline.

Caller mistakes (bad recipe, bad URI) raise; a clip that cannot be trusted is *data*
(`Blocked` is raised inside a clip's work and turned into a row with a reason code),
so one bad clip never stops a batch.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


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


# --- raised by one stage or service, all here so a caller finds every error in one place ---


class BlockedWithProbe(Blocked):
    """`Blocked` after the header was read: carries the probe (`tasks.media.probe.StreamProbe`) and
    the partial `tasks.convert.transcode.TranscodeResult`, so the row still shows them."""

    def __init__(self, blocked: Blocked, probe: Any, result: Any):
        super().__init__(blocked.reason, blocked.detail)
        self.probe = probe
        self.result = result


class MediaReadError(PipelineError):
    """A converted WebM could not be read back as it was when converted."""


class FrameError(Blocked):
    """The decoder did not deliver the frame the timeline promises at ``index``.

    A ``Blocked`` (the clip cannot be trusted: ``reason`` is ``timestamp_mismatch`` or
    ``decode_error``), carrying ``index``, ``expected_pts`` and ``got_pts`` (None when the
    decoder produced nothing: end of stream, or no timestamp on the frame).
    """

    def __init__(self, index: int, expected_pts: int, got_pts: int | None, why: str = "",
                 reason: Reason = Reason.TIMESTAMP_MISMATCH):
        detail = f"frame {index}: expected pts {expected_pts}, got {got_pts}"
        super().__init__(reason, f"{detail} ({why})" if why else detail)
        self.index, self.expected_pts, self.got_pts, self.why = index, expected_pts, got_pts, why

    def __reduce__(self):
        # Exceptions unpickle as cls(*args); args here is the message alone (Prefect and
        # multiprocessing pickle errors), so rebuild from the fields instead.
        return type(self), (self.index, self.expected_pts, self.got_pts, self.why, self.reason)


class UnreadableTableError(PipelineError):
    """A file the pipeline wrote is not readable Parquet (truncated, garbled)."""


class EditError(PipelineError, ValueError):
    """A track breaks a keyframe rule, or an edit was refused; the message names the rule, the
    track and the frame."""


class FormatError(PipelineError, ValueError):
    """A file in one of our formats is malformed; the message names what and where."""


class NotReviewedError(FormatError):
    """A result file whose task was not reviewed: ``skipped`` True when the reviewer skipped
    it (the queue releases or fails the task, as the recipe says), False when nothing was
    submitted yet."""

    def __init__(self, message: str, skipped: bool):
        super().__init__(message)
        self.skipped = skipped


class SpanError(ConfigError):
    """A span file is unreadable or malformed; the message names the file and the row."""


class SnapshotError(ConfigError):
    """A snapshot request names an unknown or ambiguous clip, an unconverted clip or a frame
    the clip does not have; nothing is written."""


class QueueError(PipelineError):
    """A review-queue operation cannot be done (bad URL, unknown task, database failure)."""


class LeaseLost(QueueError):
    """The worker no longer holds a live lease on the task it tried to change."""



class ToolError(PipelineError):
    """A reviewer's tool (Label Studio) refused a request or could not be reached; the
    message names the request and the tool's answer, never the token."""


class OutBusyError(PipelineError):
    """Another run is writing to this OUT."""


class ReviewStorageError(StorageError):
    """The store failed while applying a clip's review, after its tracks table was assembled
    (``tracks``, its summary): retried like any store failure; when retries run out the
    clip keeps its machine tracks and the review is reported as not applied."""

    def __init__(self, message: str, tracks: dict[str, Any]):
        super().__init__(message, tracks)  # both in args, so it pickles (Dask, Ray)
        self.tracks = tracks

    def __str__(self) -> str:
        return str(self.args[0])


class Stopped(Exception):
    """The process is stopping (SIGTERM or Ctrl-C): work loops end their unit now."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that a `kill`, a container stop or a
    scheduler's timeout unwinds the same way: the lock released, temp files removed, the
    embedded Prefect server and any cluster stopped (the default action would end the
    process at once and leave the server running)."""
