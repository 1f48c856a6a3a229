"""The parity proof catches what it claims to: shifts, drops, timing and size errors."""

from __future__ import annotations

import os

import pytest

from tasks.convert.transcode import transcode
from tasks.errors import Blocked
from tasks.convert.parity import verify_webm
from tasks.recipe import parse_recipe
from tasks.convert.signature import SignatureSpill
from tests import synth


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A WebM and the spill of source signatures written while encoding it."""
    d = tmp_path_factory.mktemp("parity")
    src = synth.make_clip(d / "src.mp4", frames=24)
    spill = SignatureSpill(str(d / "src.sig"))
    with open(src, "rb") as f:
        result = transcode(f, os.path.getsize(src), parse_recipe({}).convert, "first",
                           str(d / "out.webm"), spill)
    return d, result, list(spill)


def _spill(path, records) -> SignatureSpill:
    spill = SignatureSpill(str(path))
    for pts, sig in records:
        spill.append(pts, sig)
    spill.close()
    return spill


def _verify(converted, records, **overrides):
    d, result, _ = converted
    kwargs = dict(source_time_base=result.probe.time_base,
                  source_duration_ticks=result.stats.duration_ticks(),
                  expected_width=result.geometry.width, expected_height=result.geometry.height,
                  content_tolerance=12.0)
    kwargs.update(overrides)
    return verify_webm(str(d / "out.webm"), _spill(d / "test.sig", records), **kwargs)


def _reason(converted, records, **overrides) -> str:
    with pytest.raises(Blocked) as info:
        _verify(converted, records, **overrides)
    return info.value.reason.value


def test_faithful_output_passes(converted):
    report = _verify(converted, converted[2])
    assert report.output_frames == 24 and report.misaligned_frames == 0
    assert report.timestamp_max_error_ms == 0.0
    assert report.content_worst_diff < 3


def test_one_frame_shift_is_caught(converted):
    records = converted[2]
    # Source signatures shifted by one from frame 10 on (a frame dropped, the last doubled),
    # timestamps untouched: only the content check can see it.
    shifted = records[:10] + [(pts, records[min(i + 1, 23)][1])
                              for i, (pts, _) in enumerate(records) if i >= 10]
    assert _reason(converted, shifted) == "content_misaligned"


def test_one_swapped_pair_is_caught(converted):
    records = list(converted[2])
    records[5], records[6] = (records[5][0], records[6][1]), (records[6][0], records[5][1])
    assert _reason(converted, records) == "content_misaligned"


def test_timestamp_drift_is_caught(converted):
    records = list(converted[2])
    pts, sig = records[7]
    records[7] = (pts + 20, sig)  # 20 ticks of 1/12800 s = 1.6 ms
    assert _reason(converted, records) == "timestamp_mismatch"


def test_missing_or_extra_frames_are_caught(converted):
    records = converted[2]
    assert _reason(converted, records[:-1]) == "frame_count_mismatch"
    assert _reason(converted, records + [(records[-1][0] + 512, records[-1][1])]) == "frame_count_mismatch"


def test_size_is_checked(converted):
    assert _reason(converted, converted[2], expected_width=161) == "size_mismatch"
