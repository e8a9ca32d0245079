"""Trust boundaries over HTTP: who may assert an identity, and which client-sent headers are never believed.

Each test is named after the attack it stops (SECURITY.md items in brackets).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from sidecar.app import create_app
from sidecar.settings import Settings
from tests.helpers import ADMIN_PASSWORD, API_KEY, TRUSTED_PEER, UNTRUSTED_PEER, bootstrapped_settings, login

pytestmark = pytest.mark.usefixtures("cheap_bcrypt")

ClientFactory = Callable[..., TestClient]
ADMIN_IDENTITY = {"X-Authentik-Username": "mallory", "X-Authentik-Groups": "vid_admin"}
EVIL = "evil.example"


@pytest.fixture(scope="module")
def shared_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """One bootstrapped data dir for the read-only tests of this module (building an app per case is slow)."""
    return bootstrapped_settings(tmp_path_factory.mktemp("trust") / "data")


@pytest.fixture(scope="module")
def proxy(shared_settings: Settings) -> Iterator[TestClient]:
    """Read-only requests as Caddy (a trusted peer) would send them."""
    with TestClient(create_app(shared_settings), client=TRUSTED_PEER) as client:
        yield client


@pytest.fixture(scope="module")
def untrusted(shared_settings: Settings) -> Iterator[TestClient]:
    """Read-only requests straight from a client that is not a trusted proxy."""
    with TestClient(create_app(shared_settings), client=UNTRUSTED_PEER) as client:
        yield client


@pytest.fixture
def echo() -> Iterator[TestClient]:
    """A bare app that answers with the raw header pairs it received: proves what the test client really sends."""

    async def headers(request: Request) -> JSONResponse:
        return JSONResponse([[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers.raw])

    with TestClient(Starlette(routes=[Route("/", headers)])) as client:
        yield client


def assert_off_site_free(location: str) -> None:
    """A redirect target that stays on this site: relative, no scheme-relative `//host`, no foreign host anywhere."""
    parts = urlsplit(location)
    assert parts.scheme == "" and parts.netloc == "", location
    assert not location.startswith(("//", "/\\")), location
    for values in parse_qs(parts.query).values():
        for value in values:
            assert EVIL not in value, location


# --- 1. identity headers only from trusted proxies -------------------------------------------------------------


def test_identity_headers_from_untrusted_peer_are_anonymous(untrusted: TestClient) -> None:
    """[1] A direct request carrying X-Authentik-* but not from Caddy gets nothing."""
    me = untrusted.get("/api/v1/me", headers=ADMIN_IDENTITY)
    assert me.status_code == 401
    assert me.json() == {"error": "Unauthorized"}

    rules = untrusted.get("/api/v1/rules", headers=ADMIN_IDENTITY)
    assert rules.status_code == 401
    assert rules.json() == {"error": "Unauthorized"}

    users_api = untrusted.get("/users", headers=ADMIN_IDENTITY)
    assert users_api.status_code == 401

    users_page = untrusted.get("/users", headers={**ADMIN_IDENTITY, "accept": "text/html"}, follow_redirects=False)
    assert users_page.status_code in (302, 303)
    assert users_page.headers["location"].startswith("/auth/login")
    assert "mallory" not in users_page.text


def test_identity_headers_from_trusted_proxy_are_honoured(proxy: TestClient) -> None:
    """The counterpart of the test above: the same headers from Caddy's address do sign in."""
    me = proxy.get("/api/v1/me", headers=ADMIN_IDENTITY)
    assert me.status_code == 200
    assert (me.json()["username"], me.json()["role"]) == ("mallory", "admin")
    assert proxy.get("/api/v1/rules", headers=ADMIN_IDENTITY).status_code == 200
    page = proxy.get("/users", headers={**ADMIN_IDENTITY, "accept": "text/html"})
    assert page.status_code == 200
    assert "mallory" in page.text


def test_identity_headers_from_an_address_outside_custom_trusted_proxies_are_anonymous(
    make_client: ClientFactory, make_settings: Callable[..., Settings]
) -> None:
    """Loopback is trusted only by default: with SIDECAR_TRUSTED_PROXIES narrowed, 127.0.0.1 is a stranger."""
    narrowed = make_settings(trusted_proxies=["10.9.9.9/32"])
    assert make_client(app_settings=narrowed).get("/api/v1/me", headers=ADMIN_IDENTITY).status_code == 401
    inside = make_client(peer=("10.9.9.9", 5000), app_settings=narrowed)
    assert inside.get("/api/v1/me", headers=ADMIN_IDENTITY).json()["role"] == "admin"


# --- 3/4. header spelling tricks --------------------------------------------------------------------------------


def test_test_client_sends_duplicate_and_underscore_headers_unchanged(echo: TestClient) -> None:
    """Precondition for the two attacks below: the client really puts these pairs on the wire."""
    sent = echo.get(
        "/",
        headers=[
            ("X-Authentik-Groups", "vid_public"),
            ("X-Authentik-Groups", "vid_admin"),
            ("X_Authentik_Groups", "vid_admin"),
            ("x-authentik_groups", "vid_admin"),
        ],
    ).json()
    assert ["x-authentik-groups", "vid_public"] in sent
    assert ["x-authentik-groups", "vid_admin"] in sent
    assert ["x_authentik_groups", "vid_admin"] in sent
    assert ["x-authentik_groups", "vid_admin"] in sent


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Authentik-Groups", "vid_public"), ("X-Authentik-Groups", "vid_admin")],
        [("X-Authentik-Groups", "vid_public"), ("x-authentik-groups", "vid_admin")],
        [("X-Authentik-Groups", "vid_admin"), ("X-Authentik-Groups", "vid_admin")],
    ],
    ids=["different-values", "different-case", "same-value"],
)
def test_duplicated_groups_header_is_rejected_not_merged(proxy: TestClient, headers: list[tuple[str, str]]) -> None:
    """[4] A second X-Authentik-Groups appended by a client must not be merged into the real one."""
    response = proxy.get("/api/v1/me", headers=[("X-Authentik-Username", "eve"), *headers])
    assert response.status_code == 400
    body = response.json()
    assert "x-authentik-groups" in body["error"].lower()
    assert body["field"].lower() == "x-authentik-groups"


def test_duplicated_username_header_is_rejected(proxy: TestClient) -> None:
    response = proxy.get(
        "/api/v1/rules",
        headers=[
            ("X-Authentik-Username", "eve"),
            ("X-Authentik-Username", "admin"),
            ("X-Authentik-Groups", "vid_admin"),
        ],
    )
    assert response.status_code == 400
    assert "x-authentik-username" in response.json()["error"].lower()


@pytest.mark.parametrize("spelling", ["X_Authentik_Groups", "x-authentik_groups", "X_AUTHENTIK_GROUPS"])
def test_underscore_groups_header_does_not_grant_admin(proxy: TestClient, spelling: str) -> None:
    """[3] An underscore alias next to the real header adds nothing (WSGI would fold it onto the same key)."""
    headers = [("X-Authentik-Username", "eve"), ("X-Authentik-Groups", "vid_public"), (spelling, "vid_admin")]
    me = proxy.get("/api/v1/me", headers=headers)
    assert me.status_code == 200
    assert me.json()["role"] == "viewer"
    assert me.json()["groups"] == ["vid_public"]
    assert proxy.get("/api/v1/rules", headers=headers).status_code == 403


def test_underscore_username_header_alone_does_not_sign_in(proxy: TestClient) -> None:
    headers = [("X_Authentik_Username", "admin"), ("X_Authentik_Groups", "vid_admin")]
    assert proxy.get("/api/v1/me", headers=headers).status_code == 401


# --- 5/6. exact-token groups ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "groups",
    [
        "VID_ADMIN",
        "Vid_Admin",
        "vid_admin_old",
        "notvid_admin",
        "vid_public|vid_admin_old",
        "vid_public| vid_admin",
        "vid_public,vid_admin",
        "vid_public vid_admin",
        "vid_public;vid_admin",
    ],
)
def test_lookalike_admin_group_is_not_admin(proxy: TestClient, groups: str) -> None:
    """[5] Admin needs the exact token `vid_admin`: no case folding, substrings, trimming or other separators."""
    headers = {"X-Authentik-Username": "eve", "X-Authentik-Groups": groups}
    response = proxy.get("/api/v1/rules", headers=headers)
    assert response.status_code == 403
    assert "error" in response.json()
    me = proxy.get("/api/v1/me", headers=headers)
    assert me.status_code == 403 or me.json()["role"] == "viewer"


@pytest.mark.parametrize("groups", ["vid_admin|", "|vid_admin", "vid_public||vid_admin"])
def test_empty_tokens_around_separator_neither_add_nor_hide_groups(proxy: TestClient, groups: str) -> None:
    """Splitting on `|` drops empty tokens only; the exact token `vid_admin` is still there (and nothing else)."""
    me = proxy.get("/api/v1/me", headers={"X-Authentik-Username": "ann", "X-Authentik-Groups": groups})
    assert me.json()["role"] == "admin"
    assert "" not in me.json()["groups"]
    assert "vid_admin" in me.json()["groups"]


@pytest.mark.parametrize("groups", ["tak_users", "tak_users|tak_admin", "", "|", "authentik Users"])
def test_identity_without_prefixed_group_has_no_access(proxy: TestClient, groups: str) -> None:
    """[6] Signed in via SSO but without any vid_* group: 403, with a JSON error that says what would help."""
    headers = {"X-Authentik-Username": "carol", "X-Authentik-Groups": groups}
    for path in ("/api/v1/me", "/streams", "/api/v1/rules"):
        response = proxy.get(path, headers=headers)
        assert response.status_code == 403, path
        assert "vid_" in response.json()["error"]


def test_no_access_page_names_the_groups_that_grant_access(proxy: TestClient) -> None:
    headers = {"X-Authentik-Username": "carol", "X-Authentik-Groups": "tak_users", "accept": "text/html"}
    page = proxy.get("/users", headers=headers)
    assert page.status_code == 403
    assert page.headers["content-type"].startswith("text/html")
    assert "<code>vid_</code>" in page.text
    assert "<code>vid_admin</code>" in page.text


def test_authentik_admins_group_is_admin_by_default(proxy: TestClient) -> None:
    headers = {"X-Authentik-Username": "ops", "X-Authentik-Groups": "authentik Admins"}
    assert proxy.get("/api/v1/rules", headers=headers).status_code == 200


# --- 9. X-Forwarded-* only from Caddy ----------------------------------------------------------------------------


def test_forwarded_for_from_untrusted_peer_cannot_dodge_ip_rate_limit(
    make_client: ClientFactory, make_settings: Callable[..., Settings]
) -> None:
    """A fresh X-Forwarded-For per attempt must not give a direct client a fresh rate-limit bucket."""
    app_settings = make_settings(login_rate_ip="2/minute", login_rate_user="100/minute")
    direct = make_client(peer=UNTRUSTED_PEER, app_settings=app_settings)
    for n in range(2):
        failed = direct.post(
            "/auth/login",
            json={"username": f"guess{n}", "password": "wrong-password"},
            headers={"x-forwarded-for": f"198.51.100.{n}"},
        )
        assert failed.status_code == 400
    blocked = direct.post(
        "/auth/login",
        json={"username": "admin", "password": ADMIN_PASSWORD},
        headers={"x-forwarded-for": "198.51.100.99"},
    )
    assert blocked.status_code == 429


def test_forwarded_for_from_trusted_proxy_picks_the_rate_limit_bucket(
    make_client: ClientFactory, make_settings: Callable[..., Settings]
) -> None:
    """Behind Caddy every client shares the proxy's address, so the limit must key on the forwarded client."""
    app_settings = make_settings(login_rate_ip="2/minute", login_rate_user="100/minute")
    proxied = make_client(app_settings=app_settings)
    for n in range(2):
        proxied.post(
            "/auth/login",
            json={"username": f"guess{n}", "password": "wrong-password"},
            headers={"x-forwarded-for": "198.51.100.1"},
        )
    same = proxied.post(
        "/auth/login",
        json={"username": "admin", "password": ADMIN_PASSWORD},
        headers={"x-forwarded-for": "198.51.100.1"},
    )
    assert same.status_code == 429
    other = proxied.post(
        "/auth/login",
        json={"username": "admin", "password": ADMIN_PASSWORD},
        headers={"x-forwarded-for": "198.51.100.2"},
    )
    assert other.status_code == 200


@pytest.mark.parametrize("via", ["proxy", "untrusted"])
@pytest.mark.parametrize(
    "uri", ["//evil.example", "//evil.example/streams", "/\\evil.example", "https://evil.example/", "/%0d%0aLocation:"]
)
def test_forwarded_uri_never_builds_an_off_site_redirect(request: pytest.FixtureRequest, via: str, uri: str) -> None:
    caller: TestClient = request.getfixturevalue(via)
    response = caller.get(
        "/auth/verify", headers={"x-forwarded-uri": uri, "accept": "text/html"}, follow_redirects=False
    )
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith("/auth/login?next=")
    assert_off_site_free(location)


def test_forwarded_uri_from_untrusted_peer_is_ignored(proxy: TestClient, untrusted: TestClient) -> None:
    headers = {"x-forwarded-uri": "/streams/cam1", "accept": "text/html"}
    from_caddy = proxy.get("/auth/verify", headers=headers, follow_redirects=False)
    assert parse_qs(urlsplit(from_caddy.headers["location"]).query)["next"] == ["/streams/cam1"]
    direct = untrusted.get("/auth/verify", headers=headers, follow_redirects=False)
    assert parse_qs(urlsplit(direct.headers["location"]).query)["next"] == ["/"]


def test_forwarded_proto_from_untrusted_peer_does_not_change_own_origin(make_client: ClientFactory) -> None:
    """Same-origin checks compare with our own scheme; only Caddy may say the client used https."""
    body = {"username": "admin", "password": ADMIN_PASSWORD}
    spoofed = {"origin": "https://testserver", "x-forwarded-proto": "https"}
    direct = make_client(peer=UNTRUSTED_PEER).post("/auth/login", json=body, headers=spoofed)
    assert direct.status_code == 403
    via_caddy = make_client().post("/auth/login", json=body, headers=spoofed)
    assert via_caddy.status_code == 200
    assert "secure" in via_caddy.headers["set-cookie"].lower()


def test_login_next_never_redirects_off_site(client: TestClient) -> None:
    targets = [
        "//evil.example",
        "https://evil.example",
        "http://evil.example/x",
        "/\\evil.example",
        "\\\\evil.example",
        "/\r\n//evil.example",
        "///evil.example",
    ]
    for target in targets:
        form = {"username": "admin", "password": ADMIN_PASSWORD, "next": target}
        response = client.post("/auth/login", data=form, follow_redirects=False)
        assert response.status_code == 303, target
        assert_off_site_free(response.headers["location"])
        page = client.get("/auth/login", params={"next": target})
        assert EVIL not in page.text, target


# --- 6/10. API key and health endpoints --------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["wrong-key", "", API_KEY + "x", API_KEY[:-1], API_KEY.upper()])
def test_wrong_api_key_is_401_even_with_trusted_identity_headers(proxy: TestClient, key: str) -> None:
    """A bad key is a failed login, not an anonymous request that then falls through to identity headers."""
    response = proxy.get("/api/v1/rules", headers={"x-api-key": key, **ADMIN_IDENTITY})
    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorized"}


def test_wrong_api_key_is_401_even_with_a_valid_session(client: TestClient) -> None:
    login(client)
    assert client.get("/api/v1/rules").status_code == 200
    assert client.get("/api/v1/rules", headers={"x-api-key": "wrong-key"}).status_code == 401


@pytest.mark.parametrize("peer", [TRUSTED_PEER, UNTRUSTED_PEER], ids=["trusted", "untrusted"])
def test_right_api_key_gets_service_access_without_csrf(make_client: ClientFactory, peer: tuple[str, int]) -> None:
    automation = make_client(peer=peer)
    key = {"x-api-key": API_KEY}
    assert automation.get("/api/v1/me", headers=key).json()["role"] == "service"
    put = automation.put("/api/v1/rules", json={"pattern": "live/**", "groups": ["vid_public"]}, headers=key)
    assert put.status_code == 200
    listed = automation.get("/api/v1/rules", headers=key).json()["rules"]
    assert {"pattern": "live/**", "groups": ["vid_public"]} in listed


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/version", "/auth/status"])
def test_health_endpoints_answer_anonymous_callers(untrusted: TestClient, path: str) -> None:
    assert untrusted.get(path).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/healthz/%2e%2e/api/v1/rules",
        "/healthz/%2E%2E/api/v1/rules",
        "/healthz%2f..%2fapi/v1/rules",
        "/healthz/api/v1/rules",
        "/api/v1/rules?x=/healthz",
        "/api/v1/rules?path=/healthz&next=/readyz",
        "/api/v1/rules/healthz",
        "/api/v1/rules;/healthz",
        "/auth/status/%2e%2e/%2e%2e/api/v1/rules",
        "/version/../api/v1/rules",
    ],
)
def test_health_endpoints_do_not_unlock_other_routes(untrusted: TestClient, path: str) -> None:
    """[10] No health path spelling reaches a protected handler without credentials."""
    response = untrusted.get(path)
    assert response.status_code in (401, 404), path
    assert "rules" not in response.json()
