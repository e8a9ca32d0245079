"""Attack class: path tricks.

Through the real Caddy with the shipped Caddyfile (local mode, and authentik mode with stand-in outposts), an
outsider or a viewer spells a path so that Caddy, the sidecar and the editor might disagree on what it names: dot
segments raw and percent-encoded (single, double, overlong and odd encodings), encoded slashes and backslashes,
doubled and trailing slashes and dots, mixed case, matrix parameters, NUL bytes, `#`/`?`/newline tricks,
absolute-form request targets, public-prefix confusions and very long paths. Targets: the sidecar's admin pages and
API, the internal routes (`/mediamtx/auth`, `/mediamtx/hooks/*`, `/metrics`, `/.well-known/jwks.json`) and the
editor behind the sidecar. Then the policy side: MediaMTX callback and playback-token requests whose stream path is
an ambiguous spelling of another path.

Every request goes out byte for byte over a raw socket, so nothing on the client side normalises the target.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from tests.helpers import ADMIN_PASSWORD, API_KEY, callback_body
from tests.mediamtx_env import MediaMTXEnv, fake_transport, open_mediamtx_env
from tests.processes_fixtures import ADMIN_PASSWORD as PROCESS_ADMIN_PASSWORD
from tests.processes_fixtures import VIEWER_PASSWORD, VIEWER_USER, Endpoint, SidecarInstance
from tests.raw_http import Reply
from tests.raw_http import send_raw as send

JSON = "application/json"
BROWSER = "text/html,application/xhtml+xml,*/*;q=0.8"
# What Caddy itself answers when it refuses (the Caddyfile's `respond`, or Go's HTTP server on a malformed target).
CADDY_REFUSALS = {b"Bad Request", b"Not Found", b"400 Bad Request", b"431 Request Header Fields Too Large"}
REFUSED = (400, 401, 403, 404, 405)
REFUSED_LONG = (*REFUSED, 414, 431)
SPOOFED_ADMIN = [("X-Authentik-Username", "admin"), ("X-Authentik-Groups", "vid_admin")]


# --- raw HTTP -------------------------------------------------------------------------------------------------------


def assert_refused(reply: Reply, statuses: Sequence[int] = REFUSED) -> None:
    """A refusal: a 4xx that is either Caddy's own plain answer or the sidecar's JSON error, and nothing else."""
    assert reply.status in statuses, (reply.status, reply.body[:300])
    if reply.body in CADDY_REFUSALS:
        return
    found = reply.json()
    assert isinstance(found, dict) and isinstance(found.get("error"), str), reply.body[:300]
    assert set(found) <= {"error", "field"}, reply.body[:300]


def assert_nothing_served(reply: Reply) -> None:
    """Refused, or Caddy's empty answer for a host no site serves."""
    if reply.status == 200 and reply.body == b"":
        return
    assert_refused(reply)


# --- who attacks ----------------------------------------------------------------------------------------------------


def login(caddy: Endpoint, username: str, password: str) -> str:
    reply = send(
        caddy,
        "/auth/login",
        [("Content-Type", JSON)],
        method="POST",
        body=json.dumps({"username": username, "password": password}).encode(),
    )
    assert reply.status == 200, reply.body
    token: str = reply.json()["token"]
    return token


@pytest.fixture(scope="module")
def bob_cookie(caddy_local: Endpoint) -> tuple[str, str]:
    return ("Cookie", f"sidecar_session={login(caddy_local, VIEWER_USER, VIEWER_PASSWORD)}")


@pytest.fixture(scope="module")
def admin_cookie(caddy_local: Endpoint) -> tuple[str, str]:
    return ("Cookie", f"sidecar_session={login(caddy_local, 'admin', PROCESS_ADMIN_PASSWORD)}")


@pytest.fixture(scope="module")
def api_key(sidecar: SidecarInstance) -> str:
    return (sidecar.data_dir / "api_key").read_text().strip()


@dataclass(frozen=True)
class Attacker:
    name: str
    caddy: Endpoint
    headers: tuple[tuple[str, str], ...] = ()


# Who may try: nobody through local mode, the viewer bob through local mode, the viewer alice (authentik mode), and
# anybody on an Authentik unauthenticated path (the outpost answers 200 without identity).
NOBODY_OR_VIEWER = ["local-anonymous", "local-viewer-bob", "authentik-viewer-alice", "authentik-unauthenticated"]
VIEWERS = ["local-viewer-bob", "authentik-viewer-alice"]


def make_attacker(request: pytest.FixtureRequest, name: str) -> Attacker:
    if name == "local-anonymous":
        return Attacker(name, request.getfixturevalue("caddy_local"))
    if name == "local-viewer-bob":
        return Attacker(name, request.getfixturevalue("caddy_local"), (request.getfixturevalue("bob_cookie"),))
    if name == "authentik-viewer-alice":
        return Attacker(name, request.getfixturevalue("caddy_alice"))
    if name == "authentik-unauthenticated":
        return Attacker(name, request.getfixturevalue("caddy_anonymous"))
    if name == "authentik-unauthenticated-with-api-key":
        key = request.getfixturevalue("api_key")
        return Attacker(name, request.getfixturevalue("caddy_anonymous"), (("X-API-Key", key),))
    raise AssertionError(name)


@pytest.fixture(scope="module", params=NOBODY_OR_VIEWER)
def attacker(request: pytest.FixtureRequest) -> Attacker:
    return make_attacker(request, request.param)


@pytest.fixture(scope="module", params=VIEWERS)
def viewer(request: pytest.FixtureRequest) -> Attacker:
    return make_attacker(request, request.param)


# The strongest outsider for the internal routes: an unauthenticated Authentik path plus the automation key, which
# opens /metrics and the hooks on the sidecar itself; and the two viewers.
@pytest.fixture(scope="module", params=["authentik-unauthenticated-with-api-key", *VIEWERS])
def outsider(request: pytest.FixtureRequest) -> Attacker:
    return make_attacker(request, request.param)


def long(label: str, target: str) -> Any:
    return pytest.param(target, id=f"{label}({len(target)} chars)")


# --- preconditions: the targets exist, so a refusal below is the trick failing --------------------------------------


@pytest.mark.caddy
def test_precondition_admin_reaches_the_targets_and_the_editor_through_caddy(
    caddy_local: Endpoint, admin_cookie: tuple[str, str]
) -> None:
    assert "users" in send(caddy_local, "/api/v1/users", [admin_cookie]).json()
    assert "rules" in send(caddy_local, "/api/v1/rules", [admin_cookie]).json()
    for page, title in (("/users", b"<title>Users"), ("/audit", b"<title>Audit log")):
        reply = send(caddy_local, page, [admin_cookie], accept=BROWSER)
        assert reply.status == 200 and title in reply.body
    assert send(caddy_local, "/api/status", [admin_cookie]).json()["upstream"] == "editor"


@pytest.mark.caddy
def test_precondition_internal_routes_answer_on_the_sidecar_itself(sidecar: SidecarInstance, api_key: str) -> None:
    direct = sidecar.endpoint
    assert "keys" in send(direct, "/.well-known/jwks.json").json()
    assert b"# HELP" in send(direct, "/metrics", [("X-API-Key", api_key)]).body
    allowed = send(direct, "/mediamtx/auth", [("Content-Type", JSON)], method="POST", body=service_callback(api_key))
    assert (allowed.status, allowed.json()) == (200, {"allowed": True})


# --- admin pages and API: dot segments, refused by Caddy before any upstream ----------------------------------------

DOT_SEGMENTS = [
    "/request-access/../users",
    "/request-access/%2e%2e/users",
    "/request-access/%2E%2E/api/v1/users",
    "/request-access/.%2e/audit",
    "/request-access/%2e./api/v1/rules",
    "/REQUEST-ACCESS/../USERS",
    "//request-access//..//users",
    "/overlay/..%2fusers",
    "/overlay/..%2Fapi%2Fv1%2Fusers",
    "/overlay/%2e%2e%2f%2e%2e%2faudit",
    "/Overlay/..%2FUsers",
    "/share/x/..%2f..%2fapi/v1/users",
    "/share/x/%2e%2e/%2e%2e/api/v1/rules",
    "/auth/../api/v1/rules",
    "/auth/verify/..%2f..%2fapi/v1/rules",
    "/auth/%2e%2e/audit",
    "/healthz/./../users",
    "/version/%2e%2e/api/v1/users",
    "/readyz%2f%2e%2e%2faudit",
    "/healthz;/../users",
    "/request-access;/../users",
    "/healthz#/../users",
    "/auth/verify#/../../users",
    "/healthz%3f/../users",
    "/healthz%23/../users",
    "/healthz%00/../users",
    "/request-access%00/../users",
    "/%2e%2e/users",
    "/.%2e/api/v1/users",
    "/%2E./audit",
    "/%2e/users",
    "/users/.",
    "/users/%2e",
    "/api/v1/users/..",
    "/api/v1/rules/%2e%2e",
    "/audit/.",
    long("dot-after-deep-public-prefix", "/healthz/" + "a/" * 3000 + "../users"),
    long("many-encoded-dot-segments", "/request-access/" + "%2e%2e/" * 500 + "users"),
]


@pytest.mark.caddy
@pytest.mark.parametrize("target", DOT_SEGMENTS)
def test_dot_segment_spellings_cannot_reach_admin_pages_through_caddy(attacker: Attacker, target: str) -> None:
    reply = send(attacker.caddy, target, attacker.headers)
    assert (reply.status, reply.body) == (400, b"Bad Request")


# --- admin pages and API: every other spelling ends in a refusal ----------------------------------------------------

ADMIN_TRICKS = [
    # double-encoded dots: decoded once by Caddy and once by the sidecar, never twice
    "/request-access/%252e%252e/users",
    "/overlay/%252e%252e%252fusers",
    "/auth/%252e%252e/api/v1/rules",
    "/share/x/%252e%252e%252f%252e%252e%252fapi%252fv1%252fusers",
    "/healthz/%252e%252e/users",
    "/%252e%252e/api/v1/rules",
    # overlong UTF-8, IIS %u, nibble-encoded, NUL-split and full-width dots
    "/overlay/%c0%ae%c0%ae/users",
    "/request-access/%e0%80%ae%e0%80%ae/users",
    "/request-access/%c0%af..%c0%afusers",
    "/overlay/%u002e%u002e/users",
    "/overlay/%%32%65%%32%65/users",
    "/overlay/.%00./users",
    "/overlay/%ef%bc%8e%ef%bc%8e/users",
    # encoded slashes and backslashes
    "/api%2fv1%2fusers",
    "/api%2Fv1%2Frules",
    "/api/v1%2fusers",
    "/users%2f",
    "/api/v1/users%2f",
    "/healthz%5c..%5cusers",
    "/request-access%5c..%5cusers",
    "/overlay/..%5c..%5cusers",
    "/overlay/..\\..\\users",
    "/share/x%5c..%5c..%5capi/v1/users",
    "/api\\v1\\users",
    "/api%5cv1%5cusers",
    "/users\\",
    # doubled and trailing slashes and dots, trailing blanks
    "//users",
    "///api/v1/users",
    "/api//v1/users",
    "/api/v1//rules",
    "//audit",
    "/users/",
    "/api/v1/users/",
    "/api/v1/rules/",
    "/audit/",
    "/users.",
    "/users..",
    "/api/v1/rules.",
    "/audit%2e",
    "/users%20",
    "/users%09",
    # letter case
    "/USERS",
    "/Users",
    "/Api/V1/users",
    "/API/V1/RULES",
    "/api/v1/Users",
    "/AUDIT",
    "/Audit",
    # matrix parameters
    "/users;",
    "/users;jsessionid=x",
    "/api/v1/users;x",
    "/api;/v1/users",
    "/audit;x",
    "/api/v1/rules;.json",
    # NUL bytes
    "/users%00",
    "/api/v1/users%00",
    "/users%00.json",
    "/audit%00",
    # fragment and query markers, raw and encoded
    "/users#",
    "/api/v1/users#x",
    "/api/v1/rules%23",
    "/api/v1/rules%3f",
    "/audit%3fx",
    # line ends (a Python `$` also matches before a final newline)
    "/users%0a",
    "/api/v1/users%0a",
    "/api/v1/rules%0A",
    "/audit%0a",
    "/users%0d%0a",
    # public prefixes that Tomcat-style `..;` or case would turn into another route
    "/healthz/..;/users",
    "/share/x/..;/..;/api/v1/users",
    "/auth/..;/api/v1/rules",
    "/overlay/..;/..;/users",
    "/request-access/..;/users",
    "/request-access/review/..;/..;/api/v1/users",
    "/SHARE/x",
    "/Auth/..;/api/v1/users",
    "/OVERLAY/..;/audit",
    "/request-accessX",
    "/usersfoo",
    "/api/v1X",
    # very long
    long("trailing-slashes", "/users" + "/" * 5000),
    long("long-tail-after-users", "/api/v1/users/" + "a" * 100_000),
    long("long-public-overlay-path", "/overlay/" + "x" * 60_000),
]


@pytest.mark.caddy
@pytest.mark.parametrize("target", ADMIN_TRICKS)
def test_path_spelling_cannot_reach_admin_pages_or_api_through_caddy(attacker: Attacker, target: str) -> None:
    for method, body in (("GET", None), ("POST", b"{}")):
        reply = send(attacker.caddy, target, attacker.headers, method=method, body=body)
        assert_refused(reply, REFUSED_LONG)


@pytest.mark.caddy
@pytest.mark.parametrize(
    "target", ["/request-access?/../../users", "/healthz?/../../api/v1/users", "/version?x=/users"]
)
def test_query_string_after_a_public_route_serves_only_that_public_route(attacker: Attacker, target: str) -> None:
    reply = send(attacker.caddy, target, attacker.headers, accept=BROWSER)
    assert reply.status == 200
    if target.startswith("/request-access"):
        assert b"<title>Request access" in reply.body
    elif target.startswith("/healthz"):
        assert reply.json() == {"status": "ok"}
    else:
        assert set(reply.json()) == {"version"}
    assert b"<title>Users" not in reply.body and b'"users"' not in reply.body


@pytest.mark.caddy
@pytest.mark.parametrize("target", ["/users", "/USERS", "/api/v1/users%0a", "/audit;x", "//users", "/users%00"])
def test_signed_out_browser_is_sent_to_sign_in_on_this_site_for_any_spelling(
    caddy_local: Endpoint, target: str
) -> None:
    reply = send(caddy_local, target, accept=BROWSER)
    assert reply.status in (302, 400, 404)
    if reply.status == 302:
        location = reply.header("location") or ""
        assert location.startswith("/auth/login?next=/"), location
        assert not location.startswith("//") and "://" not in location


# --- internal routes: never through Caddy ---------------------------------------------------------------------------

JWKS_TRICKS = [
    "/.well-known/jwks.json",
    "/.well-known/jwks.json/",
    "/.WELL-KNOWN/JWKS.JSON",
    "/.Well-Known/jwks.json",
    "/.well-known//jwks.json",
    "//.well-known/jwks.json",
    "/%2ewell-known/jwks.json",
    "/.well-known%2fjwks.json",
    "/.well-known%2Fjwks%2ejson",
    "/.well-known/jwks.json;",
    "/.well-known;/jwks.json",
    "/.well-known/jwks.json%00",
    "/.well-known/jwks.json%20",
    "/.well-known/jwks.json%09",
    "/.well-known/jwks.json%0d",
    "/.well-known/jwks.json%0d%0a",
    "/.well-known/jwks.json.",
    "/.well-known/jwks.json#",
    "/.well-known/jwks.json?x=1",
    "/.well-known/./jwks.json",
    "/x/../.well-known/jwks.json",
    "/healthz/..;/.well-known/jwks.json",
    "/overlay/..%2f.well-known/jwks.json",
]
METRICS_TRICKS = [
    "/metrics",
    "/Metrics",
    "/%6detrics",
    "/%6Detrics",
    "/metrics%2f",
    "/metrics/.",
    "/metrics;",
    "/metrics;x",
    "/metrics%00",
    "/metrics%20",
    "/metrics%0d",
    "/metrics.",
    "/metrics?x",
    "/metrics#x",
    "/metrics/%0a",
    "/./metrics",
    "/x/../metrics",
    "/healthz/..;/metrics",
    "/share/x/..%2f..%2fmetrics",
    long("merged-slashes", "/" * 5000 + "metrics"),
]


@pytest.mark.caddy
@pytest.mark.parametrize("target", JWKS_TRICKS)
def test_jwks_spelling_never_reaches_the_jwks_through_caddy(outsider: Attacker, target: str) -> None:
    reply = send(outsider.caddy, target, outsider.headers)
    assert_refused(reply)
    assert b'"keys"' not in reply.body


@pytest.mark.caddy
@pytest.mark.parametrize("target", METRICS_TRICKS)
def test_metrics_spelling_never_reaches_metrics_through_caddy(outsider: Attacker, target: str) -> None:
    reply = send(outsider.caddy, target, outsider.headers)
    assert_refused(reply)
    assert b"sidecar_" not in reply.body


# A trailing %0a once slipped past the Caddyfile's exact `path` matchers (Go's path.Match sees a different path), and
# Starlette's `^/route$` regex matches before a final newline, so the internal route answered through Caddy.


@pytest.mark.caddy
def test_trailing_encoded_newline_cannot_reach_the_jwks_through_caddy(
    caddy_alice: Endpoint, caddy_anonymous: Endpoint
) -> None:
    for caddy in (caddy_anonymous, caddy_alice):
        for target in ("/.well-known/jwks.json%0a", "/.well-known/jwks.json%0A?x=1", "/.well-known/%6Awks.json%0a"):
            reply = send(caddy, target)
            assert_refused(reply)
            assert b'"keys"' not in reply.body


@pytest.mark.caddy
def test_trailing_encoded_newline_cannot_reach_metrics_through_caddy(caddy_anonymous: Endpoint, api_key: str) -> None:
    for target in ("/metrics%0a", "/METRICS%0A", "/%6detrics%0a"):
        reply = send(caddy_anonymous, target, [("X-API-Key", api_key)])
        assert_refused(reply)
        assert b"sidecar_" not in reply.body


@pytest.mark.caddy
def test_trailing_encoded_newline_cannot_reach_metrics_as_a_local_admin_through_caddy(
    caddy_local: Endpoint, admin_cookie: tuple[str, str]
) -> None:
    assert send(caddy_local, "/metrics", [admin_cookie]).status == 404  # the plain spelling is refused
    reply = send(caddy_local, "/metrics%0a", [admin_cookie])
    assert_refused(reply)
    assert b"sidecar_" not in reply.body


def service_callback(api_key: str, **fields: Any) -> bytes:
    """A callback body the sidecar allows (the API key as password): a 200 here means the callback was reached."""
    values: dict[str, Any] = {"user": "svc", "password": api_key, "token": api_key, "path": "live/cam1"}
    values.update(fields)
    return json.dumps(callback_body(**values)).encode()


CALLBACK_TRICKS = [
    "/mediamtx/auth",
    "/mediamtx/auth/",
    "/MEDIAMTX/AUTH",
    "/MediaMTX/auth",
    "/mediamtx//auth",
    "//mediamtx/auth",
    "/mediamtx%2fauth",
    "/mediamtx%2Fauth",
    "/%6dediamtx/auth",
    "/mediamtx/%61uth",
    "/mediamtx/auth%0a",
    "/mediamtx%0a/auth",
    "/mediamtx/auth%00",
    "/mediamtx/auth%20",
    "/mediamtx/auth;",
    "/mediamtx;/auth",
    "/mediamtx/auth.",
    "/mediamtx/./auth",
    "/x/../mediamtx/auth",
    "/mediamtx/auth?x=1",
    "/mediamtx/auth#",
    "/mediamtx\\auth",
    "/mediamtx%5cauth",
    "/healthz/..;/mediamtx/auth",
    "/request-access/..%2fmediamtx/auth",
]


@pytest.mark.caddy
@pytest.mark.parametrize("target", CALLBACK_TRICKS)
def test_callback_spelling_never_reaches_the_mediamtx_callback_through_caddy(
    outsider: Attacker, api_key: str, target: str
) -> None:
    body = service_callback(api_key, id=str(uuid.uuid4()))
    reply = send(outsider.caddy, target, [*outsider.headers, ("Content-Type", JSON)], method="POST", body=body)
    assert_refused(reply)
    assert b"allowed" not in reply.body


HOOK_TRICKS = [
    "/mediamtx/hooks/ready",
    "/MEDIAMTX/hooks/ready",
    "/mediamtx/HOOKS/ready",
    "/mediamtx%2fhooks%2fready",
    "/mediamtx/hooks/ready%0a",
    "/mediamtx%0a/hooks/ready",
    "/mediamtx;/hooks/ready",
    "//mediamtx/hooks/ready",
    "/mediamtx/hooks//ready",
    "/mediamtx/hooks/ready/",
    "/x/..%2fmediamtx/hooks/ready",
    "/healthz/..;/mediamtx/hooks/ready",
]


@pytest.mark.caddy
def test_hook_spellings_through_caddy_change_no_live_stream(
    caddy_anonymous: Endpoint, sidecar: SidecarInstance, api_key: str
) -> None:
    """A `ready` hook that got through would list the marker path as a live stream: none may get through."""
    key = ("X-API-Key", api_key)
    marker = f"pathtricks-{uuid.uuid4().hex}"
    body = json.dumps({"path": marker}).encode()
    for target in HOOK_TRICKS:
        reply = send(caddy_anonymous, target, [key, ("Content-Type", JSON)], method="POST", body=body)
        assert_refused(reply)
    listed = send(sidecar.endpoint, "/api/v1/streams", [key]).json()["streams"]
    assert marker not in {stream["name"] for stream in listed}
    # Control: the same hook sent to the sidecar directly (MediaMTX's network) does list the marker; then undo it.
    direct = [key, ("Content-Type", JSON)]
    assert send(sidecar.endpoint, "/mediamtx/hooks/ready", direct, method="POST", body=body).status == 204
    assert marker in {s["name"] for s in send(sidecar.endpoint, "/api/v1/streams", [key]).json()["streams"]}
    assert send(sidecar.endpoint, "/mediamtx/hooks/not-ready", direct, method="POST", body=body).status == 204


@pytest.mark.caddy
@pytest.mark.parametrize("target", ["/mediamtx/auth/", "/mediamtx//auth", "/MEDIAMTX/auth", "/mediamtx/auth%0a"])
def test_misspelt_callback_url_on_the_sidecar_fails_closed(sidecar: SidecarInstance, target: str) -> None:
    """An operator's typo in authHTTPAddress must deny every connection, never answer 2xx (MediaMTX's allow)."""
    body = json.dumps(callback_body()).encode()  # no credentials at all
    reply = send(sidecar.endpoint, target, [("Content-Type", JSON)], method="POST", body=body)
    assert_refused(reply)


# --- absolute-form request targets ----------------------------------------------------------------------------------


@pytest.mark.caddy
@pytest.mark.parametrize(
    "target",
    [
        "http://other.example/users",
        "http://other.example/api/v1/users",
        "http://other.example/metrics",
        "http://other.example/.well-known/jwks.json",
        "http://other.example/api/status",
        "http://127.0.0.1@other.example/users",
    ],
)
def test_absolute_form_target_for_another_host_reaches_nothing(attacker: Attacker, target: str) -> None:
    reply = send(attacker.caddy, target, attacker.headers)
    assert_nothing_served(reply)
    assert b"upstream" not in reply.body


@pytest.mark.caddy
@pytest.mark.parametrize(
    ("path", "statuses"),
    [
        ("/metrics", (404,)),
        ("/.well-known/jwks.json", (404,)),
        ("/mediamtx/hooks/ready", (404,)),
        ("/healthz/../users", (400,)),
        ("/request-access/%2e%2e/api/v1/rules", (400,)),
        ("/users", (401, 403)),
        ("/api/v1/users", (401, 403)),
        ("/audit", (401, 403)),
        ("/api/status", (401, 403)),
    ],
)
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_absolute_form_target_for_this_host_is_routed_like_its_path(
    attacker: Attacker, scheme: str, path: str, statuses: tuple[int, ...]
) -> None:
    reply = send(attacker.caddy, f"{scheme}://{attacker.caddy.hostport}{path}", attacker.headers)
    assert_refused(reply, statuses)


@pytest.mark.caddy
def test_absolute_form_mediamtx_callback_is_not_reachable(caddy_anonymous: Endpoint, api_key: str) -> None:
    target = f"http://{caddy_anonymous.hostport}/mediamtx/auth"
    reply = send(caddy_anonymous, target, [("Content-Type", JSON)], method="POST", body=service_callback(api_key))
    assert (reply.status, reply.body) == (404, b"Not Found")


# --- the editor behind the sidecar, as a viewer ---------------------------------------------------------------------

EDITOR_TRICKS = [
    "/",
    "/api/status",
    "/login",
    "//api/status",
    "/%2fapi/status",
    "/api%2fstatus",
    "/API/STATUS",
    "/api/status;",
    "/api/status/",
    "/api/status%0a",
    "/api/status%00",
    "/api\\status",
    "/Streams",
    "/STREAMS",
    "/streams/..;/api/status",
    "/streams;x",
    "/users/..;/",
    "/api/v1/..;/..;/api/status",
    "/share/..;/api/status",
    "/SHARE/..;/api/status",
    "/Share/x",
    "/OVERLAY/x",
    "/Auth/x",
    "/AUTH/verify",
    "/Request-Access/x",
    "/HEALTHZ",
    "/Healthz/x",
    "/overlay",
    "/request-accessX",
    "/api/webeditor/email/settings%0a",
    "/%c0%afapi/status",
    "/%252fapi/status",
]


@pytest.mark.caddy
@pytest.mark.parametrize("target", EDITOR_TRICKS)
def test_viewer_cannot_reach_the_editor_with_any_path_spelling(viewer: Attacker, target: str) -> None:
    for method, body in (("GET", None), ("POST", b"{}"), ("PUT", b"{}"), ("DELETE", None)):
        reply = send(viewer.caddy, target, [*viewer.headers, *SPOOFED_ADMIN], method=method, body=body)
        assert_refused(reply)
        assert b"upstream" not in reply.body
    page = send(viewer.caddy, target, [*viewer.headers, *SPOOFED_ADMIN], accept=BROWSER)
    assert b"upstream" not in page.body
    if page.status == 302:
        # Viewers are sent to their streams; on a public prefix (identity stripped) everyone is sent to sign in.
        location = page.header("location") or ""
        assert location == "/streams" or location.startswith("/auth/login?next=/"), location
    else:
        assert page.status in REFUSED


@pytest.mark.caddy
@pytest.mark.parametrize("target", ["/SHARE/..;/api/status", "/OVERLAY/x", "/Auth/x", "/Request-Access/x", "/HEALTHZ"])
def test_case_folded_public_prefix_with_spoofed_admin_never_reaches_the_editor(
    caddy_anonymous: Endpoint, caddy_local: Endpoint, target: str
) -> None:
    """Caddy matches these as public (no forward_auth) case-insensitively; the sidecar sees an unknown path."""
    for caddy in (caddy_anonymous, caddy_local):
        reply = send(caddy, target, SPOOFED_ADMIN)
        assert (reply.status, reply.json()) == (401, {"error": "Unauthorized"})


# --- policy side: MediaMTX callback and playback tokens with ambiguous stream paths ---------------------------------


@dataclass
class Policy:
    env: MediaMTXEnv
    cam1: str  # bob's (vid_public) token for live/cam1
    parent: str  # bob's token for live/private: granted by `live/**`, since `live/private/*` needs one more segment
    admin_glob: str  # the admin's token for live/**
    api_key: str


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Policy]:
    """Rules `live/**` → vid_public, `live/private/*` → vid_private; bob is in vid_public only."""
    with open_mediamtx_env(MediaMTXEnv, tmp_path_factory.mktemp("path-tricks") / "data", fake_transport) as env:
        yield Policy(
            env,
            cam1=env.token("live/cam1"),
            parent=env.token("live/private"),
            admin_glob=env.token("live/**", "admin", ADMIN_PASSWORD),
            api_key=API_KEY,
        )


def assert_denied(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.json() == {"error": "Unauthorized"}


CAM1_SPELLINGS = [
    "live/../private/x",
    "live/cam1/../../live/private/x",
    "live/cam1/..",
    "live/cam1/.",
    "live/./cam1",
    "./live/cam1",
    "live/%2e%2e/private/x",
    "live/%2E%2E/private/x",
    "%2e%2e/live/cam1",
    "live%2fcam1",
    "live%2Fcam1",
    "live/cam%31",
    "live//cam1",
    "//live/cam1",
    "live/cam1/",
    "live/cam1//",
    "/live/cam1/",
    "LIVE/cam1",
    "Live/Cam1",
    "live/CAM1",
    "live\\cam1",
    "live/cam1\\",
    "live/cam1;x",
    "live/cam1%00",
    "live/cam1\x00",
    "live/cam1\n",
    "live/cam1\r\n",
    "live/cam1?x=1",
    "live/cam1#x",
    " live/cam1",
    "live/cam1 ",
    "live/c\u0430m1",  # Cyrillic a
    "\uff4c\uff49\uff56\uff45/cam1",  # full-width "live"
    "live/cam1\u200b",
    "live/cam1/" + "x" * 600,
    "~^live/cam1$",
    "~live/cam1",
]


@pytest.mark.parametrize("path", CAM1_SPELLINGS)
@pytest.mark.parametrize("action", ["read", "playback"])
def test_viewer_token_for_live_cam1_opens_no_other_spelling(policy: Policy, path: str, action: str) -> None:
    assert policy.env.auth(token=policy.cam1, path="live/cam1", action=action).status_code == 200
    assert_denied(policy.env.auth(token=policy.cam1, path=path, action=action))
    assert_denied(policy.env.auth(query=f"token={policy.cam1}", path=path, action=action))


@pytest.mark.parametrize(
    "path",
    [
        "live/private/x",
        "live/private/",
        "live/private//x",
        "live/private/./x",
        "live/private/%78",
        "live/private%2fx",
        "live/private%2Fx",
        "live/private\\x",
        "live/private;/x",
        "live/private/x/..",
        "live/private/..",
        "live/private/.",
        "LIVE/PRIVATE",
        "live/Private",
        "live/private\n",
        "live/private/x\n",
    ],
)
def test_viewer_token_for_a_parent_path_opens_nothing_beneath_or_beside_it(policy: Policy, path: str) -> None:
    assert policy.env.auth(token=policy.parent, path="live/private").status_code == 200
    assert_denied(policy.env.auth(token=policy.parent, path=path))


PRIVATE_SPELLINGS = [
    "live/private/x",
    "/live/private/x",
    "//live/private/x",
    "live/../private/x",
    "live/cam1/../private/x",
    "live/cam1/../../live/private/x",
    "live/%2e%2e/private/x",
    "live/%2E%2E/live/private/x",
    "live/./private/x",
    "live/private/./x",
    "live/private//x",
    "live//private/x",
    "live/private/x/",
    "live/private/x/.",
    "live/private%2fx",
    "live%2fprivate%2fx",
    "live/priv%61te/x",
    "live/Private/x",
    "live/PRIVATE/x",
    "LIVE/PRIVATE/X",
    "live/private\\x",
    "live/private/x%00",
    "live/private/x\x00",
    "live/private/x\n",
    "live/private/x?",
    "live/private/x#",
    "live/private/x;",
    "live/private/x ",
    "live/priv\u0430te/x",
    "live/private/*",
    "live/priv*/x",
    "*/private/x",
    "~^live/private/x$",
    "live/private/" + "x" * 600,
]


@pytest.mark.parametrize("path", PRIVATE_SPELLINGS)
def test_viewer_of_live_glob_gets_no_token_for_a_spelling_of_a_private_path(policy: Policy, path: str) -> None:
    response = policy.env.request_token(path)
    assert response.status_code in (400, 403), response.text
    assert "token" not in response.json()
    assert isinstance(response.json()["error"], str)


def test_viewer_of_live_glob_does_get_a_token_for_a_plain_public_path(policy: Policy) -> None:
    """The control for the test above: the same viewer, a canonical path under `live/**`."""
    response = policy.env.request_token("live/cam7")
    assert response.status_code == 200
    assert policy.env.auth(token=response.json()["token"], path="live/cam7").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "live/../private/x",
        "live/%2e%2e/private/x",
        "live//x",
        "live/x/",
        "live/./x",
        "live%2fx",
        "live/x\n",
        "live/x\nother/y",
        "other/y\nlive/x",
        "live/x\x00",
        "live\\x",
        "/live/x/",
        "live/x?y",
        "~^live/x$",
    ],
)
def test_admin_glob_token_and_api_key_deny_ambiguous_paths(policy: Policy, path: str) -> None:
    """Even credentials that cover everything below live/ refuse a path that is not one canonical name."""
    assert policy.env.auth(token=policy.admin_glob, path="live/x").status_code == 200
    assert_denied(policy.env.auth(token=policy.admin_glob, path=path))
    key = policy.api_key
    assert_denied(policy.env.auth(user="svc", password=key, token=key, path=path))
    assert_denied(policy.env.auth(user="svc", password=key, token=key, path=path, action="publish"))


def test_path_tricks_in_the_query_do_not_change_the_callback_path(policy: Policy) -> None:
    """MediaMTX passes the reader's query along; it must never stand in for, or add to, the path."""
    for query in ("path=live/cam1", "path=live/private/x", f"token={policy.cam1}&path=live/cam1", "/../cam1"):
        fields = {"query": f"token={policy.cam1}&{query}"}
        assert_denied(policy.env.auth(path="live/private/x", **fields))
        assert_denied(policy.env.auth(path="live/cam1/..", **fields))


@pytest.mark.parametrize("path", ["/mediamtx/auth/", "/mediamtx//auth", "/MEDIAMTX/auth", "/mediamtx/auth%0a"])
def test_misspelt_callback_path_in_process_never_allows(policy: Policy, path: str) -> None:
    body = json.loads(service_callback(policy.api_key))
    response = policy.env.client.post(path, json=body)
    assert response.status_code in REFUSED, response.text
    assert response.json().get("allowed") is not True
