"""The pipeline's Prefect tasks: each wraps one plain function of `tasks/` (URIs and small
summaries in, so they run the same on threads, Dask or Ray).

Retries go only to storage I/O (a `StorageError`): a bad clip is a blocked row, a bad
setting a `ConfigError`, and neither gets better by trying again.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.convert.batch import finish_batch, plan_batch
from tasks.convert.clip import process_clip_uris
from tasks.compact.stage import compact_clip_uri, compact_uri, merge_keyframes_uri
from tasks.detect.stage import detect_clip_uri, write_detections_uri
from tasks.errors import StorageError
from tasks.export.stage import export_clip_uri, finish_uri
from tasks.report.rows import clip_preview_uri
from tasks.review.handoff import enqueue_clip_reviews, enqueue_reviews
from tasks.annotations.spans import frame_labels_uri
from tasks.track.stage import finish_clip_uri, plan_clip_uri, run_object_uri, write_tracks_uri


def _storage_failure(task, task_run, state) -> bool:
    """Retry only when the store failed; config and media faults will not get better."""
    try:
        state.result()
    except StorageError:
        return True
    except Exception:
        return False
    return False


_io = dict(retries=3, retry_delay_seconds=[1, 5, 20], retry_condition_fn=_storage_failure,
           cache_policy=NO_CACHE)

# Per clip (object), in the order a clip meets them.
process_clip = task(process_clip_uris, name="clip", task_run_name="{mode} {clip.clip_name}", **_io)
detect_clip = task(detect_clip_uri, name="detect", task_run_name="detect {record.clip_name}", **_io)
plan_clip = task(plan_clip_uri, name="plan-objects", task_run_name="plan {record.clip_name}", **_io)
run_object = task(run_object_uri, name="track-object",
                  task_run_name="track {record.clip_name} #{track_id}", **_io)
# The clip's tracks table, then its reviewer's corrections (a no-op without a review).
finish_clip = task(finish_clip_uri, name="clip-tracks",
                   task_run_name="tracks table + review {record.clip_name}", **_io)
compact_clip = task(compact_clip_uri, name="compact-clip",
                    task_run_name="compact {record.clip_name}", **_io)
export_clip = task(export_clip_uri, name="export-clip",
                   task_run_name="export {record.clip_name}", **_io)
enqueue_clip_review = task(enqueue_clip_reviews, name="enqueue-clip-review",
                           task_run_name="review task {record.clip_name}", **_io)
clip_preview = task(clip_preview_uri, name="clip-previews",
                    task_run_name="previews {row[clip]}", **_io)

# Per recording (the whole listing): the listing and the merged tables and files.
list_clips = task(plan_batch, name="list-clips", **_io)
write_items = task(finish_batch, name="write-items", **_io)
write_detections = task(write_detections_uri, name="write-detections", **_io)
write_tracks = task(write_tracks_uri, name="write-tracks", **_io)
compact_tracks = task(compact_uri, name="compact-keyframes", **_io)  # a tracks table file
merge_keyframes = task(merge_keyframes_uri, name="merge-keyframes", **_io)
spans_to_frames = task(frame_labels_uri, name="spans-to-frame-labels", **_io)
finish_exports = task(finish_uri, name="export-finish", **_io)
enqueue_review = task(enqueue_reviews, name="enqueue-review", **_io)
