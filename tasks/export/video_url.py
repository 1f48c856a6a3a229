"""The URL a reviewer's tool loads a clip's WebM from, made from the recipe's template
(``export.video_url``). A bare path only works for a tool on the same disk that serves it; a
template turns it into what the tool can load:

- Label Studio's local file serving: ``/data/local-files/?d={relpath}`` with
  ``LOCAL_FILES_DOCUMENT_ROOT`` set to OUT (or ``?d={path}`` with the root at ``/``);
- any static file server: ``https://files.example.com/videos/{relpath}``;
- the object store's own URI (``{uri}``: ``s3://...``, ``gs://...``) for a tool with that
  storage connected.

Placeholders are URL-quoted (``/`` kept): ``{relpath}`` the WebM's path under OUT, ``{path}``
its absolute path without the leading ``/``, ``{uri}`` its URL as written, ``{name}`` its file
name. Presigned HTTPS URLs expire, so they are made when tasks are pushed to a tool, never
written into export files.
"""

from __future__ import annotations

import posixpath
from urllib.parse import quote

from tasks.store.record import ClipRecord
from tasks.store.storage import Location

PLACEHOLDERS = ("relpath", "path", "uri", "name")


def video_url(template: str | None, out: Location, record: ClipRecord) -> str | None:
    """``template`` filled for the clip's WebM (None without a template or a WebM)."""
    return fill(template, out, record.output_uri) if template and record.output_uri else None


def fill(template: str, out: Location, uri: str) -> str:
    """``template`` filled for the WebM at ``uri``."""
    root = out.url(out.root).rstrip("/") + "/"
    relpath = uri[len(root):] if uri.startswith(root) else posixpath.basename(uri)
    path = uri.split("://", 1)[1] if "://" in uri else uri
    values = {"relpath": relpath, "path": path.lstrip("/"), "uri": uri,
              "name": posixpath.basename(uri)}
    safe = {"uri": ":/"}.get
    return template.format(**{k: quote(v, safe=safe(k) or "/") for k, v in values.items()})
