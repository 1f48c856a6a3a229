"""The video URL a pushed Label Studio task gets (`review.label_studio.video`): a presigned
HTTPS URL for a WebM in a bucket (moto over HTTP), the export's template URL, and refusals."""

from __future__ import annotations

import time
from types import SimpleNamespace
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from tasks.errors import ConfigError
from tasks.recipe import parse_recipe
from tasks.review.ls_sync import task_video_url
from tasks.store.storage import open_location
from tests.tasks.store.test_s3 import BUCKET, s3, s3_server  # noqa: F401 (fixtures)


def test_a_bucket_webm_is_a_presigned_url_the_editor_can_load(s3):  # noqa: F811
    s3.pipe(f"{BUCKET}/out/cam/1.webm", b"the webm's bytes")
    recipe = parse_recipe({"review": {"label_studio": {"presign_seconds": 600}}})
    out = open_location(f"s3://{BUCKET}/out", recipe.storage)
    task = SimpleNamespace(payload={"video": f"s3://{BUCKET}/out/cam/1.webm"})
    url = task_video_url(task, f"s3://{BUCKET}/out/cam/1.webm", out, recipe, None, 0, {})
    assert url.startswith("http") and "Signature=" in url
    expires = int(parse_qs(urlparse(url).query)["Expires"][0])
    assert abs(expires - (time.time() + 600)) < 120  # review.label_studio.presign_seconds
    assert httpx.get(url).content == b"the webm's bytes"  # no credentials: the URL carries them


def test_the_template_url_of_the_export_is_kept(s3):  # noqa: F811
    recipe = parse_recipe({"export": {"video_url": "https://cdn.example/{relpath}"}})
    out = open_location(f"s3://{BUCKET}/out", recipe.storage)
    task = SimpleNamespace(payload={"video": f"s3://{BUCKET}/out/cam/1.webm"})
    exported = "https://cdn.example/cam/1.webm"
    assert task_video_url(task, exported, out, recipe, None, 0, {}) == exported
    needs = parse_recipe({"review": {"label_studio": {"video": "template"}}})
    with pytest.raises(ConfigError, match="needs export.video_url"):
        task_video_url(task, exported, out, needs, None, 0, {})
