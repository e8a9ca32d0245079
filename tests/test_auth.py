"""Local-mode sign-in over HTTP: login, rate limits, logout, first admin, password change and /auth/verify."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import bcrypt
import pytest
from starlette.testclient import TestClient

from sidecar.app import create_app
from sidecar.bootstrap import bootstrap
from sidecar.runtime import Services, run_with_services
from sidecar.settings import Settings
from sidecar.store import Store
from tests.helpers import ADMIN_PASSWORD, API_KEY, TRUSTED_PEER, login

pytestmark = pytest.mark.usefixtures("cheap_bcrypt")

T = TypeVar("T")
ClientFactory = Callable[..., TestClient]
SettingsFactory = Callable[..., Settings]
BOB_PASSWORD = "bob-password-1"
SAME_ORIGIN = {"origin": "http://testserver"}
IDENTITY_HEADERS = ("x-authentik-username", "x-authentik-groups", "x-authentik-email", "x-authentik-name")


def add_viewer(settings: Settings, username: str = "bob", password: str = BOB_PASSWORD) -> None:
    async def work(services: Services) -> None:
        await services.users.add_user(username, ["vid_public"], password, actor="test")

    run_with_services(settings, work)


def set_active(settings: Settings, username: str, active: bool) -> None:
    async def work(services: Services) -> None:
        await services.directory.set_active(username, active)

    run_with_services(settings, work)


def json_login(client: TestClient, username: str = "admin", password: str = ADMIN_PASSWORD, **kw: Any) -> Any:
    return client.post("/auth/login", json={"username": username, "password": password}, **kw)


def token_for(client: TestClient, username: str = "admin", password: str = ADMIN_PASSWORD) -> str:
    response = json_login(client, username, password)
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    client.cookies.clear()
    return token


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
def bob(settings: Settings) -> str:
    add_viewer(settings)
    return "bob"


# --- login ----------------------------------------------------------------------------------------------------


def test_login_json_returns_token_24h_expiry_and_strict_httponly_cookie(client: TestClient) -> None:
    before = time.time()
    response = json_login(client)
    assert response.status_code == 200
    body = response.json()
    assert isinstance(body["token"], str) and len(body["token"]) >= 32
    assert before + 86400 - 5 <= body["expires_at"] <= time.time() + 86400 + 5
    cookie = response.headers["set-cookie"]
    attributes = {part.strip().split("=", 1)[0].lower() for part in cookie.split(";")}
    assert cookie.startswith(f"sidecar_session={body['token']};")
    assert {"httponly", "samesite", "path"} <= attributes
    assert "samesite=strict" in cookie.lower()
    assert "secure" not in attributes  # plain http here; https behind Caddy sets Secure (see trust-boundary tests)


def test_session_lifetime_follows_settings(make_client: ClientFactory, make_settings: SettingsFactory) -> None:
    short = make_client(app_settings=make_settings(session_ttl_seconds=3600))
    response = json_login(short)
    assert abs(response.json()["expires_at"] - (time.time() + 3600)) < 60
    assert "max-age=3600" in response.headers["set-cookie"].lower()


def test_bearer_token_signs_in_without_cookie(client: TestClient) -> None:
    token = token_for(client)
    assert client.get("/api/v1/me").status_code == 401  # the cookie jar is empty now
    me = client.get("/api/v1/me", headers=bearer(token))
    assert me.status_code == 200
    assert (me.json()["username"], me.json()["role"]) == ("admin", "admin")
    assert client.get("/api/v1/me", headers=bearer(token[:-2] + "xx")).status_code == 401


def test_wrong_password_is_400_invalid_password(client: TestClient) -> None:
    response = json_login(client, password="not-the-password")
    assert response.status_code == 400
    assert response.json()["error"] == "Invalid password"
    assert "set-cookie" not in response.headers


def test_unknown_user_gets_the_same_answer_as_a_wrong_password(client: TestClient) -> None:
    wrong_password = json_login(client, password="not-the-password")
    unknown_user = json_login(client, username="nobody-here", password="not-the-password")
    assert unknown_user.status_code == wrong_password.status_code == 400
    assert unknown_user.json() == wrong_password.json()
    assert unknown_user.json()["error"] == "Invalid password"


def test_deactivated_user_with_right_password_gets_the_same_answer(
    client: TestClient, settings: Settings, bob: str
) -> None:
    set_active(settings, bob, False)
    inactive = json_login(client, bob, BOB_PASSWORD)
    assert inactive.status_code == 400
    assert inactive.json() == json_login(client, "nobody-here", BOB_PASSWORD).json()


def test_unknown_user_costs_one_bcrypt_check_like_a_known_user(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No timing oracle: an unknown name does the same bcrypt work as a known name with a wrong password."""
    calls: list[bytes] = []
    real_checkpw = bcrypt.checkpw

    def counting_checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting_checkpw)
    json_login(client, password="not-the-password")
    known = len(calls)
    calls.clear()
    json_login(client, username="nobody-here", password="not-the-password")
    unknown = len(calls)
    assert known == 1
    assert unknown == known
    assert calls[0].startswith(b"$2")  # a real bcrypt hash was checked, not a shortcut


def test_per_user_rate_limit_blocks_even_the_right_password(
    make_client: ClientFactory, make_settings: SettingsFactory, bob: str
) -> None:
    client = make_client(app_settings=make_settings(login_rate_user="3/minute", login_rate_ip="100/minute"))
    for _ in range(3):
        assert json_login(client, password="not-the-password").status_code == 400
    blocked = json_login(client)
    assert blocked.status_code == 429
    assert "error" in blocked.json()
    assert "set-cookie" not in blocked.headers
    assert json_login(client, bob, BOB_PASSWORD).status_code == 200  # per user: bob is not affected


def test_per_ip_rate_limit_spans_usernames(make_client: ClientFactory, make_settings: SettingsFactory) -> None:
    client = make_client(app_settings=make_settings(login_rate_ip="3/minute", login_rate_user="100/minute"))
    attacker = {"x-forwarded-for": "198.51.100.10"}
    for name in ("alice", "bob", "carol"):
        assert json_login(client, name, "not-the-password", headers=attacker).status_code == 400
    assert json_login(client, headers=attacker).status_code == 429
    assert json_login(client, headers={"x-forwarded-for": "198.51.100.11"}).status_code == 200


def test_successful_logins_do_not_count_towards_the_limit(
    make_client: ClientFactory, make_settings: SettingsFactory
) -> None:
    client = make_client(app_settings=make_settings(login_rate_user="2/minute", login_rate_ip="2/minute"))
    for _ in range(4):
        assert json_login(client).status_code == 200


# --- logout ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["bearer", "cookie"])
def test_logout_invalidates_the_token_server_side(client: TestClient, how: str) -> None:
    response = json_login(client)
    token = response.json()["token"]
    if how == "bearer":
        client.cookies.clear()
        out = client.post("/auth/logout", headers=bearer(token))
    else:
        out = client.post("/auth/logout")
    assert out.status_code == 200
    assert "sidecar_session=" in out.headers["set-cookie"]  # the browser is told to drop it too
    client.cookies.clear()
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 401
    client.cookies.set("sidecar_session", token)
    assert client.get("/api/v1/me").status_code == 401
    assert client.get("/auth/verify", headers={"x-forwarded-uri": "/streams"}).status_code == 401


def test_logout_ends_only_that_session(client: TestClient) -> None:
    first = token_for(client)
    second = token_for(client)
    client.post("/auth/logout", headers=bearer(first))
    assert client.get("/api/v1/me", headers=bearer(first)).status_code == 401
    assert client.get("/api/v1/me", headers=bearer(second)).status_code == 200


def test_logout_with_foreign_origin_is_403_and_keeps_the_session(client: TestClient) -> None:
    token = token_for(client)
    refused = client.post("/auth/logout", headers={**bearer(token), "origin": "https://evil.example"})
    assert refused.status_code == 403
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 200


# --- form login and login CSRF -----------------------------------------------------------------------------------


def test_form_login_redirects_303_to_a_safe_next(client: TestClient) -> None:
    form = {"username": "admin", "password": ADMIN_PASSWORD, "next": "/streams?view=grid"}
    response = client.post("/auth/login", data=form, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/streams?view=grid"
    assert "sidecar_session=" in response.headers["set-cookie"]
    assert client.get("/api/v1/me").json()["username"] == "admin"


def test_form_login_failure_shows_the_page_again(client: TestClient) -> None:
    form = {"username": "admin", "password": "not-the-password", "next": "/streams"}
    response = client.post("/auth/login", data=form, follow_redirects=False)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "Invalid password" in response.text
    assert 'name="next" value="/streams"' in response.text


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://testserver.evil.example", "null", "http://testserver:8080"]
)
def test_login_post_with_foreign_origin_is_403(client: TestClient, origin: str) -> None:
    """Login CSRF: a foreign page must not sign the browser in to the attacker's account."""
    as_json = json_login(client, headers={"origin": origin})
    assert as_json.status_code == 403
    form = {"username": "admin", "password": ADMIN_PASSWORD}
    as_form = client.post("/auth/login", data=form, headers={"origin": origin}, follow_redirects=False)
    assert as_form.status_code == 403
    assert "set-cookie" not in as_json.headers and "set-cookie" not in as_form.headers


def test_login_post_with_own_origin_is_accepted(client: TestClient) -> None:
    assert json_login(client, headers=SAME_ORIGIN).status_code == 200


@pytest.mark.parametrize(
    "body",
    [{"username": "admin"}, {"password": ADMIN_PASSWORD}, {"username": ["admin"], "password": "x" * 10}, ["admin"]],
    ids=["no-password", "no-username", "username-list", "json-list"],
)
def test_malformed_login_is_400(client: TestClient, body: Any) -> None:
    response = client.post("/auth/login", json=body)
    assert response.status_code == 400
    assert "error" in response.json()


# --- first admin ------------------------------------------------------------------------------------------------


@pytest.fixture
def fresh(make_settings: SettingsFactory, tmp_path: Path) -> Settings:
    """A data dir that was never bootstrapped: no admin exists."""
    return make_settings(data_dir=tmp_path / "fresh")


@pytest.fixture
def fresh_client(fresh: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(fresh), client=TRUSTED_PEER) as client:
        yield client


def create_groups(settings: Settings, *names: str) -> None:
    async def work(services: Services) -> None:
        for name in names:
            await services.users.create_group(name, actor="test")

    run_with_services(settings, work)


FIRST_PASSWORD = "first-admin-pw-1"


def claim(client: TestClient, secret: str, username: str = "root", password: str = FIRST_PASSWORD, **kw: Any) -> Any:
    body = {"username": username, "password": password, "setup_secret": secret}
    return client.put("/auth/password", json=body, headers={**SAME_ORIGIN, **kw})


def test_first_admin_step_needs_the_setup_secret_and_creates_the_admin(fresh: Settings) -> None:
    bootstrap(fresh, out=lambda line: None, setup_secret=True)
    path = fresh.data_dir / "setup_secret"
    assert path.stat().st_mode & 0o777 == 0o600
    secret = path.read_text().strip()
    with TestClient(create_app(fresh), client=TRUSTED_PEER) as client:
        page = client.get("/auth/login")
        assert "Create the first admin" in page.text and secret not in page.text
        assert claim(client, "not-the-secret").status_code == 403
        assert claim(client, "").status_code == 401
        done = claim(client, secret)
        assert done.status_code == 200, done.text
        assert done.json()["token"] and done.json()["role"] == "admin"
        assert "sidecar_session=" in done.headers["set-cookie"]
        me = client.get("/api/v1/me").json()
        assert (me["username"], me["role"], me["groups"]) == ("root", "admin", ["vid_admin"])
        assert "Create the first admin" not in client.get("/auth/login").text
        assert not path.exists()  # one use

        client.cookies.clear()
        again = claim(client, secret, "mallory", "mallory-pw-123")
        assert again.status_code == 403 and "already exists" in again.json()["error"]
        assert json_login(client, "mallory", "mallory-pw-123").status_code == 400
        assert json_login(client, "root", "first-admin-pw-1").status_code == 200


def test_first_admin_step_refuses_a_short_password_and_stays_open(fresh: Settings) -> None:
    bootstrap(fresh, out=lambda line: None, setup_secret=True)
    secret = (fresh.data_dir / "setup_secret").read_text().strip()
    with TestClient(create_app(fresh), client=TRUSTED_PEER) as client:
        short = claim(client, secret, password="short")
        assert short.status_code == 400
        assert short.json()["field"] == "password"
        assert "Create the first admin" in client.get("/auth/login").text
        assert claim(client, secret).status_code == 200


def test_first_admin_step_with_foreign_origin_is_403(fresh: Settings) -> None:
    bootstrap(fresh, out=lambda line: None, setup_secret=True)
    secret = (fresh.data_dir / "setup_secret").read_text().strip()
    with TestClient(create_app(fresh), client=TRUSTED_PEER) as client:
        refused = claim(client, secret, origin="https://evil.example")
        assert refused.status_code == 403
        assert "Create the first admin" in client.get("/auth/login").text


def test_a_never_bootstrapped_data_dir_points_to_bootstrap_and_offers_no_claim(fresh_client: TestClient) -> None:
    page = fresh_client.get("/auth/login").text
    assert "Create the first admin" not in page and "sidecar bootstrap" in page
    refused = claim(fresh_client, "anything-at-all")
    assert refused.status_code == 403 and "bootstrap --setup-secret" in refused.json()["error"]
    assert fresh_client.get("/api/v1/me").status_code == 401


# --- password change ----------------------------------------------------------------------------------------------


def change(client: TestClient, token: str, current: str, new: str, **headers: str) -> Any:
    return client.put(
        "/auth/password",
        json={"current_password": current, "password": new},
        headers={**bearer(token), **SAME_ORIGIN, **headers},
    )


def test_password_change_requires_the_current_password(client: TestClient) -> None:
    token = token_for(client)
    refused = change(client, token, "not-the-password", "brand-new-password")
    assert refused.status_code == 400
    assert refused.json()["field"] == "current_password"
    assert json_login(client, password="brand-new-password").status_code == 400
    assert json_login(client).status_code == 200


def test_password_change_keeps_this_session_and_ends_the_others(client: TestClient, bob: str) -> None:
    current = token_for(client)
    other = token_for(client)
    bobs = token_for(client, bob, BOB_PASSWORD)
    done = change(client, current, ADMIN_PASSWORD, "brand-new-password")
    assert done.status_code == 200
    assert client.get("/api/v1/me", headers=bearer(current)).status_code == 200
    assert client.get("/api/v1/me", headers=bearer(other)).status_code == 401
    assert client.get("/api/v1/me", headers=bearer(bobs)).status_code == 200  # other users keep theirs
    assert json_login(client).status_code == 400
    assert json_login(client, password="brand-new-password").status_code == 200


def test_password_change_refuses_a_short_password(client: TestClient) -> None:
    token = token_for(client)
    refused = change(client, token, ADMIN_PASSWORD, "short-pw")
    assert refused.status_code == 400
    assert refused.json()["field"] == "password"
    assert json_login(client).status_code == 200


def test_password_change_needs_a_session(client: TestClient) -> None:
    body = {"current_password": ADMIN_PASSWORD, "password": "brand-new-password"}
    assert client.put("/auth/password", json=body).status_code == 401
    as_proxy_identity = client.put(
        "/auth/password", json=body, headers={"x-authentik-username": "admin", "x-authentik-groups": "vid_admin"}
    )
    assert as_proxy_identity.status_code == 401
    assert json_login(client).status_code == 200


def test_password_change_with_foreign_origin_is_403(client: TestClient) -> None:
    token = token_for(client)
    refused = change(client, token, ADMIN_PASSWORD, "brand-new-password", origin="https://evil.example")
    assert refused.status_code == 403
    assert json_login(client).status_code == 200


# --- /auth/verify (Caddy's forward_auth target) ----------------------------------------------------------------


def test_verify_with_a_valid_session_returns_identity_headers(client: TestClient) -> None:
    token = token_for(client)
    response = client.get("/auth/verify", headers={**bearer(token), "x-forwarded-uri": "/config"})
    assert response.status_code == 200
    assert response.headers["x-authentik-username"] == "admin"
    assert "vid_admin" in response.headers["x-authentik-groups"].split("|")
    for name in ("x-authentik-email", "x-authentik-name", "x-authentik-uid"):
        assert name in response.headers
    assert response.headers["x-authentik-uid"] == "admin"


def test_verify_session_cookie_works_too(client: TestClient) -> None:
    login(client)
    response = client.get("/auth/verify", headers={"x-forwarded-uri": "/"})
    assert response.status_code == 200
    assert response.headers["x-authentik-username"] == "admin"


def test_verify_without_session_sends_browsers_to_login(client: TestClient) -> None:
    response = client.get(
        "/auth/verify", headers={"accept": "text/html", "x-forwarded-uri": "/streams/cam1"}, follow_redirects=False
    )
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert location.path == "/auth/login"
    assert parse_qs(location.query)["next"] == ["/streams/cam1"]


def test_verify_keeps_the_whole_original_uri_in_next(client: TestClient) -> None:
    response = client.get(
        "/auth/verify", headers={"accept": "text/html", "x-forwarded-uri": "/streams?a=1&b=2"}, follow_redirects=False
    )
    assert parse_qs(urlsplit(response.headers["location"]).query) == {"next": ["/streams?a=1&b=2"]}


def test_verify_without_session_is_401_json_for_api_callers(client: TestClient) -> None:
    response = client.get("/auth/verify", headers={"x-forwarded-uri": "/api/v1/rules"})
    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorized"}
    assert not any(name in response.headers for name in IDENTITY_HEADERS)


def test_verify_viewer_on_editor_path_goes_to_streams_or_403(client: TestClient, bob: str) -> None:
    token = token_for(client, bob, BOB_PASSWORD)
    editor = {**bearer(token), "x-forwarded-uri": "/"}
    browser = client.get("/auth/verify", headers={**editor, "accept": "text/html"}, follow_redirects=False)
    assert browser.status_code == 302
    assert browser.headers["location"] == "/streams"
    api = client.get("/auth/verify", headers=editor)
    assert api.status_code == 403
    assert "error" in api.json()
    for uri in ("/config/paths", "/api/status"):
        assert client.get("/auth/verify", headers={**bearer(token), "x-forwarded-uri": uri}).status_code == 403
    for uri in ("/streams", "/streams/cam1", "/api/v1/me"):
        allowed = client.get("/auth/verify", headers={**bearer(token), "x-forwarded-uri": uri})
        assert allowed.status_code == 200, uri
        assert allowed.headers["x-authentik-username"] == "bob"
        assert allowed.headers["x-authentik-groups"] == "vid_public"


def test_verify_admin_reaches_the_editor(client: TestClient) -> None:
    token = token_for(client)
    assert client.get("/auth/verify", headers={**bearer(token), "x-forwarded-uri": "/"}).status_code == 200


def test_verify_never_trusts_spoofed_identity_headers(client: TestClient, bob: str) -> None:
    spoofed = {"X-Authentik-Username": "admin", "X-Authentik-Groups": "vid_admin", "x-forwarded-uri": "/"}
    anonymous = client.get("/auth/verify", headers=spoofed)
    assert anonymous.status_code == 401
    browser = client.get("/auth/verify", headers={**spoofed, "accept": "text/html"}, follow_redirects=False)
    assert browser.status_code == 302 and browser.headers["location"].startswith("/auth/login")
    token = token_for(client, bob, BOB_PASSWORD)
    as_bob = client.get("/auth/verify", headers={**spoofed, **bearer(token)})
    assert as_bob.status_code == 403
    on_streams = client.get("/auth/verify", headers={**spoofed, **bearer(token), "x-forwarded-uri": "/streams"})
    assert on_streams.headers["x-authentik-username"] == "bob"
    assert on_streams.headers["x-authentik-groups"] == "vid_public"


def test_verify_forwards_api_key_requests_for_the_api_only(client: TestClient) -> None:
    api = client.get("/auth/verify", headers={"x-api-key": API_KEY, "x-forwarded-uri": "/api/v1/rules"})
    assert api.status_code == 200
    assert not any(name in api.headers for name in IDENTITY_HEADERS)
    wrong = client.get("/auth/verify", headers={"x-api-key": "wrong-key", "x-forwarded-uri": "/api/v1/rules"})
    assert wrong.status_code == 401
    editor = client.get("/auth/verify", headers={"x-api-key": API_KEY, "x-forwarded-uri": "/"})
    assert editor.status_code == 401


# --- other modes and deactivation -------------------------------------------------------------------------------


def test_authentik_mode_has_no_local_sign_in(make_client: ClientFactory, make_settings: SettingsFactory) -> None:
    client = make_client(app_settings=make_settings(mode="authentik"))
    answers = [
        client.get("/auth/login", headers={"accept": "text/html"}),
        json_login(client),
        client.get("/auth/verify", headers={"accept": "text/html"}, follow_redirects=False),
        client.get("/auth/verify"),
        client.put("/auth/password", json={"username": "x", "password": "long-enough-pw"}),
        client.post("/auth/logout"),
    ]
    for response in answers:
        assert response.status_code == 404, response.request.url
        assert response.headers["content-type"].startswith("application/json")
        assert "error" in response.json()


def test_deactivated_users_sessions_stop_working(client: TestClient, settings: Settings, bob: str) -> None:
    token = token_for(client, bob, BOB_PASSWORD)
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 200
    set_active(settings, bob, False)
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 401
    assert client.get("/auth/verify", headers={**bearer(token), "x-forwarded-uri": "/streams"}).status_code == 401
    set_active(settings, bob, True)
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 401  # reactivation does not revive it


def test_session_stops_working_even_if_deactivation_left_the_session_row(
    client: TestClient, settings: Settings, bob: str
) -> None:
    """Resolving a token re-checks the account: a deactivation written by another process still takes effect."""
    token = token_for(client, bob, BOB_PASSWORD)
    store = Store(settings.database_path)
    try:
        with store.transaction() as db:
            store.set_active(db, bob, False)  # the flag only; the session row stays
    finally:
        store.close()
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 401
    assert client.get("/auth/verify", headers={**bearer(token), "x-forwarded-uri": "/streams"}).status_code == 401


def test_password_change_while_no_admin_is_active_changes_the_callers_password(
    client: TestClient, settings: Settings, bob: str
) -> None:
    set_active(settings, "admin", False)
    token = token_for(client, bob, BOB_PASSWORD)
    done = change(client, token, BOB_PASSWORD, "bobs-new-password")
    assert done.status_code == 200
    assert done.json() == {"status": "password changed"}
    assert json_login(client, bob, "bobs-new-password").status_code == 200
    assert json_login(client, "admin", "bobs-new-password").status_code == 400
