"""The SSO bridge: the sidecar signs in to a real (uvicorn-served) fixture editor with a service account."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from sidecar.app import create_app
from sidecar.settings import Settings
from sidecar.store import Store
from sidecar.web.editor_proxy import OVERLAY_TAGS
from tests import fixture_editor
from tests.fake_authentik import TOKEN, FakeAuthentik, SplitTransport
from tests.fixture_editor import FixtureEditor
from tests.helpers import ADMIN_PASSWORD, bootstrapped_settings
from tests.test_editor_proxy import ADMIN, HTML, VIEWER, ServerThread

SIGNED_IN_AS_SERVICE = f"Signed in as {fixture_editor.USERNAME}".encode()
SIGN_IN_FAILED = (
    "The sidecar could not sign in to the editor; check SIDECAR_EDITOR_USERNAME and SIDECAR_EDITOR_PASSWORD."
)
EDITOR_PATHS = ["/", "/login", "/logout", "/register", "/forgot-password", "/reset-password", "/api/status"]


@pytest.fixture(scope="module")
def editor() -> Iterator[tuple[FixtureEditor, ServerThread]]:
    fixture = FixtureEditor()
    with ServerThread(fixture.app) as server:
        yield fixture, server


def bridged(data_dir: Path, editor_url: str, password: str = fixture_editor.PASSWORD, **overrides: object) -> Settings:
    return bootstrapped_settings(
        data_dir,
        editor_url=editor_url,
        editor_username=fixture_editor.USERNAME,
        editor_password=password,
        **overrides,
    )


@pytest.fixture(scope="module")
def bridge_settings(tmp_path_factory: pytest.TempPathFactory, editor: tuple[FixtureEditor, ServerThread]) -> Settings:
    return bridged(tmp_path_factory.mktemp("bridge") / "data", editor[1].url)


@pytest.fixture(scope="module")
def sidecar(bridge_settings: Settings) -> Iterator[ServerThread]:
    with ServerThread(create_app(bridge_settings)) as server:
        yield server


@pytest.fixture
def http(sidecar: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sidecar.url, timeout=20) as client:
        yield client


def editor_cookies(response: httpx.Response) -> list[str]:
    return [value for value in response.headers.get_list("set-cookie") if value.lower().startswith("session=")]


# --- admins land in the editor, signed in as the service account ------------------------------------------------


def test_admin_reaches_the_editor_without_its_login_page(http: httpx.Client) -> None:
    index = http.get("/", headers={**ADMIN, "Accept": HTML})
    assert index.status_code == 200
    assert b'<nav class="sidebar" id="sidebar">' in index.content and SIGNED_IN_AS_SERVICE in index.content
    assert index.content.count(OVERLAY_TAGS) == 1
    assert b'action="/login"' not in index.content
    assert editor_cookies(index) == [] and "session" not in http.cookies
    assert http.get("/api/status", headers=ADMIN).json()["running"] is True


def test_the_browser_never_gets_the_editors_session_cookie(http: httpx.Client) -> None:
    response = http.get("/probe/session-cookie", headers=ADMIN)
    assert response.status_code == 200
    assert editor_cookies(response) == []
    assert [value.split(";", 1)[0] for value in response.headers.get_list("set-cookie")] == ["theme=dark"]


def test_the_editor_gets_the_sidecars_session_and_the_browsers_other_cookies(http: httpx.Client) -> None:
    token = http.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}).json()["token"]
    http.cookies.clear()
    cookie = f"session=forged-by-the-browser; theme=dark; sidecar_session={token}"
    seen = http.get("/probe/echo", headers={**ADMIN, "Cookie": cookie}).json()
    cookies = [value for name, value in seen["headers"] if name == "cookie"]
    assert len(cookies) == 1, "one Cookie header: servers read only one"
    parts = cookies[0].split("; ")
    assert parts[0] == "theme=dark" and len(parts) == 2
    assert parts[1].startswith("session=") and "forged" not in parts[1]
    assert not any("sidecar_session" in value or "authentik" in name for name, value in seen["headers"])
    # The forged cookie did not replace the sidecar's session either.
    assert http.get("/", headers={**ADMIN, "Accept": HTML, "Cookie": cookie}).status_code == 200


def test_after_the_editor_restarts_the_next_request_still_works(
    http: httpx.Client, editor: tuple[FixtureEditor, ServerThread]
) -> None:
    fixture = editor[0]
    assert http.get("/", headers={**ADMIN, "Accept": HTML}).status_code == 200
    fixture.restart()
    before = fixture.login_posts
    page = http.get("/", headers={**ADMIN, "Accept": HTML})
    assert page.status_code == 200 and SIGNED_IN_AS_SERVICE in page.content
    assert fixture.login_posts == before + 1
    fixture.restart()
    api = http.get("/api/status", headers=ADMIN)  # the editor's API answers 401, not a redirect
    assert api.status_code == 200 and api.json()["running"] is True


def test_concurrent_requests_after_a_restart_sign_in_once(
    http: httpx.Client, editor: tuple[FixtureEditor, ServerThread]
) -> None:
    fixture = editor[0]
    assert http.get("/api/status", headers=ADMIN).status_code == 200
    fixture.restart()
    before = fixture.login_posts
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: http.get("/api/status", headers=ADMIN).status_code, range(8)))
    assert statuses == [200] * 8
    assert fixture.login_posts == before + 1


def test_small_post_is_repeated_after_signing_in_again(
    http: httpx.Client, editor: tuple[FixtureEditor, ServerThread]
) -> None:
    fixture = editor[0]
    headers = {**ADMIN, "Origin": str(http.base_url), "Content-Type": "application/x-www-form-urlencoded"}
    assert http.post("/probe/signed-in-echo", content=b"a=1", headers=headers).json() == {"body_length": 3}
    fixture.restart()
    body = b"field=" + b"v" * 200_000
    response = http.post("/probe/signed-in-echo", content=body, headers=headers)
    assert response.status_code == 200 and response.json() == {"body_length": len(body)}


def test_streamed_post_is_not_repeated_but_the_next_request_works(
    http: httpx.Client, editor: tuple[FixtureEditor, ServerThread]
) -> None:
    fixture = editor[0]
    headers = {**ADMIN, "Origin": str(http.base_url), "Content-Type": "application/octet-stream"}
    assert http.get("/api/status", headers=ADMIN).status_code == 200
    fixture.restart()
    big = b"x" * (2 * 1024 * 1024)  # over what the proxy keeps for a repeat: streamed to the editor once
    response = http.post("/probe/signed-in-echo", content=big, headers=headers)
    assert response.status_code == 302 and response.headers["location"] == "/login"
    assert http.get("/login", headers={**ADMIN, "Accept": HTML}).headers["location"] == "/"
    page = http.get("/", headers={**ADMIN, "Accept": HTML})
    assert page.status_code == 200 and SIGNED_IN_AS_SERVICE in page.content


# --- the editor's own account pages are the sidecar's ---------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/login", "/"),
        ("/login?next=/x", "/"),
        ("/register", "/request-access"),
        ("/forgot-password", "/request-access"),
        ("/reset-password?token=abc", "/request-access"),
    ],
)
def test_editor_account_pages_redirect_to_the_sidecars(http: httpx.Client, path: str, location: str) -> None:
    response = http.get(path, headers={**ADMIN, "Accept": HTML})
    assert response.status_code == 302 and response.headers["location"] == location
    assert editor_cookies(response) == []


def test_posting_the_editors_login_form_changes_nothing(http: httpx.Client) -> None:
    form = {"username": fixture_editor.USERNAME, "password": fixture_editor.PASSWORD}
    response = http.post("/login", data=form, headers={**ADMIN, "Origin": str(http.base_url)})
    assert response.status_code == 302 and response.headers["location"] == "/"
    assert editor_cookies(response) == []


def test_editor_logout_offers_the_sidecars_sign_out(http: httpx.Client) -> None:
    response = http.get("/logout", headers={**ADMIN, "Accept": HTML})
    assert response.status_code == 200
    assert re.search(r'<form method="post" action="/auth/logout">', response.text)
    # The editor's session survives: the next page still opens.
    assert http.get("/", headers={**ADMIN, "Accept": HTML}).status_code == 200


def test_editor_mail_settings_cannot_be_changed(http: httpx.Client) -> None:
    headers = {**ADMIN, "Origin": str(http.base_url), "Content-Type": "application/json"}
    for method in ("POST", "PUT", "DELETE"):
        for target in ("/api/webeditor/email/settings", "/api/webeditor/email", "/api/webeditor%2Femail/test"):
            response = http.request(method, target, content=b"{}", headers=headers)
            assert response.status_code == 403, target
            assert response.json() == {"error": "email is configured in the sidecar/Authentik"}


def test_the_service_accounts_password_cannot_be_changed_in_the_editor(http: httpx.Client) -> None:
    form = {"current_password": fixture_editor.PASSWORD, "new_password": "changed"}
    response = http.post("/change_password", data=form, headers={**ADMIN, "Origin": str(http.base_url)})
    assert response.status_code == 403
    assert response.json() == {"error": "passwords are managed in the sidecar/Authentik"}


def test_authentik_mode_sends_sign_out_and_recovery_to_authentik(
    tmp_path: Path, editor: tuple[FixtureEditor, ServerThread]
) -> None:
    settings = bridged(
        tmp_path / "data",
        editor[1].url,
        mode="authentik",
        authentik_url="https://sso.example/",
        authentik_token=TOKEN,
    )
    # Authentik's API (which confirms the admin's groups) is a fake; everything else, the editor included, is real.
    sso = FakeAuthentik()
    sso.add_user("alice", "vid_admin")
    transport = SplitTransport({"sso.example": httpx.ASGITransport(app=sso.app)}, httpx.AsyncHTTPTransport())
    with TestClient(create_app(settings, transport=transport), client=("127.0.0.1", 40000)) as client:
        expected = {
            "/logout": "/outpost.goauthentik.io/sign_out",
            "/forgot-password": "https://sso.example/if/flow/default-recovery-flow/",
            "/reset-password": "https://sso.example/if/flow/default-recovery-flow/",
            "/register": "/request-access",
            "/login": "/",
        }
        for path, location in expected.items():
            response = client.get(path, headers={**ADMIN, "Accept": HTML}, follow_redirects=False)
            assert (response.status_code, response.headers["location"]) == (302, location), path


# --- who may pass, and failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EDITOR_PATHS)
def test_viewers_never_reach_any_editor_path(
    http: httpx.Client, editor: tuple[FixtureEditor, ServerThread], path: str
) -> None:
    before = editor[0].login_posts
    page = http.get(path, headers={**VIEWER, "Accept": HTML})
    assert page.status_code == 302 and page.headers["location"] == "/streams"
    api = http.get(path, headers=VIEWER)
    assert api.status_code == 403 and "running" not in api.text
    posted = http.post(path, content=b"x=1", headers={**VIEWER, "Origin": str(http.base_url)})
    assert posted.status_code == 403
    anonymous = http.get(path)
    assert anonymous.status_code == 401
    assert editor[0].login_posts == before


def test_wrong_service_credentials_are_a_clear_502_never_a_loop(
    tmp_path: Path, editor: tuple[FixtureEditor, ServerThread]
) -> None:
    fixture = editor[0]
    settings = bridged(tmp_path / "data", editor[1].url, password="not-the-password")
    with TestClient(create_app(settings), client=("127.0.0.1", 40000)) as client:
        before = fixture.login_posts
        api = client.get("/api/status", headers=ADMIN, follow_redirects=False)
        assert api.status_code == 502 and api.json() == {"error": SIGN_IN_FAILED}
        page = client.get("/", headers={**ADMIN, "Accept": HTML}, follow_redirects=False)
        assert page.status_code == 502 and "could not sign in to the editor" in page.text
        assert "not-the-password" not in page.text and "location" not in page.headers
        assert fixture.login_posts == before + 2  # one attempt per request


def test_password_never_reaches_the_logs(
    tmp_path: Path, editor: tuple[FixtureEditor, ServerThread], caplog: pytest.LogCaptureFixture
) -> None:
    settings = bridged(tmp_path / "data", editor[1].url, password="secret-in-no-log")
    caplog.set_level("DEBUG")
    with TestClient(create_app(settings), client=("127.0.0.1", 40000)) as client:
        assert client.get("/api/status", headers=ADMIN).status_code == 502
    assert "secret-in-no-log" not in caplog.text
    assert "secret-in-no-log" not in repr(settings)


def test_losing_vid_admin_locks_the_editor_at_the_next_request(http: httpx.Client, bridge_settings: Settings) -> None:
    """A local admin's groups are read on every request, so removing the group takes effect at once."""
    signed_in = http.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert signed_in.status_code == 200
    assert http.get("/", headers={"Accept": HTML}).status_code == 200
    store = Store(bridge_settings.database_path)
    try:
        with store.transaction() as db:
            assert store.remove_membership(db, "admin", "vid_admin")
        try:
            assert http.get("/api/status").status_code == 403
            page = http.get("/", headers={"Accept": HTML})
            assert page.status_code in (302, 403) and b"sidebar" not in page.content
        finally:
            with store.transaction() as db:
                store.add_membership(db, "admin", "vid_admin")
    finally:
        store.close()
    assert http.get("/api/status").status_code == 200
    http.cookies.clear()
