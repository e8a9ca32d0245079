"""Cross-site request forgery and login CSRF: a foreign page driving a signed-in browser.

Every state-changing route of the sidecar (found from the app's own route table, so a new `/api/v1/` write is
attacked too), the local sign-in routes, the public forms, the share-link token URL and the editor behind the
sidecar's proxy are sent requests the way a hostile page would make the victim's browser send them: the session
cookie attached, but no `X-CSRF-Token`, a token that is not the victim's (another user's, another sidecar's,
expired, truncated, the public form's), a foreign, `null` or look-alike `Origin`, only a foreign `Referer`, simple
`text/plain` and form bodies that skip the CORS preflight, and method-override tricks. Each must be refused with
403 and the JSON `{"error": ...}` shape (or, for tricks that name no route, any JSON 4xx) and must change nothing:
the rules, users and groups, publishers, share links, access requests, audit log, sessions and the requests the
editor received are compared before and after. A few of the attacks are replayed through the real Caddy with the
shipped Caddyfile, after signing in through it.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from starlette.routing import Route
from starlette.testclient import TestClient

from sidecar.app import create_app
from sidecar.keys import digest
from sidecar.runtime import Services, run_with_services
from sidecar.settings import Settings
from tests.helpers import ADMIN_PASSWORD, API_KEY, TRUSTED_PEER, bootstrapped_settings, cheapen_bcrypt
from tests.processes_fixtures import ADMIN_PASSWORD as CADDY_ADMIN_PASSWORD
from tests.processes_fixtures import Endpoint, SidecarInstance

OWN = "http://testserver"
EVIL = "https://evil.example"
EDITOR_URL = "http://editor.test"
KEY = {"x-api-key": API_KEY}
BOB_PASSWORD = "bob-password-for-csrf-1"
CAROL_PASSWORD = "carol-password-for-csrf-1"
MALLORY_PASSWORD = "mallory-password-for-csrf-1"
TWIN_PASSWORD = "twin-password-for-csrf-1"
# An admin whose username equals the payload of the public request-access form token.
TWIN = "request-access"
SAFE = {"GET", "HEAD", "OPTIONS"}
FORM = "application/x-www-form-urlencoded"


# --- the routes under attack --------------------------------------------------------------------------------------


def _state_changing_api_routes() -> list[tuple[str, str]]:
    """(method, path template) of every write the app routes under /api/v1/, read from its own route table."""
    unused = Path(tempfile.gettempdir()) / "csrf-route-table"
    settings = Settings(_env_file=None, data_dir=unused, editor_url=None)  # type: ignore[call-arg]
    found = set()
    for route in create_app(settings).routes:
        if isinstance(route, Route) and route.methods and route.path.startswith("/api/"):
            found.update((method, route.path) for method in route.methods - SAFE)
    return sorted(found, key=lambda pair: (pair[1], pair[0]))


API_WRITES = _state_changing_api_routes()
assert ("PUT", "/api/v1/rules") in API_WRITES and ("PATCH", "/api/v1/users/{username}") in API_WRITES
API_IDS = [f"{method} {path}" for method, path in API_WRITES]


@dataclass
class Site:
    """One bootstrapped local-mode app with people, a rule, a publisher, a share link, a pending access request
    and a set-password link, and the sessions of its users (sent as cookies, the way a browser attaches them)."""

    client: TestClient
    secret: str
    database: Path
    sessions: dict[str, str] = field(default_factory=dict)
    csrf: dict[str, str] = field(default_factory=dict)
    editor_seen: list[tuple[str, str]] = field(default_factory=list)
    request_id: int = 0
    publisher: str = "cam-publisher"
    share_id: str = ""
    share_secret: str = ""
    password_secret: str = ""

    def cookie(self, who: str = "admin") -> dict[str, str]:
        return {"cookie": f"sidecar_session={self.sessions[who]}"}

    def browser(self, who: str = "admin", **headers: str) -> dict[str, str]:
        """What the victim's browser attaches by itself (the cookie), plus what the attacking page chose."""
        return {**self.cookie(who), **{k.replace("_", "-"): v for k, v in headers.items()}}

    def legit(self, who: str = "admin") -> dict[str, str]:
        """A genuine same-origin write from the sidecar's own page."""
        return self.browser(who, origin=OWN, x_csrf_token=self.csrf[who])


def _concrete(site: Site, method: str, template: str) -> tuple[str, dict[str, Any]]:
    """A request on the route that would change something real if it were accepted."""
    known: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
        ("PUT", "/api/v1/rules"): ("/api/v1/rules", {"pattern": "**", "groups": ["vid_public"]}),
        ("DELETE", "/api/v1/rules"): ("/api/v1/rules?pattern=live/**", {}),
        ("PATCH", "/api/v1/users/{username}"): ("/api/v1/users/bob", {"is_active": False}),
        ("PUT", "/api/v1/users/{username}/groups/{group}"): ("/api/v1/users/bob/groups/vid_admin", {}),
        ("POST", "/api/v1/users/{username}/groups/{group}"): ("/api/v1/users/bob/groups/vid_admin", {}),
        ("DELETE", "/api/v1/users/{username}/groups/{group}"): ("/api/v1/users/bob/groups/vid_public", {}),
        ("POST", "/api/v1/groups"): ("/api/v1/groups", {"name": "vid_csrf"}),
        ("POST", "/api/v1/users/{username}/recovery-link"): ("/api/v1/users/bob/recovery-link", {}),
        ("POST", "/api/v1/users/{username}/recovery-email"): ("/api/v1/users/bob/recovery-email", {}),
        ("POST", "/api/v1/access-requests/{id}/approve"): (
            f"/api/v1/access-requests/{site.request_id}/approve",
            {"groups": ["vid_public"]},
        ),
        ("POST", "/api/v1/access-requests/{id}/reject"): (
            f"/api/v1/access-requests/{site.request_id}/reject",
            {"message": "no"},
        ),
        ("POST", "/api/v1/publishers"): ("/api/v1/publishers", {"name": "csrf-publisher", "pattern": "**"}),
        ("DELETE", "/api/v1/publishers/{name}"): (f"/api/v1/publishers/{site.publisher}", {}),
        ("POST", "/api/v1/share-links"): ("/api/v1/share-links", {"path": "live/cam1", "ttl": "never"}),
        ("DELETE", "/api/v1/share-links/{id}"): (f"/api/v1/share-links/{site.share_id}", {}),
        ("POST", "/api/v1/sources"): ("/api/v1/sources", {"name": "csrf/cam", "source": "rtsp://evil.example/x"}),
        ("PATCH", "/api/v1/sources/{name:path}"): ("/api/v1/sources/live/cam1", {"source": "rtsp://evil.example/"}),
        ("DELETE", "/api/v1/sources/{name:path}"): ("/api/v1/sources/live/cam1", {}),
        ("POST", "/api/v1/streams/token"): ("/api/v1/streams/token", {"path": "live/cam1"}),
        ("POST", "/api/v1/users"): ("/api/v1/users", {"username": "mallory", "groups": ["vid_admin"]}),
    }
    if (method, template) in known:
        return known[(method, template)]
    # A write added after this module: still attacked, with the placeholders filled in.
    return re.sub(r"\{[^}]+\}", "bob", template), {}


# --- fixtures -----------------------------------------------------------------------------------------------------


class _Body(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"editor": "changed something"}'


def _seed(settings: Settings) -> tuple[int, str]:
    """People, a vid_ops group, a pending access request and a set-password link for bob; (request id, secret)."""
    password_secret = uuid.uuid4().hex + uuid.uuid4().hex

    async def work(services: Services) -> int:
        await services.users.create_group("vid_ops", actor="test")
        await services.users.add_user("bob", ["vid_public"], BOB_PASSWORD, actor="test")
        await services.users.add_user("carol", ["vid_public"], CAROL_PASSWORD, actor="test")
        await services.users.add_user("mallory", ["vid_public"], MALLORY_PASSWORD, actor="test")
        await services.users.add_user(TWIN, ["vid_admin"], TWIN_PASSWORD, actor="test")
        now = time.time()
        with services.store.transaction() as db:
            request_id = services.store.insert_access_request(
                db,
                username="ada",
                email="ada@example.org",
                name="Ada",
                org="Analytical unit",
                reason="drills",
                requested_group="vid_public",
                status="pending",
                now=now,
            )
            services.store.insert_password_link(db, digest(password_secret), "bob", now, now + 3600)
        return request_id

    with pytest.MonkeyPatch.context() as patch:
        cheapen_bcrypt(patch)
        return run_with_services(settings, work), password_secret


def _sign_in(client: TestClient, username: str, password: str) -> tuple[str, str]:
    """A session token and its CSRF token, as the sidecar's own login page and /api/v1/me hand them out."""
    done = client.post("/auth/login", json={"username": username, "password": password}, headers={"origin": OWN})
    assert done.status_code == 200, done.text
    token = done.json()["token"]
    client.cookies.clear()
    me = client.get("/api/v1/me", headers={"cookie": f"sidecar_session={token}"})
    assert me.status_code == 200, me.text
    return token, me.json()["csrf_token"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    settings = bootstrapped_settings(tmp_path_factory.mktemp("csrf") / "data", editor_url=EDITOR_URL)
    request_id, password_secret = _seed(settings)
    seen: list[tuple[str, str]] = []

    def editor(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path))
        return httpx.Response(200, headers={"content-type": "application/json"}, stream=_Body())

    app = create_app(settings, transport=httpx.MockTransport(editor))
    with TestClient(app, client=TRUSTED_PEER, base_url=OWN) as client:
        found = Site(
            client=client,
            secret=client.app.state.services.secrets.session_secret,  # type: ignore[attr-defined]
            database=settings.database_path,
            editor_seen=seen,
            request_id=request_id,
            password_secret=password_secret,
        )
        for username, password in (
            ("admin", ADMIN_PASSWORD),
            ("bob", BOB_PASSWORD),
            ("carol", CAROL_PASSWORD),
            (TWIN, TWIN_PASSWORD),
        ):
            found.sessions[username], found.csrf[username] = _sign_in(client, username, password)
        assert client.put(
            "/api/v1/rules", json={"pattern": "live/**", "groups": ["vid_public"]}, headers=KEY
        ).is_success
        made = client.post("/api/v1/publishers", json={"name": found.publisher, "pattern": "live/cam1"}, headers=KEY)
        assert made.status_code == 201, made.text
        link = client.post("/api/v1/share-links", json={"path": "live/cam1", "ttl": "24h"}, headers=found.legit())
        assert link.status_code == 201, link.text
        found.share_id, found.share_secret = link.json()["id"], link.json()["url"].rsplit("/", 1)[1]
        yield found


@pytest.fixture(scope="module")
def other_sidecars_token(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A genuine CSRF token for a user named `admin`, handed out by another sidecar (its own session secret)."""
    settings = bootstrapped_settings(tmp_path_factory.mktemp("csrf-other") / "data")
    with TestClient(create_app(settings), client=TRUSTED_PEER, base_url=OWN) as client:
        return _sign_in(client, "admin", ADMIN_PASSWORD)[1]


def database_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of a sidecar's SQLite store (read-only): rules, users, memberships, sessions,
    audit, publishers, share links and their uses, access requests, set-password links, issued tokens, outbox."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        names = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {name: sorted(db.execute(f'SELECT * FROM "{name}"').fetchall(), key=repr) for name in names}  # noqa: S608


def changed_tables(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))


def snapshot(site: Site) -> dict[str, Any]:
    """Everything a forged write could touch: the whole store, and what the editor was sent."""
    return {**database_rows(site.database), "(editor requests)": list(site.editor_seen)}


def assert_refused(response: httpx.Response, *, status: int | None = 403, because: tuple[str, ...] = ()) -> None:
    """The JSON error shape with a 4xx (exactly `status` when given), mentioning one of `because` when given."""
    assert 400 <= response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    if status is not None:
        assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json"), response.headers["content-type"]
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    if because:
        assert any(word in body["error"].lower() for word in because), body["error"]
    assert "set-cookie" not in response.headers


REFUSED_FOR_CSRF = ("csrf", "origin")
REFUSED_FOR_ORIGIN = ("origin",)


def attempt(site: Site, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> httpx.Response:
    """Send one attack and check that it left no trace."""
    before = snapshot(site)
    response = site.client.request(method, path, headers=headers, **kwargs)
    after = snapshot(site)
    changed = changed_tables(before, after)
    assert not changed, f"{method} {path} changed {changed} ({response.status_code} {response.text[:200]})"
    assert response.status_code != 500, response.text[:300]
    return response


# --- every API write, from a foreign page --------------------------------------------------------------------------

# How the hostile page shapes the request; the browser adds the admin's session cookie by itself.
API_ATTACKS: dict[str, dict[str, str]] = {
    "no-token-foreign-origin": {"origin": EVIL},
    "stolen-token-foreign-origin": {"origin": EVIL, "x_csrf_token": "<token>"},
    "stolen-token-null-origin": {"origin": "null", "x_csrf_token": "<token>"},
    "stolen-token-lookalike-origin": {"origin": "http://testserver.evil.example", "x_csrf_token": "<token>"},
    "stolen-token-foreign-referer-no-origin": {"referer": f"{EVIL}/page?from={OWN}/", "x_csrf_token": "<token>"},
    "stolen-token-no-origin-no-referer": {"x_csrf_token": "<token>"},
    "no-token-own-origin": {"origin": OWN},
}


@pytest.mark.parametrize("attack", list(API_ATTACKS))
@pytest.mark.parametrize(("method", "template"), API_WRITES, ids=API_IDS)
def test_forged_api_write_from_a_foreign_page_is_refused_and_changes_nothing(
    site: Site, method: str, template: str, attack: str
) -> None:
    path, body = _concrete(site, method, template)
    chosen = {k: (site.csrf["admin"] if v == "<token>" else v) for k, v in API_ATTACKS[attack].items()}
    response = attempt(site, method, path, site.browser("admin", **chosen), json=body)
    assert_refused(response, because=REFUSED_FOR_CSRF)


@pytest.mark.parametrize("content_type", ["text/plain", "text/plain;charset=UTF-8", FORM, "multipart/form-data"])
@pytest.mark.parametrize(("method", "template"), API_WRITES, ids=API_IDS)
def test_simple_request_body_that_skips_the_preflight_is_refused(
    site: Site, method: str, template: str, content_type: str
) -> None:
    """`<form enctype=text/plain>` smuggles a JSON body with no preflight; the browser adds the cookie and Origin."""
    path, body = _concrete(site, method, template)
    if content_type == FORM:
        content = "&".join(f"{k}={v}" for k, v in body.items()).encode()
    elif content_type == "multipart/form-data":
        content_type = "multipart/form-data; boundary=x"
        parts = [f'--x\r\ncontent-disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in body.items()]
        content = ("".join(parts) + "--x--\r\n").encode()
    else:
        content = httpx.Request("POST", "http://x", json=body).content  # JSON text under a simple content type
    headers = site.browser("admin", origin=EVIL, content_type=content_type)
    response = attempt(site, method, path, headers, content=content)
    assert_refused(response, because=REFUSED_FOR_CSRF)


def test_harness_control_the_genuine_page_write_goes_through(site: Site) -> None:
    """Control for every attack here: the same cookie, token and own Origin are accepted (on a no-op write)."""
    done = site.client.put("/api/v1/users/admin/groups/vid_admin", headers=site.legit())
    assert done.status_code == 200 and done.json()["changed"] is False, done.text


@pytest.mark.parametrize(
    "origin",
    [
        "http://testserver.evil.example",
        "http://evil-testserver",
        "http://testserver.",
        "http://testserver:8080",
        "http://testserver:80",
        "https://testserver",
        "ws://testserver",
        "http://testserver@evil.example",
        "http://evil.example@testserver",
        "http://testserver/evil",
        "http://testserver, https://evil.example",
        "https://evil.example http://testserver",
        "http://testserver%2Eevil.example",
        "HTTP://TESTSERVER.EVIL.EXAMPLE",
        "file://",
        "null",
        "",
    ],
)
def test_lookalike_origin_cannot_pass_for_the_sidecars_own(site: Site, origin: str) -> None:
    """Escalation by a forged membership write: host suffixes, ports, schemes, userinfo, lists and paths."""
    headers = site.browser("admin", origin=origin, x_csrf_token=site.csrf["admin"])
    response = attempt(site, "PUT", "/api/v1/users/bob/groups/vid_admin", headers)
    assert_refused(response, because=REFUSED_FOR_ORIGIN)


@pytest.mark.parametrize(
    "referer",
    [
        f"{EVIL}/",
        "http://testserver.evil.example/users",
        f"{EVIL}/?next=http://testserver/users",
        "http://testserver@evil.example/users",
        "http://testserver:8080/users",
        "https://testserver/users",
        "//testserver/users",
        "testserver/users",
        "about:blank",
        "null",
        "",
    ],
)
def test_referer_fallback_cannot_be_fooled_when_origin_is_missing(site: Site, referer: str) -> None:
    headers = site.browser("admin", referer=referer, x_csrf_token=site.csrf["admin"])
    response = attempt(site, "PATCH", "/api/v1/users/bob", headers, json={"is_active": False})
    assert_refused(response, because=REFUSED_FOR_ORIGIN)


def test_configured_extra_origin_does_not_admit_its_lookalikes(
    make_settings: Callable[..., Settings], make_client: Callable[..., TestClient]
) -> None:
    """SIDECAR_ALLOWED_ORIGINS names exact origins: not their subdomains, suffixes, other schemes or ports."""
    allowed = "https://video.example.org"
    client = make_client(app_settings=make_settings(allowed_origins=[allowed]))
    token = _sign_in(client, "admin", ADMIN_PASSWORD)[0]
    csrf = client.get("/api/v1/me", headers={"cookie": f"sidecar_session={token}"}).json()["csrf_token"]
    rule = {"pattern": "**", "groups": ["vid_public"]}
    for origin in (
        "https://video.example.org.evil.example",
        "https://evil.video.example.org",
        "https://evilvideo.example.org",
        "http://video.example.org",
        "https://video.example.org:8443",
        "https://video.example.org@evil.example",
        "https://video.example.org, https://evil.example",
    ):
        headers = {"cookie": f"sidecar_session={token}", "x-csrf-token": csrf, "origin": origin}
        assert_refused(client.put("/api/v1/rules", json=rule, headers=headers), because=REFUSED_FOR_ORIGIN)
        assert client.get("/api/v1/rules", headers=KEY).json()["rules"] == [], origin
    headers = {"cookie": f"sidecar_session={token}", "x-csrf-token": csrf, "origin": allowed}
    assert client.put("/api/v1/rules", json=rule, headers=headers).status_code == 200  # control


# --- the CSRF token itself ----------------------------------------------------------------------------------------


class _Backdated(TimestampSigner):
    def get_timestamp(self) -> int:
        return int(time.time()) - 3 * 86400


class _FutureDated(TimestampSigner):
    def get_timestamp(self) -> int:
        return int(time.time()) + 3 * 86400


def _minted(site: Site, username: str, signer: type[TimestampSigner] = TimestampSigner) -> str:
    """A token made the way the sidecar makes them (its secret), for `username`, dated by `signer`."""
    return str(URLSafeTimedSerializer(site.secret, salt="sidecar-csrf", signer=signer).dumps(username))


def test_token_minting_used_by_the_forgery_tests_is_the_sidecars_own(site: Site) -> None:
    """Control for the forged tokens below: minted now, for the admin, it is accepted (on a no-op write)."""
    headers = site.browser("admin", origin=OWN, x_csrf_token=_minted(site, "admin"))
    done = site.client.put("/api/v1/users/admin/groups/vid_admin", headers=headers)
    assert done.status_code == 200 and done.json()["changed"] is False, done.text


def _public_form_token(site: Site) -> str:
    page = site.client.get("/request-access")
    found = re.search(r'name="form_token" value="([^"]+)"', page.text)
    assert found, "the public form has no form_token"
    return found.group(1)


TOKENS = {
    "another-users-token": lambda site, other: site.csrf["bob"],
    "another-admins-token": lambda site, other: site.csrf[TWIN],
    "another-sidecars-token-for-admin": lambda site, other: other,
    "expired": lambda site, other: _minted(site, "admin", _Backdated),
    "dated-in-the-future": lambda site, other: _minted(site, "admin", _FutureDated),
    "minted-for-ADMIN": lambda site, other: _minted(site, "ADMIN"),
    "truncated-by-one": lambda site, other: site.csrf["admin"][:-1],
    "signature-cut-off": lambda site, other: site.csrf["admin"].rsplit(".", 1)[0],
    "payload-only": lambda site, other: site.csrf["admin"].split(".", 1)[0],
    "signature-reversed": lambda site, other: ".".join(
        [*site.csrf["admin"].split(".")[:2], site.csrf["admin"].split(".")[2][::-1]]
    ),
    "admin-payload-bob-signature": lambda site, other: ".".join(
        [site.csrf["admin"].split(".")[0], *site.csrf["bob"].split(".")[1:]]
    ),
    "appended-junk": lambda site, other: site.csrf["admin"] + "x",
    "doubled": lambda site, other: site.csrf["admin"] + site.csrf["admin"],
    "public-form-token": lambda site, other: _public_form_token(site),
    "bare-username": lambda site, other: "admin",
    "dots-percent-encoded": lambda site, other: site.csrf["admin"].replace(".", "%2E"),
}


@pytest.mark.parametrize("kind", list(TOKENS))
def test_forged_csrf_token_is_refused_even_from_the_own_origin(
    site: Site, other_sidecars_token: str, kind: str
) -> None:
    token = TOKENS[kind](site, other_sidecars_token)
    headers = site.browser("admin", origin=OWN, x_csrf_token=token)
    response = attempt(site, "PUT", "/api/v1/users/bob/groups/vid_admin", headers)
    assert_refused(response, because=("csrf",))


def test_public_form_token_does_not_work_even_for_a_user_named_like_its_form(site: Site) -> None:
    """The public page hands anyone a token signed with the same secret, whose payload is the form's name."""
    headers = site.browser(TWIN, origin=OWN, x_csrf_token=_public_form_token(site))
    response = attempt(site, "PUT", "/api/v1/users/bob/groups/vid_admin", headers)
    assert_refused(response, because=("csrf",))


def test_viewer_token_with_the_admins_cookie_and_admin_token_with_the_viewers_cookie_are_refused(site: Site) -> None:
    crossed = [
        ("admin", site.csrf["bob"], "PUT", "/api/v1/rules", {"pattern": "**", "groups": ["vid_public"]}),
        ("bob", site.csrf["admin"], "POST", "/api/v1/share-links", {"path": "live/cam1", "ttl": "never"}),
        ("bob", site.csrf["admin"], "POST", "/api/v1/streams/token", {"path": "live/cam1"}),
        ("bob", site.csrf["carol"], "DELETE", f"/api/v1/share-links/{site.share_id}", None),
    ]
    for who, token, method, path, body in crossed:
        headers = site.browser(who, origin=OWN, x_csrf_token=token)
        assert_refused(attempt(site, method, path, headers, json=body), because=("csrf",))


@pytest.mark.parametrize("where", ["query", "json-body", "form-field", "cookie", "other-header-name"])
def test_csrf_token_counts_only_in_its_header(site: Site, where: str) -> None:
    """A page that learned the token can put it in a form field or URL, never in a custom header cross-site."""
    token = site.csrf["admin"]
    headers = site.browser("admin", origin=OWN)
    path, kwargs = "/api/v1/users/bob", {"json": {"is_active": False}}
    if where == "query":
        path += f"?csrf_token={token}&x-csrf-token={token}&_csrf={token}"
    elif where == "json-body":
        kwargs = {"json": {"is_active": False, "csrf_token": token, "x-csrf-token": token}}
    elif where == "form-field":
        kwargs = {"content": f"is_active=false&csrf_token={token}".encode()}
        headers["content-type"] = FORM
    elif where == "cookie":
        headers["cookie"] += f"; csrf_token={token}; x-csrf-token={token}"
    else:
        headers.update({"x-xsrf-token": token, "csrf-token": token, "x-csrftoken": token})
    response = attempt(site, "PATCH", path, headers, **kwargs)
    assert_refused(response, because=("csrf",))


# --- viewers are victims too ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{"origin": EVIL}, {"origin": "null"}, {"referer": f"{EVIL}/"}, {}, {"origin": OWN}],
    ids=["foreign-origin", "null-origin", "foreign-referer", "nothing", "own-origin-no-token"],
)
def test_viewers_share_link_and_playback_token_cannot_be_made_from_a_foreign_page(
    site: Site, headers: dict[str, str]
) -> None:
    for path, body in (
        ("/api/v1/share-links", {"path": "live/cam1", "ttl": "never"}),
        ("/api/v1/streams/token", {"path": "live/cam1"}),
    ):
        response = attempt(site, "POST", path, site.browser("bob", **headers), json=body)
        assert_refused(response, because=REFUSED_FOR_CSRF)


# --- methods: overrides, HEAD, OPTIONS, GET --------------------------------------------------------------------


OVERRIDES = {"x-http-method-override": "DELETE", "x-http-method": "DELETE", "x-method-override": "DELETE"}


def test_method_override_headers_do_not_turn_a_foreign_post_into_a_delete(site: Site) -> None:
    headers = site.browser("admin", origin=EVIL, **{k.replace("-", "_"): v for k, v in OVERRIDES.items()})
    response = attempt(site, "POST", "/api/v1/users/bob/groups/vid_public", headers)
    assert_refused(response, because=REFUSED_FOR_ORIGIN)


def test_method_override_headers_are_ignored_even_on_a_genuine_same_origin_post(site: Site) -> None:
    """POST on a membership means "add"; with the override honoured it would remove bob from vid_public."""
    headers = {**site.legit(), **OVERRIDES}
    before = snapshot(site)
    done = site.client.post("/api/v1/users/bob/groups/vid_public", headers=headers)
    assert done.status_code == 200 and done.json() == {
        "username": "bob",
        "group": "vid_public",
        "member": True,
        "changed": False,
    }, done.text
    # A genuine write bumps the store's change counter (meta) even when it changes nothing; nothing else moves.
    assert changed_tables(before, snapshot(site)) in ([], ["meta"])


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("/api/v1/rules?_method=DELETE&pattern=live/**", b"_method=DELETE&pattern=live/**"),
        ("/api/v1/rules?_method=PUT", b"_method=PUT&pattern=**&groups=vid_public"),
        ("/api/v1/users/bob?_method=PATCH", b"_method=PATCH&is_active=false"),
        ("/api/v1/share-links/{share}?_method=DELETE", b"_method=DELETE"),
        ("/api/v1/publishers/{publisher}?_method=DELETE", b"_method=DELETE"),
    ],
)
@pytest.mark.parametrize("origin", [EVIL, OWN])
def test_form_method_parameter_cannot_reach_a_put_patch_or_delete_route(
    site: Site, path: str, content: bytes, origin: str
) -> None:
    """HTML forms can only GET and POST; `_method=` must not stand in for the verb (not even same-origin)."""
    path = path.format(share=site.share_id, publisher=site.publisher)
    headers = site.browser("admin", origin=origin, x_csrf_token=site.csrf["admin"], content_type=FORM)
    response = attempt(site, "POST", path, headers, content=content)
    assert_refused(response, status=None)


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "GET"])
@pytest.mark.parametrize(("write", "template"), API_WRITES, ids=API_IDS)
def test_safe_methods_on_a_write_route_change_nothing(site: Site, write: str, template: str, method: str) -> None:
    """Safe methods skip the CSRF guard, so they must never reach a write, even with every credential present."""
    path, body = _concrete(site, write, template)
    response = attempt(site, method, path, site.legit(), json=body or None)
    if response.status_code >= 400 and method != "HEAD":
        assert response.headers["content-type"].startswith("application/json"), response.text[:200]
        assert isinstance(response.json().get("error"), str), response.text[:200]


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_safe_methods_on_logout_and_the_share_token_url_change_nothing(site: Site, method: str) -> None:
    """An <img src=/auth/logout> or a prefetch must not sign the admin out or spend a share link."""
    for path in ("/auth/logout", f"/share/{site.share_secret}/token"):
        response = attempt(site, method, path, site.browser("admin", origin=EVIL))
        assert 400 <= response.status_code < 500, f"{method} {path}: {response.status_code}"


# --- login CSRF, logout and password ----------------------------------------------------------------------------

# Sign-in, sign-out, password changes and share tokens once checked the origin only when an Origin header was
# present, so a browser that sent only a foreign Referer got through.
FOREIGN_ORIGINS = [
    EVIL,
    "null",
    "http://testserver.evil.example",
    "http://testserver:8080",
    "https://testserver",
    "http://testserver@evil.example",
    "http://testserver, https://evil.example",
]


def _audit_events(site: Site, action: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = site.client.get(f"/api/v1/audit?action={action}&limit=1000", headers=KEY).json()[
        "events"
    ]
    return events


@pytest.mark.parametrize("body", ["json", "form", "text/plain"])
@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
def test_login_csrf_from_a_foreign_origin_signs_nobody_in(site: Site, origin: str, body: str) -> None:
    """A foreign page must not sign the victim's browser in to the attacker's account (mallory is a real user)."""
    credentials = {"username": "mallory", "password": MALLORY_PASSWORD, "next": "/users"}
    headers = {"origin": origin}
    kwargs: dict[str, Any]
    if body == "json":
        kwargs = {"json": credentials}
    elif body == "form":
        kwargs, headers["content-type"] = {"content": urlencode(credentials).encode()}, FORM
    else:
        kwargs = {"content": httpx.Request("POST", "http://x", json=credentials).content}
        headers["content-type"] = "text/plain"
    before = _audit_events(site, "login")
    response = attempt(site, "POST", "/auth/login", headers, follow_redirects=False, **kwargs)
    assert_refused(response, because=REFUSED_FOR_ORIGIN)
    assert _audit_events(site, "login") == before
    assert not site.client.cookies


@pytest.mark.parametrize(
    "referer",
    [
        f"{EVIL}/",
        "http://testserver.evil.example/",
    ],
)
def test_login_csrf_with_only_a_foreign_referer_signs_nobody_in(site: Site, referer: str) -> None:
    """Browsers that send no Origin (old ones, some privacy settings) still send the attacker's page as Referer."""
    credentials = {"username": "mallory", "password": MALLORY_PASSWORD}
    headers = {"referer": referer, "content-type": FORM}
    response = site.client.post(
        "/auth/login", content=urlencode(credentials).encode(), headers=headers, follow_redirects=False
    )
    site.client.cookies.clear()
    assert_refused(response, because=REFUSED_FOR_ORIGIN)


def _throwaway_admin_session(site: Site) -> str:
    return _sign_in(site.client, "admin", ADMIN_PASSWORD)[0]


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
def test_logout_csrf_from_a_foreign_origin_keeps_the_session(site: Site, origin: str) -> None:
    token = _throwaway_admin_session(site)
    headers = {"cookie": f"sidecar_session={token}", "origin": origin, "content-type": FORM}
    response = attempt(site, "POST", "/auth/logout", headers, content=b"", follow_redirects=False)
    assert_refused(response, because=REFUSED_FOR_ORIGIN)
    assert site.client.get("/api/v1/me", headers={"cookie": f"sidecar_session={token}"}).status_code == 200


def test_logout_csrf_with_only_a_foreign_referer_keeps_the_session(site: Site) -> None:
    token = _throwaway_admin_session(site)
    headers = {"cookie": f"sidecar_session={token}", "referer": f"{EVIL}/", "content-type": FORM}
    response = site.client.post("/auth/logout", content=b"", headers=headers, follow_redirects=False)
    site.client.cookies.clear()
    assert site.client.get("/api/v1/me", headers={"cookie": f"sidecar_session={token}"}).status_code == 200
    assert_refused(response, because=REFUSED_FOR_ORIGIN)


def _password_change(site: Site, headers: dict[str, str]) -> httpx.Response:
    """Carol "changes" her password to the same one: harmless if it goes through, but audited and answered 200."""
    body = {"current_password": CAROL_PASSWORD, "password": CAROL_PASSWORD}
    before = _audit_events(site, "password.change")
    response = site.client.put("/auth/password", json=body, headers={**site.cookie("carol"), **headers})
    assert _audit_events(site, "password.change") == before, f"password changed: {response.text}"
    return response


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
def test_password_change_from_a_foreign_origin_is_refused(site: Site, origin: str) -> None:
    assert_refused(_password_change(site, {"origin": origin}), because=REFUSED_FOR_ORIGIN)


def test_password_change_with_only_a_foreign_referer_is_refused(site: Site) -> None:
    assert_refused(_password_change(site, {"referer": f"{EVIL}/account"}), because=REFUSED_FOR_ORIGIN)


# --- public forms and the share-link token URL --------------------------------------------------------------------

PUBLIC_ATTACKS = {
    "foreign-origin": {"origin": EVIL},
    "null-origin": {"origin": "null"},
    "lookalike-origin": {"origin": "http://testserver.evil.example"},
    "other-port": {"origin": "http://testserver:8080"},
    "foreign-referer-no-origin": {"referer": f"{EVIL}/"},
    "no-origin-no-referer": {},
}


@pytest.mark.parametrize("attack", list(PUBLIC_ATTACKS))
def test_access_request_cannot_be_submitted_from_a_foreign_page(site: Site, attack: str) -> None:
    """Even with a valid form token (the attacker's own, fetched from the page), the POST must be same-origin."""
    form = {
        "form_token": _public_form_token(site),
        "name": "Eve",
        "username": "eve",
        "email": "eve@example.org",
        "org": "Elsewhere",
        "reason": "forged",
        "group": "vid_public",
        "website": "",
    }
    headers = {**PUBLIC_ATTACKS[attack], "content-type": FORM}
    response = attempt(site, "POST", "/request-access", headers, content=urlencode(form).encode())
    assert_refused(response, because=REFUSED_FOR_ORIGIN)


@pytest.mark.parametrize("attack", list(PUBLIC_ATTACKS))
def test_set_password_link_cannot_be_spent_from_a_foreign_page(site: Site, attack: str) -> None:
    """The link stays unused (its page still opens) and bob's password is not set."""
    form = {"password": "attacker-chosen-password-1", "confirm": "attacker-chosen-password-1"}
    headers = {**PUBLIC_ATTACKS[attack], "content-type": FORM}
    path = f"/request-access/set-password/{site.password_secret}"
    response = attempt(site, "POST", path, headers, content=urlencode(form).encode())
    assert_refused(response, because=REFUSED_FOR_ORIGIN)


@pytest.mark.parametrize("attack", [name for name, headers in PUBLIC_ATTACKS.items() if "origin" in headers])
def test_share_link_token_cannot_be_fetched_by_a_foreign_page(site: Site, attack: str) -> None:
    """No use is counted and no token issued for a request a foreign page made."""
    path = f"/share/{site.share_secret}/token"
    response = attempt(site, "POST", path, {**site.cookie("admin"), **PUBLIC_ATTACKS[attack]})
    assert_refused(response, because=REFUSED_FOR_ORIGIN)
    assert "token" not in response.json()


def test_share_link_token_with_only_a_foreign_referer_is_refused(site: Site) -> None:
    path = f"/share/{site.share_secret}/token"
    response = attempt(site, "POST", path, {"referer": f"{EVIL}/"})
    assert_refused(response, because=REFUSED_FOR_ORIGIN)


# --- the editor behind the proxy ----------------------------------------------------------------------------------

EDITOR_ATTACKS = {
    "foreign-origin": {"origin": EVIL},
    "null-origin": {"origin": "null"},
    "lookalike-origin": {"origin": "http://testserver.evil.example"},
    "other-scheme": {"origin": "https://testserver"},
    "foreign-referer-no-origin": {"referer": f"{EVIL}/"},
    "no-origin-no-referer": {},
    "text-plain-foreign-origin": {"origin": EVIL, "content_type": "text/plain"},
    "override-to-delete": {"origin": EVIL, "x_http_method_override": "DELETE"},
}


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("attack", list(EDITOR_ATTACKS))
def test_editor_write_from_a_foreign_page_never_reaches_the_editor(site: Site, attack: str, method: str) -> None:
    """The editor has no CSRF defence of its own: nothing may be forwarded, nor audited as an editor request."""
    headers = site.browser("admin", **EDITOR_ATTACKS[attack])
    response = attempt(site, method, "/v3/config/paths/add/csrf", headers, content=b'{"source": "publisher"}')
    assert_refused(response, because=REFUSED_FOR_ORIGIN)


def test_editor_harness_control_same_origin_write_is_forwarded(site: Site) -> None:
    """Control for the editor attacks: the same write from the own origin does reach the (stand-in) editor."""
    before = len(site.editor_seen)
    done = site.client.post("/v3/config/paths/add/control", headers=site.browser("admin", origin=OWN), content=b"{}")
    assert done.status_code == 200, done.text
    assert site.editor_seen[before:] == [("POST", "/v3/config/paths/add/control")]


# --- through the real Caddy (local mode) ------------------------------------------------------------------------


@dataclass(frozen=True)
class CaddySession:
    site: Endpoint
    database: Path
    token: str
    csrf: str

    @property
    def own(self) -> str:
        return self.site.url

    def cookie(self) -> dict[str, str]:
        return {"cookie": f"sidecar_session={self.token}"}


@pytest.fixture(scope="module")
def through_caddy(caddy_local: Endpoint, sidecar: SidecarInstance) -> Iterator[tuple[httpx.Client, CaddySession]]:
    """The admin signed in through Caddy's public /auth/login, as the login page would do it."""
    with httpx.Client(base_url=caddy_local.url, timeout=20) as http:
        credentials = {"username": "admin", "password": CADDY_ADMIN_PASSWORD}
        done = http.post("/auth/login", json=credentials, headers={"origin": caddy_local.url})
        assert done.status_code == 200, done.text
        token = done.json()["token"]
        http.cookies.clear()
        me = http.get("/api/v1/me", headers={"cookie": f"sidecar_session={token}"})
        assert me.status_code == 200 and me.json()["role"] == "admin", me.text
        database = Settings(_env_file=None, data_dir=sidecar.data_dir).database_path  # type: ignore[call-arg]
        session = CaddySession(caddy_local, database, token, me.json()["csrf_token"])
        # Control: the genuine page's write (a no-op) passes Caddy and the sidecar, so refusals below are real.
        control = http.put(
            "/api/v1/users/admin/groups/vid_admin",
            headers={**session.cookie(), "origin": session.own, "x-csrf-token": session.csrf},
        )
        assert control.status_code == 200 and control.json()["changed"] is False, control.text
        yield http, session


def caddy_state(http: httpx.Client, session: CaddySession) -> dict[str, Any]:
    """The admin's view through Caddy (rules, people, groups, share links, audit) and the sidecar's whole store."""

    def read(path: str) -> Any:
        answer = http.get(path, headers=session.cookie())
        assert answer.status_code == 200, f"{path}: {answer.status_code} {answer.text}"
        return answer.json()

    views = ("rules", "users?page_size=100", "groups", "share-links", "audit?limit=1000")
    return {**database_rows(session.database), **{view: read(f"/api/v1/{view}") for view in views}}


def caddy_attempt(
    http: httpx.Client, session: CaddySession, method: str, path: str, headers: dict[str, str], **kwargs: Any
) -> httpx.Response:
    before = caddy_state(http, session)
    response = http.request(method, path, headers=headers, **kwargs)
    after = caddy_state(http, session)
    changed = changed_tables(before, after)
    assert not changed, f"{method} {path} changed {changed} through Caddy ({response.status_code} {response.text})"
    return response


def _caddy_origins(site: Endpoint) -> dict[str, str]:
    port = site.port
    return {
        "foreign": EVIL,
        "null": "null",
        "host-suffix": f"http://127.0.0.1:{port}.evil.example",
        "host-prefix": f"http://evil.example.127.0.0.1:{port}",
        "other-port": f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}",
        "other-scheme": f"https://127.0.0.1:{port}",
        "localhost-alias": f"http://localhost:{port}",
        "userinfo-host": f"http://127.0.0.1:{port}@evil.example",
        "userinfo-victim": f"http://evil.example@127.0.0.1:{port}",
    }


CADDY_ORIGIN_NAMES = list(_caddy_origins(Endpoint("x", 8080)))


@pytest.mark.caddy
@pytest.mark.parametrize("origin_name", CADDY_ORIGIN_NAMES)
def test_escalation_replayed_through_caddy_with_a_foreign_origin_is_refused(
    through_caddy: tuple[httpx.Client, CaddySession], origin_name: str
) -> None:
    """The admin's cookie and a stolen CSRF token, but the page is not the site: bob must not become an admin."""
    http, session = through_caddy
    origin = _caddy_origins(session.site)[origin_name]
    headers = {**session.cookie(), "origin": origin, "x-csrf-token": session.csrf}
    response = caddy_attempt(http, session, "PUT", "/api/v1/users/bob/groups/vid_admin", headers)
    assert_refused(response, because=REFUSED_FOR_ORIGIN)


@pytest.mark.caddy
@pytest.mark.parametrize(
    "shape",
    ["no-token-foreign-origin", "no-token-own-origin", "foreign-referer-only", "nothing", "text-plain-foreign"],
)
def test_admin_writes_replayed_through_caddy_without_the_page_are_refused(
    through_caddy: tuple[httpx.Client, CaddySession], shape: str
) -> None:
    http, session = through_caddy
    chosen = {
        "no-token-foreign-origin": {"origin": EVIL},
        "no-token-own-origin": {"origin": session.own},
        "foreign-referer-only": {"referer": f"{EVIL}/", "x-csrf-token": session.csrf},
        "nothing": {"x-csrf-token": session.csrf},
        "text-plain-foreign": {"origin": EVIL, "content-type": "text/plain"},
    }[shape]
    headers = {**session.cookie(), **chosen}
    group = f"vid_csrf{uuid.uuid4().hex[:8]}"
    for method, path, body in (
        ("DELETE", "/api/v1/rules?pattern=**", None),
        ("POST", "/api/v1/groups", {"name": group}),
        ("PATCH", "/api/v1/users/bob", {"is_active": False}),
        ("POST", "/api/v1/share-links", {"path": "live/cam1", "ttl": "never"}),
    ):
        content = None if body is None else httpx.Request("POST", "http://x", json=body).content
        response = caddy_attempt(http, session, method, path, headers, content=content)
        assert_refused(response, because=REFUSED_FOR_CSRF)


@pytest.mark.caddy
@pytest.mark.parametrize(
    "spoof",
    [
        {"x-forwarded-proto": "https", "origin": "https://{host}"},
        {"x-forwarded-host": "evil.example", "origin": "http://evil.example"},
        {"forwarded": "host=evil.example;proto=https", "origin": "https://evil.example"},
        {"x-forwarded-for": "127.0.0.1", "x-real-ip": "127.0.0.1", "origin": EVIL},
    ],
    ids=["x-forwarded-proto", "x-forwarded-host", "forwarded", "x-forwarded-for"],
)
def test_forwarding_headers_sent_through_caddy_do_not_redefine_the_sites_own_origin(
    through_caddy: tuple[httpx.Client, CaddySession], spoof: dict[str, str]
) -> None:
    http, session = through_caddy
    chosen = {k: v.format(host=session.site.hostport) for k, v in spoof.items()}
    headers = {**session.cookie(), "x-csrf-token": session.csrf, **chosen}
    response = caddy_attempt(http, session, "PUT", "/api/v1/users/bob/groups/vid_admin", headers)
    assert_refused(response, because=REFUSED_FOR_ORIGIN)


@pytest.mark.caddy
def test_rebound_host_with_a_matching_origin_does_not_reach_the_sidecar_through_caddy(
    through_caddy: tuple[httpx.Client, CaddySession],
) -> None:
    """DNS rebinding: the attacker's name points at the site, so Host and Origin agree with each other, not with us."""
    http, session = through_caddy
    rebound = f"evil.example:{session.site.port}"
    headers = {**session.cookie(), "host": rebound, "origin": f"http://{rebound}", "x-csrf-token": session.csrf}
    response = caddy_attempt(http, session, "PUT", "/api/v1/users/bob/groups/vid_admin", headers)
    assert "changed" not in response.text
    assert response.status_code != 200 or not response.content, response.text


@pytest.mark.caddy
@pytest.mark.parametrize("origin_name", ["foreign", "null", "host-suffix", "other-scheme"])
def test_editor_write_through_caddy_from_a_foreign_origin_is_refused_and_not_forwarded(
    through_caddy: tuple[httpx.Client, CaddySession], origin_name: str
) -> None:
    http, session = through_caddy
    path = f"/v3/config/paths/add/csrf-{uuid.uuid4().hex[:8]}"
    headers = {**session.cookie(), "origin": _caddy_origins(session.site)[origin_name]}
    response = caddy_attempt(http, session, "POST", path, headers, content=b'{"source": "publisher"}')
    assert_refused(response, because=REFUSED_FOR_ORIGIN)
    assert "upstream" not in response.text  # the echo editor would have described the request


@pytest.mark.caddy
@pytest.mark.parametrize("origin_name", ["foreign", "null", "host-suffix", "other-port"])
def test_login_and_logout_csrf_through_caddy_are_refused(
    through_caddy: tuple[httpx.Client, CaddySession], origin_name: str
) -> None:
    http, session = through_caddy
    origin = _caddy_origins(session.site)[origin_name]
    credentials = {"username": "admin", "password": CADDY_ADMIN_PASSWORD}
    form = urlencode(credentials).encode()
    login = caddy_attempt(http, session, "POST", "/auth/login", {"origin": origin, "content-type": FORM}, content=form)
    assert_refused(login, because=REFUSED_FOR_ORIGIN)
    assert not http.cookies
    logout = caddy_attempt(http, session, "POST", "/auth/logout", {**session.cookie(), "origin": origin})
    assert_refused(logout, because=REFUSED_FOR_ORIGIN)
    assert http.get("/api/v1/me", headers=session.cookie()).status_code == 200


@pytest.mark.caddy
@pytest.mark.parametrize("headers", [{"origin": EVIL}, {"origin": "null"}, {}], ids=["foreign", "null", "nothing"])
def test_sso_viewer_share_link_cannot_be_created_from_a_foreign_page_through_caddy(
    caddy_alice: Endpoint, headers: dict[str, str]
) -> None:
    """Authentik mode: the outpost vouches for alice on every request (an ambient SSO cookie), no sidecar cookie."""
    with httpx.Client(base_url=caddy_alice.url, timeout=20) as http:
        before = http.get("/api/v1/share-links")
        assert before.status_code == 200, before.text
        for path, body in (
            ("/api/v1/share-links", {"path": "live/cam1", "ttl": "never"}),
            ("/api/v1/streams/token", {"path": "live/cam1"}),
        ):
            response = http.post(path, json=body, headers=headers)
            assert_refused(response, because=REFUSED_FOR_CSRF)
        assert http.get("/api/v1/share-links").json() == before.json()
