"""One pipeline run that several test files read: the street sample (bikes) through every
stage with the people detector every 3rd frame, KCF between, and a spans file."""

from __future__ import annotations

import contextlib
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from flows.cli import EXIT_OK, main


@dataclass(frozen=True)
class StreetRun:
    data: Path  # the dataset (street/1.mp4)
    out: Path
    config: Path
    spans: Path
    printed: str  # what `preannotate export` printed


@pytest.fixture(scope="session")
def street_run(prefect_harness, samples, tmp_path_factory) -> StreetRun:
    root = tmp_path_factory.mktemp("street")
    (root / "data" / "street").mkdir(parents=True)
    shutil.copy(samples["bikes"], root / "data" / "street" / "1.mp4")
    config = root / "people.yaml"
    # The detector on every 3rd frame keeps the run short; the tracker carries the frames
    # between.
    config.write_text("detect: {every_nth: 3, max_side: 640}\n"
                      "labels: {map: {person: person}}\n"
                      "associate: {min_hits: 2, max_age: 9}\n"
                      "track: {tracker: kcf, carry_frames: 6, max_parallel: 4}\n"
                      "compact: {max_error_px: 1.5}\n")
    spans = root / "spans.csv"
    spans.write_text("recording,start_s,end_s,label\nstreet,0.5,1.25,cycling\n")
    out = root / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["export", str(root / "data"), "--out", str(out), "--config", str(config),
                     "--spans", str(spans)])
    assert code == EXIT_OK, printed.getvalue()
    return StreetRun(root / "data", out, config, spans, printed.getvalue())
