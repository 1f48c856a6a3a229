import os

import pytest

from tasks.errors import StorageError
from tasks.store.storage import (commit_file, list_objects, open_location, redact, safe_component,
                           safe_relpath, write_bytes_atomic)


@pytest.mark.parametrize("name", ["..", ".", "", "/", "../../etc/passwd", "/abs/path", ".hidden",
                                  "a b", "naïve", "x\ny", "C:\\win", "-rf", "%2e%2e"])
def test_safe_component_never_escapes(name):
    safe = safe_component(name)
    assert safe and safe not in (".", "..")
    assert "/" not in safe and "\\" not in safe and not safe.startswith((".", "-"))
    assert all(ch.isalnum() or ch in "._-" for ch in safe)


def test_safe_component_keeps_plain_names_and_separates_collisions():
    assert safe_component("clip_01.mp4") == "clip_01.mp4"
    assert safe_component("a b") != safe_component("a_b")
    assert safe_component("a b") == safe_component("a b")  # stable across runs


def test_safe_relpath_drops_empty_parts():
    assert safe_relpath(["", "abs", "..", "x"]).count("/") == 2
    assert ".." not in safe_relpath(["..", ".."]).split("/")


def test_location_path_refuses_escape(tmp_path):
    out = open_location(str(tmp_path / "out"))
    assert out.path("a", "b.webm").startswith(out.root + "/")
    for bad in ("../x", "a/../../x", "/etc/passwd"):
        with pytest.raises(StorageError, match="outside the output folder"):
            out.path(bad)


def test_atomic_writes_leave_no_temp(tmp_path):
    out = open_location(str(tmp_path))
    target = out.path("sub", "f.bin")
    write_bytes_atomic(out, target, b"one")
    write_bytes_atomic(out, target, b"two")
    assert open(target, "rb").read() == b"two"
    src = tmp_path / "tmpfile"
    src.write_bytes(b"video")
    commit_file(out, str(src), out.path("sub", "v.webm"))
    assert sorted(os.listdir(tmp_path / "sub")) == ["f.bin", "v.webm"]


def test_listing_filters_extensions_any_case_and_excludes_out(tmp_path):
    (tmp_path / "r").mkdir()
    for name in ("a.MP4", "b.mov", "notes.txt"):
        (tmp_path / "r" / name).write_bytes(b"x")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.webm").write_bytes(b"x")
    loc = open_location(str(tmp_path))
    found = list_objects(loc, (".mp4", ".mov", ".webm"), exclude=str(tmp_path / "out"))
    assert sorted(os.path.basename(o.path) for o in found) == ["a.MP4", "b.mov"]
    assert all(o.version and o.size == 1 for o in found)


def test_a_missing_source_is_a_bad_argument_not_a_fault_to_retry(tmp_path):
    from tasks.errors import ConfigError, InputNotFoundError

    assert issubclass(InputNotFoundError, ConfigError) and not issubclass(InputNotFoundError,
                                                                          StorageError)
    with pytest.raises(InputNotFoundError, match="no such folder"):
        list_objects(open_location(str(tmp_path / "nope")), (".mp4",))


def test_redact_hides_env_secrets_and_url_userinfo(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "verysecretvalue123")
    text = "failed with verysecretvalue123 at s3://user:pw@host/bucket"
    cleaned = redact(text)
    assert "verysecretvalue123" not in cleaned and "user:pw" not in cleaned


def test_gcs_without_its_extra_is_a_clear_config_error():
    import importlib.util

    from tasks.errors import ConfigError

    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed here: the missing-extra message cannot show")
    with pytest.raises(ConfigError, match="install the 'gcs' extra"):
        open_location("gs://bucket/prefix")


def test_remove_atomic_temps_leaves_outputs_and_kept_folders(tmp_path):
    from tasks.store.storage import remove_atomic_temps

    loc = open_location(str(tmp_path))
    half = "a" * 32
    (tmp_path / "exports" / "cvat").mkdir(parents=True)
    (tmp_path / "reviews").mkdir()
    (tmp_path / "exports" / "cvat" / f"1.xml.tmp-{half}").write_bytes(b"half")
    (tmp_path / "exports" / "cvat" / "1.xml").write_bytes(b"whole")
    (tmp_path / f"items.parquet.tmp-{half}").write_bytes(b"half")
    (tmp_path / "reviews" / f"r.parquet.tmp-{half}").write_bytes(b"being written")
    (tmp_path / "notes.tmp-x").write_bytes(b"not ours")
    assert remove_atomic_temps(loc, keep=("reviews",)) == 2
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["exports/cvat/1.xml", "notes.tmp-x", f"reviews/r.parquet.tmp-{half}"]
