"""Real services for the tests, one session-scoped fixture each (DESIGN.md, "Real services in tests").

``label_studio``: a Label Studio server from its own venv (``make labelstudio`` builds
``.venv-labelstudio``; ``CURATOR_LABEL_STUDIO`` may name another ``label-studio`` executable), on a
free port of 127.0.0.1, with local-files serving from a fresh document root and an admin whose
legacy token is known. A developer without it gets a skip saying how to get it; with
``CURATOR_REQUIRE_SERVICES=1`` (``make test``, so CI) a server that is missing or does not start is a
failure instead.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import pytest

LABEL_STUDIO_ENV = "CURATOR_LABEL_STUDIO"
REQUIRE_ENV = "CURATOR_REQUIRE_SERVICES"
LABEL_STUDIO_VENV = Path(__file__).resolve().parent.parent / ".venv-labelstudio" / "bin" / "label-studio"
START_TIMEOUT_S = 300        # it starts in 40-60 s on 2 idle cores; the suite may be busy beside it


def unavailable(reason: str) -> None:
    """Skip, or fail where the run promised every service (make test, CI)."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class LabelStudioServer:
    url: str
    email: str               # the admin's; Label Studio wants an email as user name
    token: str               # the admin's legacy API token
    document_root: Path      # LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT: put datasets in here
    log: Path

    def api(self, method: str, path: str, body: object = None, token: str | None = None) -> tuple[int, object]:
        """(status, JSON answer, or the raw bytes when it is not JSON) of one request as the admin."""
        request = urllib.request.Request(self.url + path, method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"Token {token or self.token}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw

    def ok(self, method: str, path: str, body: object = None) -> object:
        """The JSON answer of a request that must succeed."""
        status, answer = self.api(method, path, body)
        assert status < 300, f"{method} {path}: HTTP {status}: {answer!r:.500}"
        return answer


def _log_tail(log: Path, lines: int = 40) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def _wait_until_ready(process: subprocess.Popen, log: Path, server: LabelStudioServer) -> str:
    """The URL the server answers on. Label Studio moves to the next port when its port was taken
    in the meantime, so the URL is read from its log, then /health and the token are checked."""
    deadline = time.monotonic() + START_TIMEOUT_S
    url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"Label Studio exited with status {process.returncode} while starting; its log:\n"
                        f"{_log_tail(log)}", pytrace=False)
        if url is None:
            found = re.search(r"Starting development server at (http://127\.0\.0\.1:\d+)/",
                              log.read_text(errors="replace"))
            url = found.group(1) if found else None
        if url is not None:
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as response:
                    if response.status == 200:
                        status, me = replace(server, url=url).api("GET", "/api/current-user/whoami")
                        assert status == 200 and me["email"] == server.email, (status, me)   # ours, not another
                        return url
            except (urllib.error.URLError, OSError):
                pass
        time.sleep(1)
    pytest.fail(f"Label Studio did not answer within {START_TIMEOUT_S} s; its log:\n{_log_tail(log)}", pytrace=False)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory) -> Iterator[LabelStudioServer]:
    executable = Path(os.environ.get(LABEL_STUDIO_ENV) or LABEL_STUDIO_VENV)
    if not os.access(executable, os.X_OK):
        unavailable(f"Label Studio is not installed at {executable}: run `make labelstudio`, or set "
                    f"{LABEL_STUDIO_ENV} to a label-studio executable")
    base = tmp_path_factory.mktemp("label-studio")
    server = LabelStudioServer(url="", email="admin@example.org", token="curator-test-token-0123456789",
                               document_root=base / "files", log=base / "server.log")
    server.document_root.mkdir()
    data = base / "data"
    env = {**os.environ,
           "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
           "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(server.document_root),
           "LABEL_STUDIO_BASE_DATA_DIR": str(data),       # nothing under ~/.local/share
           "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "", "LATEST_VERSION_CHECK": "false"}
    command = [str(executable), "start", "--no-browser", "--internal-host", "127.0.0.1", "-p", str(free_port()),
               "--data-dir", str(data), "--username", server.email, "--password", "curator-test-password",
               "--user-token", server.token, "--enable-legacy-api-token"]
    with open(server.log, "wb") as log:
        # Its own session: the finaliser stops the whole process group it started, and only that.
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=base, env=env, start_new_session=True)
    try:
        yield replace(server, url=_wait_until_ready(process, server.log, server))
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group started for the server, SIGKILL after 30 s."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
