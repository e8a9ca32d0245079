"""The shipped Caddyfile, run by the real Caddy binary in front of the real sidecar and stand-in upstreams."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sidecar.processes import MIN_CADDY_VERSION, caddy_binary, caddy_version, free_port, repo_caddyfile
from tests.processes_fixtures import (
    ADMIN_PASSWORD,
    OUTPOST_AUTH_URI,
    VIEWER_PASSWORD,
    VIEWER_USER,
    Endpoint,
    Launch,
    SidecarInstance,
    child_env,
)
from tests.raw_http import send
from tests.stand_ins import ALICE, SEEN_PATH

pytestmark = pytest.mark.caddy

CADDY_DIR = repo_caddyfile().parent / "caddy"
FIELDS = ("username", "groups", "email", "name", "uid")
SPOOFED = {"username": "admin", "groups": "vid_admin", "email": "root@example.org", "name": "Root", "uid": "0"}
SPELLINGS: dict[str, Callable[[str], str]] = {
    "canonical": lambda f: f"X-Authentik-{f.capitalize()}",
    "lower": lambda f: f"x-authentik-{f}",
    "upper": lambda f: f"X-AUTHENTIK-{f.upper()}",
    "underscore": lambda f: f"X_Authentik_{f.capitalize()}",
    "mixed-separators": lambda f: f"x-authentik_{f}",
    "dotted": lambda f: f"X.Authentik.{f.capitalize()}",
}


def spoofed(spelling: str) -> list[tuple[str, str]]:
    return [(SPELLINGS[spelling](field), SPOOFED[field]) for field in FIELDS]


SPOOFS: dict[str, list[tuple[str, str]]] = {
    **{spelling: spoofed(spelling) for spelling in SPELLINGS},
    "duplicated": [*spoofed("canonical"), ("X-Authentik-Groups", "vid_admin"), ("X-Authentik-Username", "admin")],
}
EVERY_SPOOF = [pair for pairs in SPOOFS.values() for pair in pairs]
# Headers the auth target reads to build redirects; a client's copy must not reach any backend.
FORWARDING_SPOOF = [("X-Forwarded-Uri", "//evil.example/"), ("X-Forwarded-Method", "DELETE"), ("X-Original-URL", "/x")]
ALICE_FORWARDED = sorted((k.lower(), v) for k, v in ALICE.items() if k.lower().removeprefix("x-authentik-") in FIELDS)
JSON = "application/json"
BROWSER = "text/html,application/xhtml+xml,*/*;q=0.8"


def identity_seen(described: dict[str, Any]) -> list[tuple[str, str]]:
    """Identity-looking headers an echo received, in any spelling."""
    return sorted((k, v) for k, v in described["headers"] if "authentik" in k.lower())


def header_names(described: dict[str, Any]) -> set[str]:
    return {k for k, _ in described["headers"]}


# --- Caddy itself ---------------------------------------------------------------------------------------------


def test_caddy_is_recent_enough() -> None:
    assert caddy_version() >= MIN_CADDY_VERSION


@pytest.mark.parametrize("auth_uri", ["/auth/verify", OUTPOST_AUTH_URI], ids=["local-mode", "authentik-mode"])
def test_shipped_caddyfile_is_valid(auth_uri: str, process_dir: Path) -> None:
    env = child_env(
        SITE_ADDRESS="http://127.0.0.1:1", AUTH_URI=auth_uri, CADDY_ADMIN="off", XDG_CONFIG_HOME=str(process_dir)
    )
    argv = [str(caddy_binary()), "validate", "--config", str(repo_caddyfile()), "--adapter", "caddyfile"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", ["Caddyfile", "caddy/strip-identity.caddy", "caddy/sidecar-routes.caddy"])
def test_shipped_caddy_files_are_formatted(name: str) -> None:
    path = repo_caddyfile().parent / name
    done = subprocess.run([str(caddy_binary()), "fmt", str(path)], capture_output=True, text=True, timeout=60)
    assert done.stdout == path.read_text()


def test_identity_strip_comes_before_forward_auth_in_the_adapted_config(process_dir: Path) -> None:
    env = child_env(CADDY_ADMIN="off", XDG_CONFIG_HOME=str(process_dir))
    argv = [str(caddy_binary()), "adapt", "--config", str(repo_caddyfile()), "--adapter", "caddyfile"]
    config = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    # Handlers are serialised in execution order; forward_auth is the reverse_proxy that carries a `rewrite`.
    assert 0 < config.index('"*authentik*"') < config.index('"rewrite"')


@pytest.fixture(scope="module")
def header_probe(launch: Launch, process_dir: Path, echo_sidecar: Endpoint) -> tuple[Endpoint, Endpoint]:
    """A Caddy told to keep underscore names for x_authentik_*: (site without the strip, site with it)."""
    plain, stripped = Endpoint("plain", free_port()), Endpoint("stripped", free_port())
    config = process_dir / "probe.Caddyfile"
    config.write_text(
        "{\n\tadmin off\n\tservers {\n\t\texpected_underscore_headers x_authentik_*\n\t}\n}\n"
        f"http://127.0.0.1:{plain.port} {{\n\treverse_proxy {echo_sidecar.hostport}\n}}\n"
        f"http://127.0.0.1:{stripped.port} {{\n\troute {{\n\t\timport {CADDY_DIR / 'strip-identity.caddy'}\n"
        f"\t\treverse_proxy {echo_sidecar.hostport}\n\t}}\n}}\n"
    )
    env = child_env(XDG_CONFIG_HOME=str(process_dir / "probe"), XDG_DATA_HOME=str(process_dir / "probe"))
    argv = [str(caddy_binary()), "run", "--config", str(config), "--adapter", "caddyfile"]
    launch("caddy-probe", argv, env, ready_port=stripped.port)
    return plain, stripped


def test_caddy_drops_underscore_and_dot_names_by_default(
    echo_sidecar: Endpoint, launch: Launch, process_dir: Path
) -> None:
    """Caddy >= 2.11.4 drops `_` (and `.`) names before routing; hyphenated ones pass unless the Caddyfile strips."""
    port = free_port()
    config = process_dir / "bare.Caddyfile"
    config.write_text(f"{{\n\tadmin off\n}}\nhttp://127.0.0.1:{port} {{\n\treverse_proxy {echo_sidecar.hostport}\n}}\n")
    env = child_env(XDG_CONFIG_HOME=str(process_dir / "bare"), XDG_DATA_HOME=str(process_dir / "bare"))
    argv = [str(caddy_binary()), "run", "--config", str(config), "--adapter", "caddyfile"]
    launch("caddy-bare", argv, env, ready_port=port)
    seen = send(Endpoint("bare", port), "/", EVERY_SPOOF).json()
    names = {k for k, _ in identity_seen(seen)}
    assert names == {f"x-authentik-{field}" for field in FIELDS}


def test_strip_snippet_removes_underscore_names_caddy_was_told_to_keep(header_probe: tuple[Endpoint, Endpoint]) -> None:
    plain, stripped = header_probe
    headers = [("X_Authentik_Groups", "vid_admin"), ("x_authentik_username", "admin")]
    assert identity_seen(send(plain, "/", headers).json()) == [
        ("x_authentik_groups", "vid_admin"),
        ("x_authentik_username", "admin"),
    ]
    assert identity_seen(send(stripped, "/", headers).json()) == []


# --- Routing and header flow, with an echo as the sidecar ------------------------------------------------------

# (target, upstream that must answer, whether it sits behind forward_auth). The editor's paths (`/`, `/login`,
# `/api/status`, ...) go to the sidecar too, whose proxy alone reaches the editor.
ROUTES = [
    ("/users", "sidecar", True),
    ("/users/bob", "sidecar", True),
    ("/streams", "sidecar", True),
    ("/api/v1/me", "sidecar", True),
    ("/api/v1/users?search=a", "sidecar", True),
    ("/users?x=/healthz", "sidecar", True),
    ("/", "sidecar", True),
    ("/login", "sidecar", True),
    ("/api/status", "sidecar", True),
    ("/api/streams", "sidecar", True),
    ("/api/webeditor/email/settings", "sidecar", True),
    ("/healthz/x", "sidecar", True),
    ("/healthz/", "sidecar", True),
    ("/healthz/..;/users", "sidecar", True),
    ("/request-accessible", "sidecar", True),
    ("/request-access", "sidecar", False),
    ("/request-access/confirm?token=x", "sidecar", False),
    ("/healthz", "sidecar", False),
    ("/healthz?/../users", "sidecar", False),
    ("/readyz", "sidecar", False),
    ("/version", "sidecar", False),
    ("/auth/verify", "sidecar", False),
    ("/auth/login?next=/users", "sidecar", False),
    ("/overlay/overlay.js", "sidecar", False),
    ("/outpost.goauthentik.io/start?rd=/users", "outpost", False),
]
BLOCKED = [
    ("/metrics", 404),
    ("/METRICS", 404),
    ("/metrics/", 404),
    ("//metrics", 404),
    ("/mediamtx/auth", 404),
    ("/mediamtx/hooks/ready", 404),
    ("/.well-known/jwks.json", 404),
    ("/users/../metrics", 400),
    ("/healthz/../users", 400),
    ("/healthz%2f..%2fusers", 400),
    ("/healthz%2F..%2Fusers", 400),
    ("/healthz/%2e%2e/users", 400),
    ("/users/../healthz", 400),
    ("/overlay/..%2f..%2fusers", 400),
    ("/./users", 400),
]


@pytest.mark.parametrize(("target", "upstream", "guarded"), ROUTES, ids=[r[0] for r in ROUTES])
def test_route_reaches_its_upstream_with_identity_only_from_the_outpost(
    caddy_echo: tuple[Endpoint, Endpoint], target: str, upstream: str, guarded: bool
) -> None:
    caddy, outpost = caddy_echo
    reply = send(caddy, target, EVERY_SPOOF + FORWARDING_SPOOF)
    assert reply.status == 200, reply.body
    seen = reply.json()
    assert seen["upstream"] == (outpost.name if upstream == "outpost" else upstream)
    # Caddy routes on the cleaned path but forwards the raw one; the Caddyfile refuses requests where they differ.
    assert seen["raw_path"] == target.split("?", 1)[0]
    if guarded and outpost.name == "outpost-alice":
        assert identity_seen(seen) == ALICE_FORWARDED
    else:
        assert identity_seen(seen) == []
    assert not header_names(seen) & {"x-forwarded-uri", "x-forwarded-method", "x-original-url"}


def test_client_forwarded_headers_are_replaced_by_caddy(caddy_echo: tuple[Endpoint, Endpoint]) -> None:
    caddy, _ = caddy_echo
    spoof = [("X-Forwarded-Host", "evil.example"), ("X-Forwarded-Proto", "https"), ("X-Forwarded-For", "192.0.2.9")]
    for target in ("/auth/login", "/users"):
        seen = dict(send(caddy, target, spoof).json()["headers"])
        assert (seen["x-forwarded-host"], seen["x-forwarded-proto"]) == (caddy.hostport, "http")
        assert seen["x-forwarded-for"] == "127.0.0.1"


@pytest.mark.parametrize(("target", "status"), BLOCKED, ids=[b[0] for b in BLOCKED])
def test_internal_and_ambiguous_paths_reach_no_upstream(
    caddy_echo: tuple[Endpoint, Endpoint], target: str, status: int
) -> None:
    caddy, _ = caddy_echo
    for method in ("GET", "POST"):
        reply = send(caddy, target, EVERY_SPOOF, method=method, body=b"{}" if method == "POST" else None)
        assert reply.status == status
        assert b"upstream" not in reply.body


def test_forward_auth_request_carries_no_client_identity(caddy_echo: tuple[Endpoint, Endpoint]) -> None:
    caddy, outpost = caddy_echo
    target = f"/users?probe={uuid.uuid4().hex}"
    assert send(caddy, target, EVERY_SPOOF + FORWARDING_SPOOF).status == 200
    seen = [entry for entry in send(outpost, SEEN_PATH).json() if ["x-forwarded-uri", target] in entry["headers"]]
    assert len(seen) == 1
    assert identity_seen(seen[0]) == []
    assert ["x-forwarded-method", "GET"] in seen[0]["headers"]


# --- The real sidecar behind Caddy in local mode ------------------------------------------------------------

PROTECTED = ["/api/v1/me", "/users", "/streams", "/api/v1/users", "/", "/api/status"]


def login(caddy: Endpoint, username: str, password: str) -> str:
    body = json.dumps({"username": username, "password": password}).encode()
    reply = send(caddy, "/auth/login", [("Content-Type", JSON)], method="POST", body=body)
    assert reply.status == 200, reply.body
    token: str = reply.json()["token"]
    cookie = reply.header("set-cookie") or ""
    assert cookie.startswith(f"sidecar_session={token}")
    return token


@pytest.fixture(scope="module")
def admin_token(caddy_local: Endpoint) -> str:
    return login(caddy_local, "admin", ADMIN_PASSWORD)


@pytest.fixture(scope="module")
def viewer_token(caddy_local: Endpoint) -> str:
    return login(caddy_local, VIEWER_USER, VIEWER_PASSWORD)


def cookie(token: str) -> tuple[str, str]:
    return ("Cookie", f"sidecar_session={token}")


@pytest.mark.parametrize("spoof", SPOOFS, ids=list(SPOOFS))
@pytest.mark.parametrize("target", [*PROTECTED, "/auth/verify"])
def test_spoofed_identity_through_caddy_is_not_honoured(caddy_local: Endpoint, target: str, spoof: str) -> None:
    reply = send(caddy_local, target, SPOOFS[spoof])
    assert reply.status == 401
    assert reply.json() == {"error": "Unauthorized"}


@pytest.mark.parametrize("spoof", SPOOFS, ids=list(SPOOFS))
@pytest.mark.parametrize("target", ["/healthz", "/version", "/auth/status", "/auth/login", "/request-access"])
def test_spoofed_identity_changes_nothing_on_public_routes(caddy_local: Endpoint, target: str, spoof: str) -> None:
    plain, spoofed_reply = send(caddy_local, target), send(caddy_local, target, SPOOFS[spoof])
    assert spoofed_reply.status == plain.status
    if (plain.header("content-type") or "").startswith(JSON):
        assert spoofed_reply.json() == plain.json()


def test_without_login_pages_redirect_to_sign_in_and_api_calls_get_401(caddy_local: Endpoint) -> None:
    reply = send(caddy_local, "/users", accept=BROWSER)
    assert reply.status == 302
    assert (reply.header("location") or "").startswith("/auth/login?next=/users")
    assert send(caddy_local, "/users").status == 401
    assert send(caddy_local, "/api/v1/me").json() == {"error": "Unauthorized"}


def test_local_admin_signs_in_through_caddy(caddy_local: Endpoint, admin_token: str) -> None:
    assert send(caddy_local, "/users", [cookie(admin_token)], accept=BROWSER).status == 200
    me = send(caddy_local, "/api/v1/me", [("Authorization", f"Bearer {admin_token}")]).json()
    assert (me["username"], me["role"]) == ("admin", "admin")


def test_local_admin_reaches_the_editor_through_the_sidecar_without_any_identity(
    caddy_local: Endpoint, admin_token: str
) -> None:
    reply = send(caddy_local, "/api/status?x=1", [cookie(admin_token), *EVERY_SPOOF, *FORWARDING_SPOOF])
    assert reply.status == 200, reply.body
    editor = reply.json()
    assert editor["upstream"] == "editor"
    assert (editor["raw_path"], editor["query"]) == ("/api/status", "x=1")
    # Neither the client's identity headers nor the ones /auth/verify gave Caddy reach the editor, nor the token.
    assert identity_seen(editor) == []
    assert not any("sidecar_session" in value for _, value in editor["headers"])
    assert not header_names(editor) & {"x-forwarded-uri", "x-forwarded-method", "x-original-url"}


def test_local_viewer_sees_streams_but_not_users(caddy_local: Endpoint, viewer_token: str) -> None:
    assert send(caddy_local, "/streams", [cookie(viewer_token)], accept=BROWSER).status == 200
    assert send(caddy_local, "/users", [cookie(viewer_token)], accept=BROWSER).status == 403
    for target in ("/api/status", "/", "/login", "/api/webeditor/email/settings"):
        reply = send(caddy_local, target, [cookie(viewer_token), *EVERY_SPOOF])
        assert reply.status == 403 and b"upstream" not in reply.body
    page = send(caddy_local, "/", [cookie(viewer_token)], accept=BROWSER)
    assert page.status == 302 and page.header("location") == "/streams"


@pytest.mark.parametrize("spoof", SPOOFS, ids=list(SPOOFS))
def test_signed_in_viewer_cannot_add_groups_with_spoofed_headers(
    caddy_local: Endpoint, viewer_token: str, spoof: str
) -> None:
    headers = [cookie(viewer_token), *SPOOFS[spoof]]
    me = send(caddy_local, "/api/v1/me", headers).json()
    assert (me["username"], me["role"], me["groups"]) == (VIEWER_USER, "viewer", ["vid_public"])
    assert send(caddy_local, "/users", headers).status == 403
    assert send(caddy_local, "/", headers).status == 403


HEALTH_TRICKS = [
    "/healthz/../users",
    "/healthz%2f..%2fusers",
    "/healthz%2F..%2Fusers",
    "/HEALTHZ/../users",
    "/healthz/%2e%2e/users",
    "/healthz/..;/users",
    "/healthz/x",
    "/healthz/",
    "/users/../healthz",
    "/users?x=/healthz",
    "/users#/healthz",
    "/healthz?/../users",
    "/readyz/../api/v1/me",
    "/request-access/../users",
    "/auth/verify/../../users",
]


@pytest.mark.parametrize("spoofed_admin", [False, True], ids=["plain", "spoofed-admin"])
@pytest.mark.parametrize("target", HEALTH_TRICKS)
def test_health_endpoints_never_unlock_other_routes(caddy_local: Endpoint, target: str, spoofed_admin: bool) -> None:
    reply = send(caddy_local, target, EVERY_SPOOF if spoofed_admin else ())
    if reply.status == 200:
        assert reply.json() == {"status": "ok"}
    else:
        assert reply.status in (400, 401, 404)


def test_mediamtx_endpoints_exist_on_the_sidecar_but_not_through_caddy(
    caddy_local: Endpoint, sidecar: SidecarInstance
) -> None:
    assert send(sidecar.endpoint, "/metrics").status == 401
    assert send(caddy_local, "/metrics").status == 404


# --- Authentik mode with stand-in outposts, real sidecar ------------------------------------------------------


def test_outpost_identity_wins_over_spoofed_headers(caddy_alice: Endpoint) -> None:
    me = send(caddy_alice, "/api/v1/me", EVERY_SPOOF).json()
    assert (me["username"], me["role"], me["groups"]) == ("alice", "viewer", ["vid_public"])
    assert send(caddy_alice, "/users", EVERY_SPOOF).status == 403
    # A viewer never reaches the editor, whatever she sends: the sidecar's proxy refuses her.
    for target in ("/api/status", "/", "/login"):
        reply = send(caddy_alice, target, EVERY_SPOOF)
        assert reply.status == 403 and b"upstream" not in reply.body


def test_outpost_without_identity_leaves_request_anonymous(caddy_anonymous: Endpoint) -> None:
    """Authentik answers 200 without X-Authentik-* on its unauthenticated paths (CVE-2026-30851)."""
    assert send(caddy_anonymous, "/api/v1/me", EVERY_SPOOF).status == 401
    assert send(caddy_anonymous, "/users", EVERY_SPOOF).status == 401
    for target in ("/", "/api/status"):
        reply = send(caddy_anonymous, target, EVERY_SPOOF)
        assert reply.status == 401 and b"upstream" not in reply.body


# --- The sidecar reached directly -----------------------------------------------------------------------------


def test_direct_request_from_untrusted_peer_is_anonymous(
    sidecar: SidecarInstance, sidecar_untrusting: SidecarInstance
) -> None:
    headers = spoofed("canonical")
    for target in ("/api/v1/me", "/users", "/auth/verify"):
        assert send(sidecar_untrusting.endpoint, target, headers).status == 401
    # The same headers from a trusted peer are honoured: only the trust list stands between them and admin.
    assert send(sidecar.endpoint, "/api/v1/me", headers).json()["role"] == "admin"


def test_duplicate_identity_header_from_trusted_peer_is_rejected(sidecar: SidecarInstance) -> None:
    reply = send(sidecar.endpoint, "/api/v1/me", SPOOFS["duplicated"])
    assert reply.status == 400
    assert "error" in reply.json()
