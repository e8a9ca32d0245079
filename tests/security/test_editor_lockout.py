"""Locking every admin out of the editor: its Web Users API demoting or deleting the service account the sidecar
signs in with. Run against the real, unmodified editor (../shared/editor/) behind the sidecar's SSO bridge."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from sidecar.app import create_app
from sidecar.processes import LoggedProcess, start_process, stop_process
from tests import real_editor
from tests.helpers import TRUSTED_PEER, bootstrapped_settings

pytestmark = pytest.mark.caddy  # starts the real editor as a process

ADMIN = {"X-Authentik-Username": "admin", "X-Authentik-Groups": "vid_admin", "Origin": "http://testserver"}
JSON = {"Content-Type": "application/json", "Accept": "application/json"}


class Editor:
    def __init__(self, root: Path) -> None:
        self.files = real_editor.prepare(root)
        self.port = real_editor.pick_port()
        self.proc: LoggedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = real_editor.command(self.files, self.port)
        self.proc = start_process(
            argv, real_editor.environment(), ready_port=self.port, timeout=60, log_path=self.files.root / "editor.log"
        )

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def roles(self) -> dict[str, str]:
        return {user["username"]: user["role"] for user in self.files.users()}


@pytest.fixture(scope="module")
def editor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Editor]:
    found = Editor(tmp_path_factory.mktemp("real-editor"))
    found.start()
    yield found
    found.stop()


@pytest.fixture(scope="module")
def site(editor: Editor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = bootstrapped_settings(
        tmp_path_factory.mktemp("lockout") / "data",
        editor_url=editor.url,
        editor_username=real_editor.SERVICE_USER,
        editor_password=real_editor.SERVICE_PASSWORD,
    )
    with TestClient(create_app(settings), client=TRUSTED_PEER, base_url="http://testserver") as client:
        yield client


def post(site: TestClient, path: str, body: Any) -> Any:
    return site.post(path, content=json.dumps(body), headers={**ADMIN, **JSON})


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/webeditor/users/update", {"username": real_editor.SERVICE_USER, "role": "viewer", "email": "x@y.z"}),
        ("/api/webeditor/users/update", {"username": f"  {real_editor.SERVICE_USER} ", "role": "viewer"}),
        ("/api/webeditor/users/update/", {"username": real_editor.SERVICE_USER, "role": "viewer"}),
        ("/api/webeditor/users/delete", {"username": real_editor.SERVICE_USER}),
    ],
)
def test_an_admin_cannot_demote_or_delete_the_editors_service_account(
    site: TestClient, editor: Editor, path: str, body: dict[str, str]
) -> None:
    before = editor.files.users()
    response = post(site, path, body)
    assert response.status_code == 403, response.text
    assert "cannot be changed or deleted" in response.json()["error"]
    assert editor.files.users() == before
    assert editor.roles()[real_editor.SERVICE_USER] == "admin"


@pytest.mark.parametrize(
    "raw",
    [
        '{"username": "other-admin", "username": "' + real_editor.SERVICE_USER + '", "role": "viewer"}',
        '{"username": "\\u0073idecar-svc", "role": "viewer"}',
    ],
    ids=["duplicate key, last wins", "escaped name"],
)
def test_json_tricks_cannot_slip_the_service_account_past_the_guard(site: TestClient, editor: Editor, raw: str) -> None:
    before = editor.files.users()
    response = site.post("/api/webeditor/users/update", content=raw, headers={**ADMIN, **JSON})
    assert response.status_code == 403, response.text
    assert editor.files.users() == before


@pytest.mark.parametrize("raw", ["", "[]", "null", '{"username": 5}', "not json", '{"role": "viewer"}'])
def test_a_malformed_user_change_is_refused_before_the_editor(site: TestClient, editor: Editor, raw: str) -> None:
    before = editor.files.users()
    response = site.post("/api/webeditor/users/delete", content=raw, headers={**ADMIN, **JSON})
    assert response.status_code == 400, response.text
    assert response.json()["error"]
    assert editor.files.users() == before


def test_the_editors_user_changes_still_work_for_other_accounts(site: TestClient, editor: Editor) -> None:
    response = post(site, "/api/webeditor/users/update", {"username": "other-admin", "role": "viewer", "email": ""})
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    assert editor.roles()["other-admin"] == "viewer"


def test_after_an_attempt_and_an_editor_restart_admins_still_reach_the_editor(site: TestClient, editor: Editor) -> None:
    post(site, "/api/webeditor/users/delete", {"username": real_editor.SERVICE_USER})
    editor.stop()
    editor.start()  # a new secret key: every editor session ends, the bridge must sign in again
    page = site.get("/", headers={**ADMIN, "Accept": "text/html"})
    assert page.status_code == 200, page.text[:300]
    assert 'id="sidebar"' in page.text and "/overlay/overlay.js" in page.text
