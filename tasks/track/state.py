"""Where a clip's tracking state lives (``OUT/_state/track/<key>/<clip id>/``), the
tables it holds, and the key of the tracking settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
from fractions import Fraction

import pyarrow as pa

from tasks.store.record import ClipRecord
from tasks.errors import PipelineError
from tasks.media.frames import Timeline
from tasks.store.items import clip_id_for
from tasks.recipe import Recipe
from tasks.store.storage import Location
from tasks.store.tables import read_state_table

log = logging.getLogger(__name__)


STATE_DIR = "_state/track"
TRACKS_FILE = "tracks.parquet"
# Ids of detector tracks start above this when a person's keyframes are merged in, so the
# two never collide and both stay deterministic.
_PLAN_SCHEMA = pa.schema([("track_id", pa.int32()), ("frame", pa.int64()), ("label", pa.string()),
                          ("model_label", pa.string()), ("score", pa.float32()),
                          ("x1", pa.float64()), ("y1", pa.float64()), ("x2", pa.float64()),
                          ("y2", pa.float64()), ("source", pa.string())])
_OBJECT_SCHEMA = pa.schema([("track_id", pa.int32()), ("frame", pa.int64()), ("score", pa.float32()),
                            ("x1", pa.float32()), ("y1", pa.float32()), ("x2", pa.float32()),
                            ("y2", pa.float32()), ("hidden", pa.bool_()), ("source", pa.string())])


def track_key(recipe: Recipe, keyframes_digest: str | None) -> str:
    return recipe.track_key() + (f"-{keyframes_digest[:8]}" if keyframes_digest else "")


def clip_dir(out: Location, record: ClipRecord, key: str) -> str:
    """The clip's tracking state for these settings and this WebM (its fingerprint and
    convert settings): a clip replaced under the same name is tracked afresh."""
    from tasks.detect.state import webm_identity

    webm = hashlib.blake2b(json.dumps(webm_identity(record)).encode(), digest_size=4).hexdigest()
    return out.path(STATE_DIR, clip_id_for(record.source_uri), f"{key}-{webm}")


def _load_timeline(out: Location, base: str) -> Timeline:
    table = read_state_table(out, f"{base}/timeline.parquet")
    if table is None:
        raise PipelineError(f"{base}: timeline missing or unreadable; plan the clip again")
    time_base = Fraction(table.schema.metadata[b"time_base"].decode())
    return Timeline(table["pts"].to_numpy(), time_base)


def _out(out_uri: str, recipe: Recipe) -> Location:
    from tasks.store.storage import open_location

    return open_location(out_uri, recipe.storage)
