"""The /streams page as the server renders it: a frame whose data attributes configure streams.js, no stream or rule
the viewer may not see, the CSRF token of the signed-in user only, and the overlay modules and vendored hls.js."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from sidecar.app import create_app
from sidecar.runtime import Services, run_with_services
from sidecar.settings import Settings
from tests.fake_mediamtx import create_fake_mediamtx
from tests.helpers import ADMIN_PASSWORD, API_KEY, TRUSTED_PEER, bootstrapped_settings, login

pytestmark = pytest.mark.usefixtures("cheap_bcrypt")

ClientFactory = Callable[..., TestClient]
KEY = {"x-api-key": API_KEY}
HTML = {"accept": "text/html"}
BOB_PASSWORD = "bob-password-1"
ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "sidecar" / "overlay_static"
MODULES = ("streams.js", "player.js", "api.js")


class Elements(HTMLParser):
    """Every start tag with its attributes, and the elements by id."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))

    def by_id(self, element_id: str) -> dict[str, str] | None:
        return next((attrs for _, attrs in self.tags if attrs.get("id") == element_id), None)

    def app(self) -> dict[str, str]:
        found = self.by_id("streams-app")
        assert found is not None, "the page has no #streams-app root"
        return found


def add_viewer(settings: Settings, username: str = "bob", groups: tuple[str, ...] = ("vid_public",)) -> str:
    async def work(services: Services) -> None:
        await services.users.add_user(username, list(groups), BOB_PASSWORD, actor="test")

    run_with_services(settings, work)
    return username


def go_live(client: TestClient, path: str) -> None:
    """What MediaMTX's runOnReady hook tells the sidecar."""
    body = {"path": path, "query": "", "source_type": "rtspSession", "source_id": str(uuid.uuid4())}
    assert client.post("/mediamtx/hooks/ready", json=body, headers=KEY).status_code == 204


Visit = Callable[[str, str], TestClient]


@pytest.fixture
def site(settings: Settings, make_client: ClientFactory) -> Visit:
    """Rules for two audiences; `site(username, password)` signs in to an app where one stream of each is live."""
    add_viewer(settings)
    setup = make_client()
    for pattern, groups in (("live/public/*", ["vid_public"]), ("live/secret/*", ["vid_private"])):
        response = setup.put("/api/v1/rules", json={"pattern": pattern, "groups": groups}, headers=KEY)
        assert response.status_code == 200, response.text

    def visit(username: str, password: str) -> TestClient:
        client = signed_in(make_client, username, password)
        go_live(client, "live/public/cam1")  # live streams are remembered per app, so tell each app
        go_live(client, "live/secret/cam9")
        return client

    return visit


def signed_in(make_client: ClientFactory, username: str, password: str, settings: Settings | None = None) -> TestClient:
    client = make_client(app_settings=settings)
    login(client, username, password)
    return client


# --- what a viewer's page holds -------------------------------------------------------------------------------------


def test_a_viewers_page_names_no_stream_and_no_rule(site: Visit) -> None:
    bob = site("bob", BOB_PASSWORD)
    response = bob.get("/streams", headers=HTML)
    assert response.status_code == 200
    for hidden in ("live/secret", "cam9", "vid_private", "live/public", "cam1"):
        assert hidden not in response.text, hidden
    page = Elements(response.text)
    assert page.app()["data-is-admin"] == "false"
    for admin_only in ("rules-section", "rule-form", "sources-section", "source-form"):
        assert page.by_id(admin_only) is None, admin_only
    # The list streams.js renders comes from the API, which answers bob with his stream only.
    streams = bob.get("/api/v1/streams").json()
    assert [stream["name"] for stream in streams["streams"]] == ["live/public/cam1"]
    assert "groups" not in streams
    assert "rule" not in streams["streams"][0]


def test_an_admins_page_has_the_admin_sections_but_no_rule_data(site: Visit) -> None:
    admin = site("admin", ADMIN_PASSWORD)
    response = admin.get("/streams", headers=HTML)
    assert response.status_code == 200
    page = Elements(response.text)
    assert page.app()["data-is-admin"] == "true"
    for element_id in ("rules-section", "rules-body", "rule-form", "rule-pattern", "rule-groups", "sources-section"):
        assert page.by_id(element_id) is not None, element_id
    for element_id in ("sources-body", "source-form", "source-name", "source-url", "source-on-demand"):
        assert page.by_id(element_id) is not None, element_id
    for data in ("live/secret", "live/public", "vid_private"):
        assert data not in response.text, data
    streams = admin.get("/api/v1/streams").json()
    assert {stream["name"] for stream in streams["streams"]} == {"live/public/cam1", "live/secret/cam9"}


def test_the_page_frame_has_the_elements_streams_js_needs(site: Visit) -> None:
    page = Elements(site("bob", BOB_PASSWORD).get("/streams", headers=HTML).text)
    status = page.by_id("status")
    assert status is not None
    assert status["aria-live"] == "polite"
    assert status["role"] == "status"
    for element_id in ("player-panel", "player", "player-title", "player-stop", "stream-list", "streams-empty"):
        assert page.by_id(element_id) is not None, element_id
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]
    assert {"type": "module", "src": "/overlay/streams.js"} in scripts
    assert not any(name.startswith("on") for _, attrs in page.tags for name in attrs), "inline event handler"


# --- data attributes and the CSRF token ---------------------------------------------------------------------------


def test_data_attributes_carry_the_settings(tmp_path: Path, make_client: ClientFactory) -> None:
    settings = bootstrapped_settings(
        tmp_path / "other", hls_url="https://video.example.org:8888", viewer_share_links=True
    )
    add_viewer(settings)
    bob = signed_in(make_client, "bob", BOB_PASSWORD, settings)
    app = Elements(bob.get("/streams", headers=HTML).text).app()
    assert app["data-hls-url"] == "https://video.example.org:8888"
    assert app["data-viewer-share-links"] == "true"
    assert app["data-is-admin"] == "false"
    assert app["data-csrf-token"]


def test_the_defaults_leave_the_hls_url_to_the_browser_and_share_links_to_admins(site: Visit) -> None:
    app = Elements(site("bob", BOB_PASSWORD).get("/streams", headers=HTML).text).app()
    assert app["data-hls-url"] == ""
    assert app["data-viewer-share-links"] == "false"


def test_a_hostile_hls_url_setting_is_escaped(tmp_path: Path, make_client: ClientFactory) -> None:
    settings = bootstrapped_settings(tmp_path / "other", hls_url='https://x.example/"><script>alert(1)</script>')
    add_viewer(settings)
    response = signed_in(make_client, "bob", BOB_PASSWORD, settings).get("/streams", headers=HTML)
    assert "<script>alert(1)" not in response.text
    assert Elements(response.text).app()["data-hls-url"] == 'https://x.example/"><script>alert(1)</script>'


def test_the_embedded_csrf_token_is_the_signed_in_users(site: Visit) -> None:
    admin = site("admin", ADMIN_PASSWORD)
    bob = site("bob", BOB_PASSWORD)
    admin_token = Elements(admin.get("/streams", headers=HTML).text).app()["data-csrf-token"]
    bob_token = Elements(bob.get("/streams", headers=HTML).text).app()["data-csrf-token"]
    rule = {"pattern": "live/public/cam1", "groups": ["vid_public"]}
    origin = {"origin": "http://testserver"}
    # The admin's own token lets the page write; bob's token (or none) does not.
    assert admin.put("/api/v1/rules", json=rule, headers={**origin, "x-csrf-token": admin_token}).status_code == 200
    assert admin.put("/api/v1/rules", json=rule, headers={**origin, "x-csrf-token": bob_token}).status_code == 403
    assert admin.put("/api/v1/rules", json=rule, headers=origin).status_code == 403
    # Bob's token is good for his own writes (a playback token for his stream).
    token = bob.post(
        "/api/v1/streams/token", json={"path": "live/public/cam1"}, headers={**origin, "x-csrf-token": bob_token}
    )
    assert token.status_code == 200, token.text


def test_no_token_or_page_for_someone_not_signed_in(site: Visit, make_client: ClientFactory) -> None:
    anonymous = make_client()
    response = anonymous.get("/streams", headers=HTML, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/auth/login?next=/streams"
    followed = anonymous.get("/streams", headers=HTML)
    assert "data-csrf-token" not in followed.text
    assert "streams-app" not in followed.text


def test_no_token_for_someone_without_a_vid_group(settings: Settings, make_client: ClientFactory) -> None:
    add_viewer(settings, "dave", ())
    dave = make_client()
    assert dave.post("/auth/login", json={"username": "dave", "password": BOB_PASSWORD}).status_code == 200
    response = dave.get("/streams", headers=HTML)
    assert response.status_code == 403
    assert "data-csrf-token" not in response.text
    assert "streams-app" not in response.text


# --- static modules and the vendored player library ---------------------------------------------------------------


@pytest.mark.parametrize("name", MODULES)
def test_the_page_modules_are_served(client: TestClient, name: str) -> None:
    response = client.get(f"/overlay/{name}")
    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]


def test_the_vendored_hls_js_is_served(client: TestClient) -> None:
    assert (STATIC / "vendor" / "hls.min.js").is_file(), "hls.js is not vendored: run `make install`"
    response = client.get("/overlay/vendor/hls.min.js")
    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]
    assert ".Hls=" in response.text  # the UMD build that defines window.Hls
    licence = client.get("/overlay/vendor/hls.js.LICENSE")
    assert licence.status_code == 200
    assert "Apache License" in licence.text


def test_hls_js_is_a_locked_1x_dependency_without_install_scripts() -> None:
    package = json.loads((ROOT / "package.json").read_text())
    assert package["private"] is True
    assert "scripts" not in package
    lock = json.loads((ROOT / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/hls.js"]["version"].startswith("1.")
    assert set(lock["packages"]) == {"", "node_modules/hls.js"}


@pytest.mark.parametrize("name", MODULES)
def test_the_modules_build_the_page_without_html_strings_or_inline_handlers(name: str) -> None:
    source = (STATIC / name).read_text()
    for risky in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", 'setAttribute("on'):
        assert risky not in source, (name, risky)
    assert not re.search(r"https?://", source), f"{name} must not load anything from another site"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("name", MODULES)
def test_the_modules_parse_as_es_modules(name: str) -> None:
    node = shutil.which("node")
    assert node is not None
    source = (STATIC / name).read_bytes()
    result = subprocess.run([node, "--input-type=module", "--check"], input=source, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr.decode()


VIEWER_HEADERS = {"x-authentik-username": "v", "x-authentik-groups": "vid_public"}
ADMIN_HEADERS = {"x-authentik-username": "a", "x-authentik-groups": "vid_admin"}


def test_mediamtx_failure_details_reach_admins_but_not_viewers(make_settings: Callable[..., Settings]) -> None:
    fake = create_fake_mediamtx()
    settings = bootstrapped_settings(make_settings().data_dir, mediamtx_api_url="http://mediamtx.test")
    app = create_app(settings, transport=httpx.ASGITransport(app=fake.app))
    with TestClient(app, client=TRUSTED_PEER) as client:
        fake.fail_next(status=500, times=100)
        viewer = client.get(
            "/api/v1/streams", headers={"x-authentik-username": "v", "x-authentik-groups": "vid_public"}
        )
        admin = client.get("/api/v1/streams", headers={"x-authentik-username": "a", "x-authentik-groups": "vid_admin"})
    assert viewer.status_code == 503
    assert "MediaMTX failed" not in viewer.text and "500" not in viewer.json()["error"]
    assert admin.status_code == 503
    assert "MediaMTX failed (500)" in admin.json()["error"]


def test_no_demo_note_outside_the_demo(client: TestClient) -> None:
    login(client)
    assert 'id="demo-note"' not in client.get("/streams", headers={"Accept": "text/html"}).text
