"""A running Label Studio server: push a run's flagged examples into a project, pull the reviews back.

``curator.export.labelstudio`` writes the files for a manual import; this module does the same
through Label Studio's HTTP API (tested against Label Studio 1.23.2), so a nightly job needs no one
to click through the web interface:

- :func:`push` finds the project (by id, or by exact title), creates it with curator's labelling
  config when there is none, adds the dataset folder as Local Files storage when no storage of the
  project covers it (never synced: that would import every file as a task), and imports only the
  tasks whose ``data.curator_id`` is not in the project yet, so pushing every night adds the new
  examples and never duplicates one.
- :func:`pull` downloads the project's annotated tasks (JSON export), writes their annotators as
  emails instead of user ids, and applies them like ``curator apply``.

The access token comes from the environment (``LABEL_STUDIO_API_KEY``), never from the command
line, where other users of the machine could read it: a legacy token is sent as ``Token <key>``; a
personal access token (a JWT) is first exchanged at ``/api/token/refresh`` for an access token sent
as ``Bearer``. Every failure a user can cause is a :class:`LabelStudioError` with one line naming the
server or the option.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from .apply import apply_reviews
from .atomic import write_text
from .errors import ConfigError, CuratorError
from .export.images import ExampleImages
from .export.labelstudio import labelling_config, tasks
from .export.queue import check_issue, flagged_examples
from .store import Run

API_KEY_ENV = "LABEL_STUDIO_API_KEY"
EXPORT_NAME = "labelstudio-export.json"
TITLE_MAX = 50              # Label Studio refuses longer project titles
IMPORT_BATCH = 500          # tasks per import request, well under the server's upload size limit
_JWT = re.compile(r"^eyJ[\w-]*\.[\w-]+\.[\w-]+$")


class LabelStudioError(CuratorError):
    """The Label Studio server cannot be reached, refuses the token, or answers an error."""


def _detail(body: bytes) -> str:
    """The server's error message on one line: ``detail`` plus any field validation errors."""
    try:
        answer = json.loads(body)
    except ValueError:
        return " ".join(body.decode("utf-8", "replace").split())[:200] or "no details"
    if not isinstance(answer, dict):
        return str(answer)[:200]
    parts = [str(answer.get("detail") or "")]
    for field, problems in (answer.get("validation_errors") or {}).items():
        problems = problems if isinstance(problems, list) else [problems]
        parts.append(("" if field == "non_field_errors" else f"{field}: ") + " ".join(map(str, problems)))
    return " ".join(" ".join(p for p in parts if p).split())


class LabelStudio:
    """JSON over HTTP to the server at ``url`` with the token ``api_key`` (default: the environment)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 120):
        if not re.match(r"^https?://[^/]", url or ""):
            raise ConfigError(f"--labelstudio {url!r}: expected the server's http:// or https:// URL")
        self.url = url.rstrip("/")
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
        if not key.strip():
            raise LabelStudioError(f"{API_KEY_ENV} is not set: export the access token of your Label Studio "
                                   f"account (Account & Settings) to use --labelstudio {self.url}")
        self.key, self.timeout = key.strip(), timeout
        self._bearer: str | None = None

    def _send(self, method: str, path: str, body: Any, authorization: str | None) -> tuple[int, bytes]:
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if authorization:
            headers["Authorization"] = authorization
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise LabelStudioError(f"--labelstudio {self.url}: cannot reach the server ({reason})") from None

    def _authorization(self, renew: bool = False) -> str:
        if not _JWT.match(self.key):
            return f"Token {self.key}"
        if self._bearer is None or renew:
            status, body = self._send("POST", "/api/token/refresh", {"refresh": self.key}, None)
            if status != 200:
                raise LabelStudioError(f"--labelstudio {self.url}: the server refused the personal access token "
                                       f"in {API_KEY_ENV} (HTTP {status}: {_detail(body)})")
            self._bearer = self._json("POST", "/api/token/refresh", status, body)["access"]
        return f"Bearer {self._bearer}"

    def fetch(self, method: str, path: str, body: Any = None, **query: Any) -> tuple[int, bytes]:
        """(status, body) of one request; 401/403 raise. ``query``: URL parameters (None: left out)."""
        query = {k: v for k, v in query.items() if v is not None}
        path += ("?" + urlencode(query)) if query else ""
        status, answer = self._send(method, path, body, self._authorization())
        if status == 401 and self._bearer is not None:     # the short-lived access token expired
            status, answer = self._send(method, path, body, self._authorization(renew=True))
        if status in (401, 403):
            raise LabelStudioError(f"--labelstudio {self.url}: the server refused the token in {API_KEY_ENV} "
                                   f"(HTTP {status}: {_detail(answer)})")
        return status, answer

    def call(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        """The JSON answer of one request; any error status raises, naming the request."""
        return self._json(method, path, *self.fetch(method, path, body, **query))

    def _json(self, method: str, path: str, status: int, answer: bytes) -> Any:
        if status >= 400:
            raise LabelStudioError(f"--labelstudio {self.url}: {method} {path} answered HTTP {status}: "
                                   f"{_detail(answer)}")
        try:
            return json.loads(answer) if answer else None
        except ValueError:
            raise LabelStudioError(f"--labelstudio {self.url}: {path} did not answer JSON; is this the URL "
                                   "of a Label Studio server?") from None

    # -- the resources curator uses --

    def project(self, project_id: int) -> dict:
        path = f"/api/projects/{project_id}"
        status, body = self.fetch("GET", path)
        if status == 404:
            raise LabelStudioError(f"--project {project_id}: no project with id {project_id} at {self.url}")
        return self._json("GET", path, status, body)

    def projects_titled(self, title: str) -> list[dict]:
        """The projects whose title is exactly ``title`` (the server's filter also matches parts)."""
        found, page = [], 1
        while True:
            answer = self.call("GET", "/api/projects", title=title, page=page, page_size=100)
            found += [p for p in answer["results"] if p.get("title") == title]
            if not answer.get("next"):
                return found
            page += 1

    def curator_ids(self, project_id: int) -> set[str]:
        """``data.curator_id`` of every task in the project."""
        ids, page, seen = set(), 1, 0
        while True:
            status, body = self.fetch("GET", "/api/tasks", project=project_id, include="id,data", page=page,
                                      page_size=1000)
            if status == 404 and page > 1:      # past the last page
                return ids
            answer = self._json("GET", "/api/tasks", status, body)
            batch = answer.get("tasks", [])
            ids |= {str(t["data"]["curator_id"]) for t in batch if "curator_id" in (t.get("data") or {})}
            seen += len(batch)
            if not batch or seen >= answer.get("total", 0):
                return ids
            page += 1

    def users(self) -> dict[int, str]:
        """user id -> email."""
        answer = self.call("GET", "/api/users/")
        rows = answer.get("results", []) if isinstance(answer, dict) else answer
        return {u["id"]: u.get("email") or u.get("username") or str(u["id"]) for u in rows}


@dataclass(frozen=True)
class Pushed:
    """What :func:`push` did. ``storage``: the Local Files folder (None: nothing served from disk)."""

    project_id: int
    title: str
    url: str                    # the project's page
    created: bool
    storage: str | None
    storage_added: bool
    imported: int
    present: int                # flagged examples already in the project
    predictions: int


def default_title(run: Run) -> str:
    """``curator <dataset folder name>``, cut to the length Label Studio allows."""
    return f"curator {run.dataset_location[1].name}"[:TITLE_MAX]


def _find_project(ls: LabelStudio, project: str | int | None, run: Run) -> dict | None:
    """The project named by ``project`` (an id, or a title; default :func:`default_title`); None when
    no project has that title."""
    if project is not None and str(project).strip().isdigit():
        return ls.project(int(project))
    title = default_title(run) if project is None else str(project)
    found = ls.projects_titled(title)
    if len(found) > 1:
        ids = ", ".join(str(p["id"]) for p in found)
        raise LabelStudioError(f"--project {title!r}: {len(found)} projects have this title at {ls.url} "
                               f"(ids {ids}); pass --project ID")
    return found[0] if found else None


def _image_root(dataset: Path, document_root: str | Path | None) -> str:
    """The dataset folder relative to Label Studio's document root, as image references use it."""
    document_root = dataset.parent if document_root is None else Path(document_root).absolute()
    try:
        relative = dataset.relative_to(document_root).as_posix()
    except ValueError:
        raise ConfigError(f"--document-root {document_root}: the dataset folder {dataset} is not under it; "
                          "pass the server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT") from None
    return "" if relative == "." else relative


def _covered(storages: list[dict], dataset: Path) -> bool:
    return any(dataset == Path(s["path"]) or Path(s["path"]) in dataset.parents for s in storages if s.get("path"))


def push(run: Run | str | Path, url: str, project: str | int | None = None, issue: str = "all",
         document_root: str | Path | None = None, api_key: str | None = None,
         dataset_root: str | Path | None = None) -> Pushed:
    """Put the flagged examples of ``run`` (``issue``: one issue or ``all``) into a Label Studio project.

    project: an id, or a title [``curator <dataset folder name>``]; a title no project has is created
    with curator's labelling config. document_root: the server's ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``
    [the folder holding the dataset folder]; image references are relative to it, and the server is
    expected to see the dataset at the same absolute path. Examples already in the project (by
    ``data.curator_id``) are not imported again. dataset_root: where the dataset's folder is now, if
    it moved after the run (see :class:`curator.Run`).
    """
    run = run if isinstance(run, Run) else Run(run, dataset_root)
    check_issue(issue)
    ls = LabelStudio(url, api_key)
    images = ExampleImages(run)
    if not images.has_images:
        raise ConfigError(f"curator push: run {run.path} is over a {images.kind} dataset without images; "
                          "use `curator export --to csv`")
    dataset = images.root
    new_tasks = tasks(run, flagged_examples(run, issue), _image_root(dataset, document_root))

    found = _find_project(ls, project, run)
    created = found is None
    if created:
        found = ls.call("POST", "/api/projects", {"title": default_title(run) if project is None else str(project),
                                                 "label_config": labelling_config(run.classes)})
    project_id = found["id"]

    storage, storage_added = None, False
    if any(t["data"]["path"] for t in new_tasks):
        storage = str(dataset)
        if not _covered(ls.call("GET", "/api/storages/localfiles", project=project_id), dataset):
            ls.call("POST", "/api/storages/localfiles", {"project": project_id, "path": storage,
                                                         "use_blob_urls": True, "title": dataset.name[:200]})
            storage_added = True

    present = ls.curator_ids(project_id)
    todo = [t for t in new_tasks if t["data"]["curator_id"] not in present]
    _check_served(ls, todo, document_root)
    imported = predictions = 0
    for start in range(0, len(todo), IMPORT_BATCH):
        answer = ls.call("POST", f"/api/projects/{project_id}/import", todo[start:start + IMPORT_BATCH])
        imported += int(answer.get("task_count", 0))
        predictions += int(answer.get("prediction_count", 0))
    return Pushed(project_id, found["title"], f"{ls.url}/projects/{project_id}", created, storage, storage_added,
                  imported, len(new_tasks) - len(todo), predictions)


def _check_served(ls: LabelStudio, todo: list[dict], document_root: str | Path | None) -> None:
    """Fetch the first image about to be imported: a wrong document root or disabled local-files
    serving stops the push before it fills the project with dead links."""
    reference = next((t["data"]["image"] for t in todo if t["data"]["image"].startswith("/data/local-files/")), None)
    if reference is None:
        return
    status, _ = ls.fetch("GET", reference)
    if status != 200:
        where = "the folder holding the dataset folder" if document_root is None else str(document_root)
        raise LabelStudioError(f"--labelstudio {ls.url}: the server cannot serve the dataset's images (GET "
                               f"{reference}: HTTP {status}); start it with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="
                               f"true and LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={where}, or pass --document-root")


def pull(run: Run | str | Path, url: str, project: str | int | None = None, out: str | Path | None = None,
         api_key: str | None = None, dataset_root: str | Path | None = None) -> tuple[Path, Path, Path]:
    """Download the reviews of ``run``'s examples from a Label Studio project and apply them.

    Writes the JSON export (annotators as ``{"id", "email"}``) to ``labelstudio-export.json`` beside
    ``out`` [RUN/corrected_manifest.csv], then the corrected manifest and ``changes.csv`` as
    :func:`curator.apply.apply_reviews` does. project and dataset_root: as for :func:`push`.
    Returns (export, manifest, changes).
    """
    run = run if isinstance(run, Run) else Run(run, dataset_root)
    ls = LabelStudio(url, api_key)
    found = _find_project(ls, project, run)
    if found is None:
        title = default_title(run) if project is None else project
        raise LabelStudioError(f"--project {title!r}: no project with this title at {ls.url}; "
                               "`curator push` creates it")
    reviewed = ls.call("GET", f"/api/projects/{found['id']}/export", exportType="JSON")
    emails = ls.users()
    for task in reviewed:
        for annotation in task.get("annotations") or []:
            who = annotation.get("completed_by")
            if isinstance(who, int) and who in emails:
                annotation["completed_by"] = {"id": who, "email": emails[who]}
    out = Path(out) if out is not None else run.path / "corrected_manifest.csv"
    export_path = out.with_name(EXPORT_NAME)
    write_text(export_path, json.dumps(reviewed, ensure_ascii=False, indent=1) + "\n")
    manifest, changes = apply_reviews(run, export_path, out)
    return export_path, manifest, changes
