"""The video URL template (`export.video_url`): placeholders filled and quoted, bad templates
refused with the recipe's error, and Label Studio tasks carrying the URL."""

from __future__ import annotations

import pytest

from tasks.errors import ConfigError
from tasks.export.video_url import video_url
from tasks.recipe import parse_recipe
from tasks.store.record import ClipRecord
from tasks.store.storage import open_location


def test_placeholders_are_filled_and_quoted(tmp_path):
    out = open_location(str(tmp_path / "out"))
    record = ClipRecord(output_uri=str(tmp_path / "out" / "site 1" / "cam#2.webm"))
    assert video_url("/data/local-files/?d={relpath}", out, record) == \
        "/data/local-files/?d=site%201/cam%232.webm"
    assert video_url("https://files.example/{name}", out, record) == \
        "https://files.example/cam%232.webm"
    path = video_url("/data/local-files/?d={path}", out, record)
    assert path == "/data/local-files/?d=" + str(tmp_path / "out").lstrip("/").replace(" ", "%20") \
        + "/site%201/cam%232.webm"
    assert video_url(None, out, record) is None
    assert video_url("{relpath}", out, ClipRecord()) is None  # a clip with no WebM


def test_a_bucket_uri_keeps_its_scheme():
    out = open_location("s3://bucket/out")  # no request is made
    record = ClipRecord(output_uri="s3://bucket/out/rec/0.webm")
    assert video_url("{uri}", out, record) == "s3://bucket/out/rec/0.webm"
    assert video_url("https://cdn.example/{relpath}", out, record) == "https://cdn.example/rec/0.webm"


@pytest.mark.parametrize("template, message", [
    ("https://x/{file}", r"placeholders \['file'\]"),
    ("https://x/static.webm", "placeholders none"),
    ("https://x/{relpath", "not a URL template"),
])
def test_bad_templates_are_refused(template, message):
    with pytest.raises(ConfigError, match=message):
        parse_recipe({"export": {"video_url": template}})
