"""Object-store access through fsspec: locations, listing, safe output paths, atomic writes.

Local folders, ``s3://`` (any S3-compatible endpoint) and ``gs://`` (gcsfs extra) all go
through the same few functions. Object keys are data: they are mapped to output paths by
`safe_component`, which can never produce ``..``, an absolute path or a hidden name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsspec.core import url_to_fs

from tasks.errors import ConfigError, InputNotFoundError, PipelineError, StorageError
from tasks.recipe import StorageConfig

# Environment variables whose values must never appear in logs, tables or errors.
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN",
               "GOOGLE_APPLICATION_CREDENTIALS_JSON", "MINIO_ROOT_PASSWORD")
_registered_secrets: set[str] = set()
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def redact(text: str) -> str:
    """Remove credentials (known secret values, ``user:pass@`` in URLs) from a message."""
    secrets = {os.environ.get(name, "") for name in _SECRET_ENV} | _registered_secrets
    for value in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(value, "***")
    return _URL_USERINFO.sub(r"\g<scheme>***@", text)


@dataclass(frozen=True)
class Location:
    """A folder in some filesystem: ``fs`` plus the ``root`` path inside it."""

    fs: Any
    root: str
    protocol: str

    @property
    def is_local(self) -> bool:
        return self.protocol in ("file", "local")

    def path(self, *parts: str) -> str:
        """Path of ``parts`` under the root; refuses anything that would leave it."""
        rel = posixpath.join(*parts) if parts else ""
        full = posixpath.normpath(posixpath.join(self.root, rel)) if rel else self.root
        if not (full == self.root or full.startswith(self.root.rstrip("/") + "/")):
            raise StorageError(f"refusing to write outside the output folder: {rel!r}")
        return full

    def url(self, path: str) -> str:
        """A URL for a path of this location, as users write them."""
        if self.is_local:
            return path
        return f"{self.protocol}://{path}"


def open_location(uri: str, storage: StorageConfig | None = None) -> Location:
    """Resolve a local folder or an fsspec URL to a `Location`."""
    storage = storage or StorageConfig()
    protocol = uri.split("://", 1)[0] if "://" in uri else "file"
    options: dict[str, Any] = {}
    if protocol in ("s3", "s3a"):
        options = _s3_options(storage)
    elif protocol in ("gs", "gcs"):
        options = {"token": "anon"} if storage.anon else {}
    try:
        fs, root = url_to_fs(uri, **options)
    except ImportError as e:
        raise ConfigError(f"{redact(uri)}: no filesystem for {protocol}:// ({e}); "
                          f"for gs:// install the 'gcs' extra") from e
    except ValueError as e:
        raise ConfigError(f"{redact(uri)}: not a usable location ({redact(str(e))})") from e
    if protocol == "file":
        root = str(Path(root).resolve())
    root = root.rstrip("/") or "/"
    return Location(fs=fs, root=root, protocol=protocol)


def _s3_options(storage: StorageConfig) -> dict[str, Any]:
    endpoint = (storage.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL"))
    region = storage.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    options: dict[str, Any] = {"anon": storage.anon}
    if endpoint:
        options["endpoint_url"] = endpoint
    if region:
        options["client_kwargs"] = {"region_name": region}
    if storage.key is not None and storage.secret is not None:
        key, secret = storage.key.get_secret_value(), storage.secret.get_secret_value()
        _registered_secrets.update((key, secret))
        options.update(key=key, secret=secret)
    return options


# --- listing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceObject:
    """One listed object: its path, size and the store's version token (no content read)."""

    path: str
    size: int
    version: str


def list_objects(loc: Location, extensions: tuple[str, ...], exclude: str | None = None,
                 ignored: list[tuple[str, int, str]] | None = None) -> list[SourceObject]:
    """Every file below the root whose name ends with one of ``extensions`` (any case); the
    others are appended to ``ignored`` as ``(url, size, reason)`` so none goes unaccounted."""
    wanted = tuple(e.lower() for e in extensions)
    try:
        loc.fs.invalidate_cache()
        require_input(loc)
        found = loc.fs.find(loc.root, detail=True)
    except PipelineError:
        raise
    except (OSError, ValueError) as e:
        raise StorageError(f"cannot list {redact(loc.url(loc.root))}: {redact(str(e))}") from e
    objects = []
    for path, info in found.items():
        if info.get("type") == "directory" or path.endswith("/"):
            continue  # a folder, or a bucket's folder marker
        if exclude and (path == exclude or path.startswith(exclude.rstrip("/") + "/")):
            continue  # our own outputs when OUT lies inside the dataset
        if not path.lower().endswith(wanted):
            if ignored is not None:
                ext = posixpath.splitext(path)[1].lower()
                why = (f"extension {ext} is not in ingest.extensions" if ext
                       else "no extension (ingest.extensions lists what is ingested)")
                ignored.append((redact(loc.url(path)), int(info.get("size") or 0), why))
            continue
        objects.append(SourceObject(path=path, size=int(info.get("size") or 0),
                                    version=version_token(info)))
    return objects


def require_input(loc: Location) -> None:
    """Raise `InputNotFoundError` when the dataset root does not exist (a mistyped folder or
    prefix is the caller's mistake: refused at once, never retried)."""
    if loc.fs.exists(loc.root):
        return
    try:  # s3fs answers False for a bucket it could not reach: a listing tells the two apart
        listed = loc.fs.ls(loc.root, detail=False)
    except FileNotFoundError:
        listed = []
    if not listed:
        raise InputNotFoundError(f"{redact(loc.url(loc.root))}: no such folder or prefix")


def version_token(info: dict) -> str:
    """What the store says identifies this object's content, without reading it."""
    for key in ("ETag", "etag", "md5Hash", "crc32c", "generation"):
        if info.get(key):
            return f"{key}:{str(info[key]).strip(chr(34))}"
    mtime = info.get("mtime") or info.get("LastModified") or info.get("updated") or ""
    return f"mtime:{mtime}:ino:{info.get('ino', '')}"


def list_files(loc: Location, folder: str) -> dict[str, tuple[int, str]]:
    """(size, version token) of every file under ``folder``, by path: one listing (one
    ``find`` on a bucket; a ``scandir`` walk on a local disk, the same tokens as `fs.info`,
    several times faster than fsspec's walk at 100,000 files). Empty when it does not exist."""
    if not loc.is_local:
        try:
            loc.fs.invalidate_cache(folder)
            found = loc.fs.find(folder, detail=True)
        except FileNotFoundError:
            return {}
        return {path: (int(info.get("size") or 0), version_token(info))
                for path, info in found.items() if info.get("type") != "directory"}
    files: dict[str, tuple[int, str]] = {}
    pending = [folder]
    while pending:
        try:
            entries = os.scandir(pending.pop())
        except (FileNotFoundError, NotADirectoryError):
            continue
        with entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                files[entry.path] = (st.st_size, f"mtime:{st.st_mtime}:ino:{st.st_ino}")
    return files


def object_version(loc: Location, path: str) -> tuple[int, str] | None:
    """(size, version token) of an object, or None when it does not exist."""
    try:
        info = loc.fs.info(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StorageError(f"cannot look at {redact(loc.url(path))}: {redact(str(e))}") from e
    return int(info.get("size") or 0), version_token(info)


def digest_object(loc: Location, path: str) -> str:
    """BLAKE2b-128 (hex) of an object's bytes, read in 8 MB blocks."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    try:
        with open_read(loc, path) as f:
            while block := f.read(8 << 20):
                h.update(block)
    except OSError as e:
        raise StorageError(f"cannot read {redact(loc.url(path))}: {redact(str(e))}") from e
    return h.hexdigest()


# --- safe names ----------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_component(name: str) -> str:
    """One path component made safe: letters, digits, ``._-`` only, never hidden or ``..``.

    A name that had to change gets a short hash of the original, so two different keys
    never map to the same output (``a b`` and ``a_b`` stay apart).
    """
    cleaned = _UNSAFE.sub("_", name).strip("._-")[:100]
    if cleaned == name and cleaned:
        return cleaned
    digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned or 'x'}-{digest}"


def safe_relpath(parts: list[str]) -> str:
    return "/".join(safe_component(p) for p in parts if p not in ("",)) or "_"


# --- reading and atomic writing ------------------------------------------------------------


def open_read(loc: Location, path: str, block_size: int = 8 << 20):
    try:
        if loc.is_local:
            return open(path, "rb", buffering=1 << 20)  # noqa: SIM115 (closed by the caller)
        return loc.fs.open(path, "rb", block_size=block_size, cache_type="readahead")
    except (OSError, ValueError) as e:
        raise StorageError(f"cannot open {redact(loc.url(path))}: {redact(str(e))}") from e


def write_bytes_atomic(loc: Location, path: str, data: bytes) -> None:
    """Write a whole object so that readers see the old one or the new one, never half."""
    try:
        if loc.is_local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        else:
            loc.fs.pipe_file(path, data)  # one PUT: atomic on object stores
    except OSError as e:
        raise StorageError(f"cannot write {redact(loc.url(path))}: {redact(str(e))}") from e


_ATOMIC_TEMP = re.compile(r"\.tmp-[0-9a-f]{32}$")


def remove_atomic_temps(loc: Location, keep: tuple[str, ...] = ()) -> int:
    """Remove the temp files `write_bytes_atomic` leaves when a process is killed mid-write
    (local folders only: object stores write in one PUT), except under the ``keep`` folders
    (another command may be writing there). Returns how many were removed."""
    if not loc.is_local or not os.path.isdir(loc.root):
        return 0
    removed = 0
    for folder, dirs, files in os.walk(loc.root):
        rel = os.path.relpath(folder, loc.root)
        dirs[:] = [d for d in dirs if os.path.normpath(os.path.join(rel, d)) not in keep]
        for name in files:
            if _ATOMIC_TEMP.search(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))
                    removed += 1
    return removed


def commit_file(loc: Location, local_tmp: str, path: str) -> None:
    """Move a finished local temp file to its final place (rename, or one upload)."""
    try:
        if loc.is_local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                os.replace(local_tmp, path)
            except OSError:  # temp on another device: copy beside the target, then rename
                tmp = f"{path}.tmp-{uuid.uuid4().hex}"
                shutil.copyfile(local_tmp, tmp)
                os.replace(tmp, path)
                os.unlink(local_tmp)
        else:
            loc.fs.put_file(local_tmp, path)  # multipart upload completes atomically
            os.unlink(local_tmp)
    except OSError as e:
        raise StorageError(f"cannot write {redact(loc.url(path))}: {redact(str(e))}") from e


def read_bytes(loc: Location, path: str) -> bytes | None:
    """An object's bytes, or None when it does not exist."""
    try:
        return loc.fs.cat_file(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StorageError(f"cannot read {redact(loc.url(path))}: {redact(str(e))}") from e


def size_of(loc: Location, path: str) -> int | None:
    try:
        return int(loc.fs.size(path))
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StorageError(f"cannot stat {redact(loc.url(path))}: {redact(str(e))}") from e


__all__ = ["Location", "SourceObject", "open_location", "list_objects", "safe_component",
           "safe_relpath", "open_read", "write_bytes_atomic", "commit_file", "read_bytes",
           "size_of", "redact"]
