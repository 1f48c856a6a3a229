"""S3 over HTTP against a local moto server: ingest, convert, rerun, hostile keys, secrets."""

from __future__ import annotations

import json
import logging

import pyarrow.parquet as pq
import pytest

from tasks.convert.batch import run_batch
from tasks.recipe import parse_recipe

SECRET = "moto-secret-Zq81vX0pLk"
BUCKET = "videos"


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    import s3fs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "moto-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    fs = s3fs.S3FileSystem(endpoint_url=s3_server, client_kwargs={"region_name": "us-west-2"},
                           skip_instance_cache=True)
    if fs.exists(BUCKET):
        fs.rm(BUCKET, recursive=True)
    fs.mkdir(BUCKET, region_name="us-west-2")
    return fs


def test_s3_ingest_convert_rerun(s3, samples, caplog):
    caplog.set_level(logging.INFO)
    s3.put(str(samples["carphone_pristine"]), f"{BUCKET}/data/cam/2.mp4")
    s3.put(str(samples["carphone_distorted"]), f"{BUCKET}/data/cam/10.mp4")
    s3.pipe(f"{BUCKET}/data/cam/3.mp4", b"not a video")
    src, out = f"s3://{BUCKET}/data", f"s3://{BUCKET}/out"
    recipe = parse_recipe({})

    assert run_batch(src, out, recipe, "ingest").counts == {"ingested": 2, "blocked": 1}
    summary = run_batch(src, out, recipe, "convert")
    assert summary.counts == {"converted": 2, "blocked": 1}
    assert summary.items_uri == f"s3://{BUCKET}/out/items.parquet"
    with s3.open(f"{BUCKET}/out/items.parquet", "rb") as f:
        table = pq.read_table(f).to_pylist()
    assert [(r["clip_name"], r["status"]) for r in table] == [
        ("2.mp4", "converted"), ("3.mp4", "blocked"), ("10.mp4", "converted")]
    assert table[2]["output_uri"] == f"s3://{BUCKET}/out/cam/10.webm"
    assert table[2]["global_first_frame"] == 120
    assert s3.size(f"{BUCKET}/out/cam/10.webm") == table[2]["output_bytes"]

    assert run_batch(src, out, recipe, "convert").counts == {"skipped": 2, "blocked": 1}

    # nothing we wrote or logged holds the credentials
    assert "3.mp4: blocked" in caplog.text
    assert SECRET not in caplog.text
    for key in s3.find(f"{BUCKET}/out"):
        assert SECRET.encode() not in s3.cat_file(key)


def test_s3_hostile_keys_never_escape_out(s3, samples):
    clip = samples["carphone_distorted"].read_bytes()
    keys = ["data/cam/../../escape.mp4", "data//abs/clip.mp4", "data/cam/we ird%20名前?.mp4"]
    for key in keys:
        s3.pipe(f"{BUCKET}/{key}", clip)
    summary = run_batch(f"s3://{BUCKET}/data", f"s3://{BUCKET}/out", parse_recipe({}), "convert")
    assert summary.total == len(keys)
    written = s3.find(BUCKET)
    outside = [k for k in written if not k.startswith((f"{BUCKET}/data/", f"{BUCKET}/out/"))]
    assert outside == []
    for key in written:
        if key.startswith(f"{BUCKET}/out/"):
            assert "/../" not in key and "//" not in key[len(BUCKET) + 1:]


def test_s3_missing_prefix_is_a_clear_error_without_secrets(s3):
    from tasks.errors import InputNotFoundError

    with pytest.raises(InputNotFoundError) as info:
        run_batch(f"s3://{BUCKET}/nothing-here", f"s3://{BUCKET}/out", parse_recipe({}), "convert")
    assert "s3://videos/nothing-here: no such folder or prefix" in str(info.value)
    assert SECRET not in str(info.value)


def test_s3_credentials_from_recipe_are_redacted(s3, s3_server, monkeypatch):
    from tasks.errors import PipelineError

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    recipe = parse_recipe({"storage": {"endpoint_url": s3_server, "key": "wrong-key-id",
                                       "secret": "recipe-secret-77Hx"}})
    s3.pipe(f"{BUCKET}/data/cam/1.mp4", b"x")
    with pytest.raises(PipelineError) as info:  # moto accepts any key; a missing prefix fails
        run_batch(f"s3://{BUCKET}/data-missing", f"s3://{BUCKET}/out", recipe, "ingest")
    assert "recipe-secret-77Hx" not in str(info.value)
    summary = run_batch(f"s3://{BUCKET}/data", f"s3://{BUCKET}/out", recipe, "ingest")
    assert summary.counts == {"blocked": 1}
    assert "recipe-secret-77Hx" not in json.dumps(summary.to_dict())
