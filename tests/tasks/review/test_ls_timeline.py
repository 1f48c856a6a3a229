"""`review push --timeline` refuses an OUT without a TimelineLabels config before it calls
the server (the end-to-end loop against a real server is in tests/flows/test_label_studio.py)."""

from __future__ import annotations

import pytest

from tasks.errors import ConfigError
from tasks.recipe import parse_recipe
from tasks.review import ls_timeline


def test_an_out_without_timeline_config_is_refused_naming_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="set labels.file"):
        ls_timeline.push(parse_recipe({}), str(tmp_path), client=None)


def test_the_timeline_project_is_named_after_the_clip_project(tmp_path):
    from tasks.store.storage import open_location

    out = open_location(str(tmp_path / "surgery"))
    assert ls_timeline.timeline_title(parse_recipe({}), out) == "preannotate surgery timeline"
    named = parse_recipe({"review": {"label_studio": {"timeline_project": "activities"}}})
    assert ls_timeline.timeline_title(named, out) == "activities"
