"""A small client for Label Studio's REST API: the calls `review push` and `review pull` make.

Why not label-studio-sdk: it pins ``opencv-python-headless<4.13``, which would overwrite our
OpenCV 5 contrib build (HOG, CSRT) in the same ``cv2`` package. These are the same endpoints
the SDK calls (``projects``, ``projects/<id>/import``, ``projects/<id>/file-uploads``,
``tasks``); the tests check them against a real server, and the SDK itself in the peer
environment.

Authentication: a legacy token is sent as ``Authorization: Token ...``; a personal access token
(a JWT refresh token, Label Studio's default since 1.16) is exchanged at ``/api/token/refresh``
for an access token, sent as ``Bearer``. Tokens never appear in messages or logs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any, BinaryIO

import httpx

from tasks.errors import ConfigError, ToolError
from tasks.recipe import LabelStudioConfig
from tasks.store.storage import redact

URL_ENV, TOKEN_ENV = "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"
PAGE = 100


class LabelStudio:
    """One server, one token."""

    def __init__(self, url: str, token: str, timeout: float = 120.0):
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)
        self._http.headers["Authorization"] = self._authorization(token)

    @classmethod
    def from_settings(cls, settings: LabelStudioConfig, url: str | None = None) -> LabelStudio:
        """The server and token from the environment, else the recipe."""
        url = url or os.environ.get(URL_ENV) or settings.url
        token = os.environ.get(TOKEN_ENV) or (settings.token.get_secret_value()
                                              if settings.token else None)
        if not url:
            raise ConfigError(f"no Label Studio URL: set {URL_ENV} or review.label_studio.url")
        if not token:
            raise ConfigError(f"no Label Studio token: set {TOKEN_ENV} (Account & Settings > "
                              "Access Token) or review.label_studio.token")
        return cls(url, token)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LabelStudio:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- projects ------------------------------------------------------------------------

    def find_project(self, title: str) -> dict[str, Any] | None:
        for found in self._pages("/api/projects", {"title": title}, "results"):
            if found.get("title") == title:
                return found
        return None

    def project(self, title: str, label_config: str) -> tuple[int, bool]:
        """The project titled ``title`` with this labeling config (made, or its config
        updated); returns its id and whether it was made."""
        found = self.find_project(title)
        if found is not None:
            if (found.get("label_config") or "").strip() != label_config.strip():
                self._call("PATCH", f"/api/projects/{found['id']}",
                           json={"label_config": label_config})
            return int(found["id"]), False
        made = self._call("POST", "/api/projects", json={"title": title,
                                                         "label_config": label_config})
        return int(made["id"]), True

    # -- tasks ---------------------------------------------------------------------------

    def tasks(self, project: int) -> Iterator[dict[str, Any]]:
        """Every task of the project with its data, annotations and predictions."""
        yield from self._pages("/api/tasks", {"project": project, "fields": "all"}, "tasks")

    def import_tasks(self, project: int, tasks: list[dict[str, Any]]) -> int:
        if not tasks:
            return 0
        done = self._call("POST", f"/api/projects/{project}/import", json=tasks)
        return int(done.get("task_count") or 0)

    # -- files ---------------------------------------------------------------------------

    def uploads(self, project: int) -> list[dict[str, Any]]:
        """The project's uploaded files: {id, file ("upload/<project>/<prefix>-<name>"), size}."""
        return self._call("GET", f"/api/projects/{project}/file-uploads", params={"all": "true"})

    def upload(self, project: int, name: str, data: BinaryIO) -> str:
        """Upload a file without making a task; returns the URL the editor loads it from."""
        done = self._call("POST", f"/api/projects/{project}/import",
                          params={"commit_to_project": "false"},
                          files={"file": (name, data, "video/webm")})
        ids = done.get("file_upload_ids") or []
        if len(ids) != 1:
            raise ToolError(f"Label Studio kept {len(ids)} files for one upload of {name}")
        for upload in self._call("GET", f"/api/projects/{project}/file-uploads",
                                 params={"ids": json.dumps(ids)}):
            if upload.get("id") == ids[0]:
                return upload_url(upload)
        raise ToolError(f"Label Studio does not list the upload of {name} (id {ids[0]})")

    # -- plumbing ------------------------------------------------------------------------

    def _authorization(self, token: str) -> str:
        if token.count(".") != 2:  # a legacy token
            return f"Token {token}"
        try:
            answer = httpx.post(f"{self.url}/api/token/refresh", json={"refresh": token},
                                timeout=30)
        except httpx.HTTPError as e:
            raise ToolError(f"cannot reach Label Studio at {redact(self.url)}: {e}") from None
        if answer.status_code != 200 or "access" not in answer.json():
            raise ToolError(f"Label Studio refused the personal access token "
                            f"(HTTP {answer.status_code}): make a new one")
        return f"Bearer {answer.json()['access']}"

    def _call(self, method: str, path: str, **kwargs) -> Any:
        try:
            answer = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise ToolError(f"{method} {redact(self.url)}{path}: {type(e).__name__}: {e}") from None
        if answer.status_code >= 400:
            raise ToolError(f"{method} {redact(self.url)}{path}: HTTP {answer.status_code}: "
                            f"{_detail(answer)}")
        return answer.json() if answer.content else None

    def _pages(self, path: str, params: dict[str, Any], key: str) -> Iterator[dict[str, Any]]:
        page = 1
        while True:
            try:
                found = self._call("GET", path, params={**params, "page": page,
                                                        "page_size": PAGE})
            except ToolError as e:
                if "HTTP 404" in str(e) and page > 1:  # past the last page
                    return
                raise
            items = found.get(key, []) if isinstance(found, dict) else found
            yield from items
            if len(items) < PAGE or (isinstance(found, dict) and key == "results"
                                     and not found.get("next")):
                return
            page += 1


def upload_url(upload: dict[str, Any]) -> str:
    return f"/data/{upload['file']}"


def _detail(answer: httpx.Response) -> str:
    text = answer.text
    if text.lstrip().startswith("<"):
        return "(an HTML page: is this Label Studio's URL?)"
    return redact(text[:500])
