"""The injection proxy in front of a real (uvicorn-served) fixture editor, with the sidecar itself under uvicorn."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.testclient import TestClient

from sidecar.app import STATIC_DIR, create_app
from sidecar.processes import free_port
from sidecar.settings import Settings
from sidecar.store import Store
from sidecar.web.editor_proxy import OVERLAY_TAGS
from tests import fixture_editor
from tests.fixture_editor import FixtureEditor
from tests.helpers import ADMIN_PASSWORD, bootstrapped_settings

HTML = "text/html,application/xhtml+xml,*/*;q=0.8"
ADMIN = {"X-Authentik-Username": "alice", "X-Authentik-Groups": "vid_admin"}
VIEWER = {"X-Authentik-Username": "bob", "X-Authentik-Groups": "vid_public"}


class ServerThread:
    """An ASGI app served by uvicorn on a free loopback port, in a thread of this process."""

    def __init__(self, app: Starlette) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture(scope="module")
def editor() -> Iterator[tuple[FixtureEditor, ServerThread]]:
    fixture = FixtureEditor()
    with ServerThread(fixture.app) as server:
        yield fixture, server


@pytest.fixture(scope="module")
def proxy_settings(tmp_path_factory: pytest.TempPathFactory, editor: tuple[FixtureEditor, ServerThread]) -> Settings:
    return bootstrapped_settings(tmp_path_factory.mktemp("proxy") / "data", editor_url=editor[1].url)


@pytest.fixture(scope="module")
def sidecar(proxy_settings: Settings) -> Iterator[ServerThread]:
    with ServerThread(create_app(proxy_settings)) as server:
        yield server


@pytest.fixture
def http(sidecar: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sidecar.url, timeout=20) as client:
        yield client


@pytest.fixture
def direct(editor: tuple[FixtureEditor, ServerThread]) -> Iterator[httpx.Client]:
    """Straight to the editor, for comparing."""
    with httpx.Client(base_url=editor[1].url, timeout=20) as client:
        yield client


def with_overlay(page: bytes, before: bytes) -> bytes:
    at = page.rfind(before)
    return page[:at] + OVERLAY_TAGS + page[at:]


def audit_events(settings: Settings) -> list[tuple[str, str, str]]:
    store = Store(settings.database_path)
    try:
        return [(event.actor, event.action, event.target) for event in store.list_audit(limit=1000)]
    finally:
        store.close()


# --- pages get the overlay -------------------------------------------------------------------------------------


def test_page_gets_the_overlay_once_before_the_last_body_close(http: httpx.Client) -> None:
    response = http.get("/probe/page", headers={**ADMIN, "Accept": HTML})
    assert response.status_code == 200
    assert response.content == with_overlay(fixture_editor.PAGE, b"</BODY >")
    assert response.content.count(b"/overlay/overlay.js") == 1
    assert response.headers["content-length"] == str(len(response.content))
    assert "etag" not in response.headers
    assert response.headers["cache-control"] == "no-cache, no-store, must-revalidate"


def test_page_without_body_element_gets_the_overlay_at_the_end(http: httpx.Client) -> None:
    response = http.get("/probe/fragment", headers={**ADMIN, "Accept": HTML})
    assert response.content == fixture_editor.NO_BODY_PAGE + OVERLAY_TAGS
    assert response.headers["content-length"] == str(len(response.content))


def test_compressed_page_is_decompressed_and_amended(http: httpx.Client) -> None:
    response = http.get("/probe/gzip", headers={**ADMIN, "Accept": HTML, "Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert response.content == with_overlay(fixture_editor.PAGE, b"</BODY >")
    assert response.headers["content-length"] == str(len(response.content))
    assert response.headers["vary"] == "Accept-Encoding"


def test_pages_are_requested_uncompressed(http: httpx.Client) -> None:
    seen = http.get("/probe/echo", headers={**ADMIN, "Accept": HTML, "Accept-Encoding": "gzip, br"}).json()
    assert ["accept-encoding", "identity"] in seen["headers"]
    seen = http.get("/probe/echo", headers={**ADMIN, "Accept": "application/json", "Accept-Encoding": "gzip"}).json()
    assert ["accept-encoding", "gzip"] in seen["headers"]


def test_error_pages_pass_through_untouched(http: httpx.Client, direct: httpx.Client) -> None:
    response = http.get("/probe/missing", headers={**ADMIN, "Accept": HTML})
    assert response.status_code == 404
    assert response.content == direct.get("/probe/missing").content


def test_editor_index_through_the_proxy_after_the_editors_own_login(http: httpx.Client) -> None:
    first = http.get("/", headers={**ADMIN, "Accept": HTML})
    assert first.status_code == 302 and first.headers["location"] == "/login"
    login_page = http.get("/login", headers={**ADMIN, "Accept": HTML})
    assert b'action="/login"' in login_page.content and login_page.content.count(OVERLAY_TAGS) == 1
    form = {"username": fixture_editor.USERNAME, "password": fixture_editor.PASSWORD}
    signed_in = http.post("/login", data=form, headers={**ADMIN, "Accept": HTML, "Origin": str(http.base_url)})
    assert signed_in.status_code == 302 and signed_in.headers["location"] == "/"
    assert signed_in.headers["set-cookie"].startswith("session=")
    index = http.get("/", headers={**ADMIN, "Accept": HTML})
    assert index.status_code == 200
    assert b'<nav class="sidebar" id="sidebar">' in index.content
    assert index.content.count(OVERLAY_TAGS) == 1
    assert index.content.index(OVERLAY_TAGS) < index.content.lower().rindex(b"</body>")


# --- CSP ---------------------------------------------------------------------------------------------------------


def test_blocking_csp_gets_self_and_nothing_else(http: httpx.Client) -> None:
    policy = http.get("/probe/csp/blocking", headers={**ADMIN, "Accept": HTML}).headers["content-security-policy"]
    assert policy == "default-src 'self'; img-src data:; frame-ancestors 'none'"
    assert "unsafe" not in policy


def test_csp_with_script_src_widens_only_that_directive(http: httpx.Client) -> None:
    policy = http.get("/probe/csp/script", headers={**ADMIN, "Accept": HTML}).headers["content-security-policy"]
    assert policy == "script-src 'self' https://cdn.example; object-src 'none'"


def test_csp_that_already_allows_the_overlay_is_unchanged(http: httpx.Client) -> None:
    policy = http.get("/probe/csp/fine", headers={**ADMIN, "Accept": HTML}).headers["content-security-policy"]
    assert policy == fixture_editor.CSP_FINE


# --- everything else byte for byte -------------------------------------------------------------------------------


def test_binary_answer_is_byte_identical_with_its_headers(http: httpx.Client, direct: httpx.Client) -> None:
    proxied = http.get("/probe/blob.bin", headers=ADMIN)
    original = direct.get("/probe/blob.bin")
    assert proxied.content == original.content == fixture_editor.BLOB
    for name in ("content-type", "content-length", "cache-control", "x-probe"):
        assert proxied.headers[name] == original.headers[name]


def test_json_answer_is_byte_identical(http: httpx.Client, direct: httpx.Client) -> None:
    not_signed_in = http.get("/api/status", headers=ADMIN)
    assert not_signed_in.status_code == 401
    assert not_signed_in.content == direct.get("/api/status").content


def test_editor_session_of_one_browser_is_never_replayed_for_another(http: httpx.Client) -> None:
    form = {"username": fixture_editor.USERNAME, "password": fixture_editor.PASSWORD}
    signed_in = http.post("/login", data=form, headers={**ADMIN, "Origin": str(http.base_url)})
    assert signed_in.status_code == 302
    assert http.get("/api/status", headers=ADMIN).status_code == 200
    http.cookies.clear()  # another browser, without the editor's cookie
    assert http.get("/api/status", headers=ADMIN).status_code == 401
    seen = http.get("/probe/echo", headers=ADMIN).json()
    assert not any(name == "cookie" for name, _ in seen["headers"])


def test_large_body_is_streamed_not_buffered(http: httpx.Client, editor: tuple[FixtureEditor, ServerThread]) -> None:
    fixture = editor[0]
    fixture.release.clear()
    started = time.monotonic()
    received = bytearray()
    with http.stream("GET", "/probe/stream", headers=ADMIN) as response:
        for chunk in response.iter_raw():
            if not fixture.release.is_set():
                # The editor holds back all but its first chunk until now: a buffering proxy would still be waiting.
                assert time.monotonic() - started < 5
                fixture.release.set()
            received.extend(chunk)
    assert bytes(received) == b"".join(fixture_editor.stream_body())


def test_cookies_and_redirects_pass_through(http: httpx.Client) -> None:
    response = http.get("/probe/cookies", headers=ADMIN)
    cookies = response.headers.get_list("set-cookie")
    assert len(cookies) == 2
    assert cookies[0].startswith("first=1;") and cookies[1].startswith("second=2;")
    relative = http.get("/logout", headers=ADMIN)
    assert relative.status_code == 302 and relative.headers["location"] == "/login"


def test_absolute_redirect_to_the_editors_address_becomes_a_path(http: httpx.Client) -> None:
    response = http.get("/probe/absolute-redirect", headers=ADMIN)
    assert response.status_code == 302
    assert response.headers["location"] == "/login?from=absolute"


def test_request_reaches_the_editor_as_sent_without_identity(
    http: httpx.Client, editor: tuple[FixtureEditor, ServerThread]
) -> None:
    body = b"field=" + b"v" * 50_000
    token = http.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}).json()["token"]
    http.cookies.clear()
    headers = {
        **ADMIN,
        "X-Authentik-Email": "spoof@example.org",
        "X-Probe-Header": "kept",
        "Cookie": f"session=editor-cookie; sidecar_session={token}",
        "Origin": str(http.base_url),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    seen = http.post("/probe/echo?b=2&a=%2F1", content=body, headers=headers).json()
    names = {name for name, _ in seen["headers"]}
    assert not any("authentik" in name for name in names)
    assert ["x-probe-header", "kept"] in seen["headers"]
    assert ["host", f"127.0.0.1:{editor[1].port}"] in seen["headers"]
    assert ["cookie", "session=editor-cookie"] in seen["headers"]
    assert seen["method"] == "POST" and seen["query"] == "b=2&a=%2F1"
    assert seen["body_length"] == len(body) and seen["body_head"] == body[:64].decode()
    for method in ("PUT", "PATCH", "DELETE"):
        assert http.request(method, "/probe/echo", headers=headers).json()["method"] == method


def test_state_change_from_another_site_is_refused(http: httpx.Client) -> None:
    response = http.post("/probe/echo", content=b"x=1", headers={**ADMIN, "Origin": "https://evil.example"})
    assert response.status_code == 403
    response = http.post("/probe/echo", content=b"x=1", headers=ADMIN)
    assert response.status_code == 403


# --- who may pass -----------------------------------------------------------------------------------------------


def test_viewer_is_sent_to_the_stream_list(http: httpx.Client) -> None:
    page = http.get("/", headers={**VIEWER, "Accept": HTML})
    assert page.status_code == 302 and page.headers["location"] == "/streams"
    assert http.get("/api/status", headers=VIEWER).status_code == 403


def test_anonymous_browser_is_sent_to_sign_in_and_api_clients_get_401(http: httpx.Client) -> None:
    page = http.get("/probe/page?tab=logs", headers={"Accept": HTML})
    assert page.status_code == 302
    assert page.headers["location"] == "/auth/login?next=/probe/page%3Ftab%3Dlogs"
    api = http.get("/api/status")
    assert api.status_code == 401 and api.json() == {"error": "Unauthorized"}


def test_no_video_group_is_refused(http: httpx.Client) -> None:
    response = http.get("/", headers={"X-Authentik-Username": "carol", "X-Authentik-Groups": "tak_ops", "Accept": HTML})
    assert response.status_code == 403


def test_local_admin_session_reaches_the_editor_and_keeps_its_token(http: httpx.Client) -> None:
    signed_in = http.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert signed_in.status_code == 200
    seen = http.get("/probe/echo").json()
    assert not any(name == "cookie" and "sidecar_session" in value for name, value in seen["headers"])
    http.cookies.clear()


def test_editor_changes_are_audited_one_by_one_and_reading_once_per_person(
    http: httpx.Client, proxy_settings: Settings
) -> None:
    auditor = {"X-Authentik-Username": "auditor", "X-Authentik-Groups": "vid_admin"}
    for target in ("/probe/echo?audit=1", "/static/app.js", "/api/status", "/probe/echo"):
        http.get(target, headers=auditor)
    for _ in range(2):
        http.post("/probe/echo", content=b"x=1", headers={**auditor, "Origin": str(http.base_url)})
    http.get("/probe/echo", headers={"X-Authentik-Username": "peeker", "X-Authentik-Groups": "vid_public"})
    events = audit_events(proxy_settings)
    mine = [event for event in events if event[0] == "auditor"]
    assert mine.count(("auditor", "editor.change", "POST /probe/echo")) == 2  # every change, with the person
    assert [event for event in mine if event[1] == "editor.open"] == [("auditor", "editor.open", "/probe/echo")]
    assert not any(actor == "peeker" for actor, _, _ in events)


def test_sidecar_routes_stay_the_sidecars(http: httpx.Client) -> None:
    assert http.get("/healthz").status_code == 200
    assert http.get("/overlay/overlay.js").headers["content-type"].startswith("text/javascript")
    missing = http.get("/api/v1/no-such-thing", headers=ADMIN)
    assert missing.status_code == 404 and missing.json() == {"error": "Not found"}


# --- without an editor ---------------------------------------------------------------------------------------------


def test_editor_down_is_a_502_without_traceback(tmp_path: Path) -> None:
    settings = bootstrapped_settings(tmp_path / "data", editor_url=f"http://127.0.0.1:{free_port()}")
    with TestClient(create_app(settings), client=("127.0.0.1", 40000)) as client:
        api = client.get("/api/status", headers=ADMIN)
        assert api.status_code == 502
        assert api.json() == {"error": "The MediaMTX editor is not reachable right now; try again shortly."}
        page = client.get("/", headers={**ADMIN, "Accept": HTML})
        assert page.status_code == 502 and "Traceback" not in page.text


def test_without_editor_url_there_is_no_catch_all(tmp_path: Path) -> None:
    settings = bootstrapped_settings(tmp_path / "data")
    with TestClient(create_app(settings), client=("127.0.0.1", 40000)) as client:
        assert client.get("/probe/page", headers=ADMIN).status_code == 404


def test_gzip_fixture_really_compresses(direct: httpx.Client) -> None:
    with direct.stream("GET", "/probe/gzip") as response:
        raw = b"".join(response.iter_raw())
    assert gzip.decompress(raw) == fixture_editor.PAGE


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_overlay_script_is_valid_javascript() -> None:
    source = (STATIC_DIR / "overlay.js").read_text()
    done = subprocess.run(
        ["node", "--input-type=module", "--check"], input=source, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_editor_bodies_may_exceed_the_sidecars_own_limit(http: httpx.Client) -> None:
    headers = {**ADMIN, "Origin": str(http.base_url), "Content-Type": "application/octet-stream"}
    upload = b"u" * (1024 * 1024)
    seen = http.post("/probe/echo", content=upload, headers=headers).json()
    assert seen["body_length"] == len(upload)
    # The sidecar's own routes, and its paths the proxy refuses, keep the small limit.
    for target in ("/api/v1/users", "/users/nobody/groups", "/auth/login"):
        assert http.post(target, content=b"x" * 100_000, headers=headers).status_code == 413, target


def test_a_streamed_body_whose_sender_lost_admin_meanwhile_never_reaches_the_editor_whole(
    http: httpx.Client, proxy_settings: Settings, editor: tuple[FixtureEditor, ServerThread]
) -> None:
    """A body without Content-Length (or too large to read first) streams to the editor, all but its end: who sent
    it is decided again once it is complete, and a sender who lost admin meanwhile gets a 403."""
    store = Store(proxy_settings.database_path)
    try:
        password_hash = bcrypt.hashpw(b"held-password-1", bcrypt.gensalt(4)).decode()
        with store.transaction() as db:
            store.insert_user(db, "held", email="", name="", password_hash=password_hash, active=True)
            store.add_membership(db, "held", "vid_admin")
        token = http.post("/auth/login", json={"username": "held", "password": "held-password-1"}).json()["token"]
        http.cookies.clear()

        def body() -> Iterator[bytes]:
            yield b"first=1&"
            time.sleep(0.5)  # the sidecar has read the headers and let an admin in
            with store.transaction() as db:  # another admin removes them while the body is on its way
                store.remove_membership(db, "held", "vid_admin")
            yield b"second=2"

        headers = {"Authorization": f"Bearer {token}", "Origin": str(http.base_url)}
        answer = http.post("/probe/echo", content=body(), headers=headers)
        assert answer.status_code == 403, answer.text
        assert "your access changed" in answer.json()["error"]
        events = audit_events(proxy_settings)
        assert ("held", "editor.change", "POST /probe/echo") in events  # the attempt is on record
    finally:
        store.close()
