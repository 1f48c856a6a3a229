"""CLI progress bars: drawn on a terminal, absent otherwise."""

from __future__ import annotations

import io

from rich.console import Console

from flows.bars import Bars, bars
from tasks import progress


def test_bars_follow_stages_and_clips_in_progress():
    screen = io.StringIO()
    view = Bars(Console(file=screen, force_terminal=True, width=120))
    run = progress.RunProgress(watchers=[view])
    with view.view:
        run.expect("convert", ["s3://b/cam/1.mp4", "s3://b/cam/2.mp4"])
        run.frames("convert", "s3://b/cam/1.mp4", 40, total=100)
        (clip_bar,) = [t for t in view.view.tasks if "cam/1.mp4" in t.description]
        assert (clip_bar.completed, clip_bar.total) == (40, 100)
        run.finish("convert", "s3://b/cam/1.mp4")
        descriptions = [t.description for t in view.view.tasks]
        assert not any("cam/1.mp4" in d for d in descriptions)  # a finished clip's bar goes
        (stage,) = [t for t in view.view.tasks if t.description.startswith("convert")]
        assert (stage.completed, stage.total) == (1, 2)
    assert "convert" in screen.getvalue()


def test_no_bars_and_no_watcher_when_not_a_terminal():
    with bars(False) as run:
        assert run is None and progress.current() is None


def test_bars_install_a_run_progress_while_they_show():
    with bars(True) as run:
        assert progress.current() is run
    assert progress.current() is None
