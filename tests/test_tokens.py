"""Playback tokens: forged and stale tokens refused (by `TokenIssuer` and by the callback), the JWKS, key rotation
with an injectable clock, `sidecar rotate-keys` against a fake MediaMTX, and a verifier that decides like MediaMTX's
JWT mode agreeing with the HTTP callback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from joserfc import jwt
from joserfc.jwk import ECKey
from starlette.testclient import TestClient

from sidecar.cli import main
from sidecar.settings import Settings
from sidecar.store import VERSION_POLL_SECONDS, Store
from sidecar.tokens import JWKS_CACHE_SECONDS, TokenInvalid, TokenIssuer
from tests.fake_mediamtx import FakeMediaMTX, create_fake_mediamtx
from tests.helpers import ADMIN_PASSWORD, API_KEY, bootstrapped_settings, login
from tests.mediamtx_env import BOB_PASSWORD, KEY, MediaMTXEnv, open_mediamtx_env
from tests.mediamtx_jwt import MediaMTXJWT, RelayJWKSRefresh, rfc7638_thumbprint

pytestmark = pytest.mark.usefixtures("cheap_bcrypt")

CAM1_PERMISSIONS = [{"action": "playback", "path": "live/cam1"}, {"action": "read", "path": "live/cam1"}]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: Any) -> str:
    return b64(json.dumps(value).encode())


def header_of(token: str) -> dict[str, Any]:
    first = token.split(".")[0]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(first + "=" * (-len(first) % 4)))
    return decoded


def kids(jwks: dict[str, Any]) -> set[str]:
    return {key["kid"] for key in jwks["keys"]}


# --- a sidecar wired to a fake MediaMTX and a MediaMTX-like JWT verifier ----------------------------------------------


@dataclass
class Env(MediaMTXEnv):
    verifier: MediaMTXJWT

    def signing_key(self, kid: str | None = None) -> tuple[str, ECKey]:
        rows = self.services.store.signing_keys()
        row = next(row for row in rows if kid is None or row["kid"] == kid)
        return row["kid"], ECKey.import_key(json.loads(row["private_jwk"]))

    def rotate(self, refresh: Callable[[], Any] | None) -> tuple[str, float]:
        result: tuple[str, float] = self.client.portal.call(self.services.tokens.rotate, refresh)
        return result


@contextmanager
def open_env(data_dir: Path) -> Iterator[Env]:
    jwks_from: list[TestClient] = []
    verifiers: list[MediaMTXJWT] = []

    def fetch_jwks() -> dict[str, Any]:
        response = jwks_from[0].get("/.well-known/jwks.json")
        assert response.status_code == 200
        document: dict[str, Any] = response.json()
        return document

    def relay(fake: FakeMediaMTX, settings: Settings) -> httpx.AsyncBaseTransport:
        verifiers.append(MediaMTXJWT(fetch_jwks, issuer=settings.jwt_issuer, audience=settings.jwt_audience))
        # MediaMTX's `POST /v3/auth/jwks/refresh` clears MediaMTX's JWKS cache: here, the verifier's.
        return httpx.ASGITransport(app=RelayJWKSRefresh(fake.app, verifiers[0]))

    def build(client: TestClient, fake: FakeMediaMTX, settings: Settings, transport: httpx.AsyncBaseTransport) -> Env:
        jwks_from.append(client)
        return Env(client, fake, settings, transport, verifiers[0])

    with open_mediamtx_env(build, data_dir, relay) as env:
        yield env


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with open_env(tmp_path / "data") as found:
        yield found


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One sidecar for cases that change nothing (no rotation, no revocation)."""
    with open_env(tmp_path_factory.mktemp("tokens") / "data") as found:
        yield found


# --- forged tokens ----------------------------------------------------------------------------------------------------


@dataclass
class Forge:
    kid: str
    key: ECKey
    settings: Settings
    now: int = field(default_factory=lambda: int(time.time()))

    def claims(self, **overrides: Any) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "iss": self.settings.jwt_issuer,
            "aud": self.settings.jwt_audience,
            "sub": "bob",
            "iat": self.now,
            "nbf": self.now,
            "exp": self.now + 300,
            "groups": ["vid_public"],
            self.settings.jwt_claim_key: CAM1_PERMISSIONS,
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def sign(self, claims: dict[str, Any] | None = None, *, key: ECKey | None = None, **header: Any) -> str:
        headers = {"alg": "ES256", "typ": "JWT", "kid": self.kid, **header}
        headers = {name: value for name, value in headers.items() if value is not None}
        return jwt.encode(headers, claims or self.claims(), key or self.key, algorithms=["ES256"])

    def hs256(self, secret: bytes) -> str:
        signing_input = f"{segment({'alg': 'HS256', 'typ': 'JWT', 'kid': self.kid})}.{segment(self.claims())}"
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64(signature)}"


def forge_for(env: Env) -> Forge:
    kid, key = env.signing_key()
    return Forge(kid, key, env.settings)


FOREIGN = ECKey.generate_key("P-256", private=True)


def _tampered(forge: Forge) -> str:
    header, _, signature = forge.sign().split(".")
    widened = forge.claims(**{forge.settings.jwt_claim_key: [{"action": "read", "path": ""}], "groups": ["vid_admin"]})
    return f"{header}.{segment(widened)}.{signature}"


ATTACKS: dict[str, Callable[[Forge], str]] = {
    "alg none": lambda f: f"{segment({'alg': 'none', 'typ': 'JWT', 'kid': f.kid})}.{segment(f.claims())}.",
    "alg none with the real signature": lambda f: (
        segment({"alg": "none", "kid": f.kid}) + "." + ".".join(f.sign().split(".")[1:])
    ),
    "HS256 keyed with the public key PEM": lambda f: f.hs256(f.key.as_pem(private=False)),
    "HS256 keyed with the public JWK JSON": lambda f: f.hs256(json.dumps(f.key.as_dict(private=False)).encode()),
    "HS256 keyed with the public key's x coordinate": lambda f: f.hs256(f.key.as_dict(private=False)["x"].encode()),
    "expired": lambda f: f.sign(f.claims(iat=f.now - 700, nbf=f.now - 700, exp=f.now - 100)),
    "nbf in the future": lambda f: f.sign(f.claims(nbf=f.now + 300, exp=f.now + 900)),
    "wrong aud": lambda f: f.sign(f.claims(aud="someone-else")),
    "no aud": lambda f: f.sign(f.claims(aud=None)),
    "wrong iss": lambda f: f.sign(f.claims(iss="https://attacker.example")),
    "no iss": lambda f: f.sign(f.claims(iss=None)),
    "no exp": lambda f: f.sign(f.claims(exp=None)),
    "unknown kid": lambda f: f.sign(key=FOREIGN, kid=FOREIGN.thumbprint()),
    "no kid, signed by the real key": lambda f: f.sign(kid=None),
    "a different EC key with a known kid": lambda f: f.sign(key=FOREIGN),
    "the attacker's key embedded in the header": lambda f: f.sign(
        key=FOREIGN, kid=FOREIGN.thumbprint(), jwk=FOREIGN.as_dict(private=False)
    ),
    "the attacker's key embedded under a known kid": lambda f: f.sign(key=FOREIGN, jwk=FOREIGN.as_dict(private=False)),
    "tampered claims segment": _tampered,
    "signature stripped": lambda f: f.sign().rsplit(".", 1)[0] + ".",
}


def test_the_forge_itself_makes_tokens_that_are_accepted(shared: Env) -> None:
    # Without this control a broken forge would make every attack below "pass".
    token = forge_for(shared).sign()
    claims = shared.services.tokens.verify(token)
    assert claims.subject == "bob" and claims.permissions == tuple(CAM1_PERMISSIONS)
    assert shared.auth(token=token).status_code == 200


@pytest.mark.parametrize("attack", list(ATTACKS.values()), ids=list(ATTACKS))
def test_forged_tokens_raise_token_invalid(shared: Env, attack: Callable[[Forge], str]) -> None:
    token = attack(forge_for(shared))
    with pytest.raises(TokenInvalid):
        shared.services.tokens.verify(token)


@pytest.mark.parametrize("attack", list(ATTACKS.values()), ids=list(ATTACKS))
def test_forged_tokens_are_refused_by_the_callback(shared: Env, attack: Callable[[Forge], str]) -> None:
    token = attack(forge_for(shared))
    assert shared.auth(token=token).status_code == 401
    assert shared.auth(query=f"jwt={token}", protocol="rtmp").status_code == 401


# MediaMTX (golang-jwt) checks `exp` only when present, so only the sidecar refuses a token without one.
MEDIAMTX_ALSO_ACCEPTS = {"no exp"}


@pytest.mark.parametrize("name", sorted(set(ATTACKS) - MEDIAMTX_ALSO_ACCEPTS))
def test_forged_tokens_are_refused_by_the_mediamtx_like_verifier_too(shared: Env, name: str) -> None:
    forge = forge_for(shared)
    assert shared.verifier.allows(forge.sign(), "read", "live/cam1")
    assert not shared.verifier.allows(ATTACKS[name](forge), "read", "live/cam1")


def test_a_token_issued_before_a_revocation_is_invalid(env: Env) -> None:
    token = env.token("live/cam1")
    admin_token = env.token("live/cam1", "admin", ADMIN_PASSWORD)
    assert env.auth(token=token).status_code == 200
    # Written through another connection, as another sidecar process (or the CLI) would.
    other = Store(env.settings.database_path)
    try:
        with other.transaction() as db:
            other.revoke_tokens(db, "bob", time.time() + 1)
    finally:
        other.close()
    time.sleep(VERSION_POLL_SECONDS * 2)  # another connection's commit shows within the poll interval
    with pytest.raises(TokenInvalid):
        env.services.tokens.verify(token)
    assert env.auth(token=token).status_code == 401
    # Only bob's tokens are affected.
    assert env.services.tokens.verify(admin_token).subject == "admin"
    assert env.auth(token=admin_token).status_code == 200


def test_a_malformed_crit_header_raises_token_invalid(shared: Env) -> None:
    token = f"{segment({'alg': 'ES256', 'kid': forge_for(shared).kid, 'crit': 5})}.{segment({'sub': 'bob'})}.AAAA"
    with pytest.raises(TokenInvalid):
        shared.services.tokens.verify(token)


def test_a_malformed_crit_header_is_refused_by_the_callback_with_401(shared: Env) -> None:
    token = f"{segment({'alg': 'ES256', 'crit': 5})}.{segment({'sub': 'bob'})}.AAAA"
    assert shared.auth(token=token).status_code == 401


# --- the JWKS ---------------------------------------------------------------------------------------------------------


def test_jwks_publishes_only_public_p256_keys_with_thumbprint_kids(shared: Env) -> None:
    response = shared.client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    keys = response.json()["keys"]
    assert keys
    for key in keys:
        assert set(key) <= {"kty", "crv", "x", "y", "kid", "use", "alg"}, key  # no "d" or other private members
        assert (key["kty"], key["crv"], key["alg"]) == ("EC", "P-256", "ES256")
        assert key.get("use", "sig") == "sig"
        assert key["kid"] == rfc7638_thumbprint(key)
    assert "max-age" in response.headers["cache-control"]
    assert response.headers["etag"].startswith('"')


def test_jwks_answers_304_for_a_matching_etag(shared: Env) -> None:
    first = shared.client.get("/.well-known/jwks.json")
    etag = first.headers["etag"]
    again = shared.client.get("/.well-known/jwks.json", headers={"if-none-match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert "cache-control" in again.headers
    other = shared.client.get("/.well-known/jwks.json", headers={"if-none-match": '"something-else"'})
    assert other.status_code == 200 and other.json() == first.json()
    assert shared.client.head("/.well-known/jwks.json").status_code == 200


def test_jwks_etag_changes_with_the_keys(env: Env) -> None:
    before = env.client.get("/.well-known/jwks.json").headers["etag"]
    env.rotate(None)
    after = env.client.get("/.well-known/jwks.json", headers={"if-none-match": before})
    assert after.status_code == 200
    assert after.headers["etag"] != before
    assert len(after.json()["keys"]) == 2


# --- rotation, with an injectable clock -------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = 1_900_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clocked(make_settings: Callable[..., Settings]) -> Iterator[tuple[TokenIssuer, Clock, Settings]]:
    found = make_settings(token_ttl_seconds=600)
    store = Store(found.database_path)
    clock = Clock()
    issuer = TokenIssuer(store, found, clock=clock)
    assert issuer.ensure_key() is not None
    yield issuer, clock, found
    store.close()


def issue(issuer: TokenIssuer) -> str:
    return issuer.issue("bob", CAM1_PERMISSIONS, ["vid_public"]).token


async def test_rotation_with_a_confirmed_refresh_signs_with_the_new_key_at_once(
    clocked: tuple[TokenIssuer, Clock, Settings],
) -> None:
    issuer, clock, found = clocked
    ttl = found.token_ttl_seconds
    (old_kid,) = kids(issuer.jwks())
    clock.now += 50
    old_token = issue(issuer)
    clock.now += 50
    rotated_at = clock.now
    published_when_asked: list[set[str]] = []

    async def refresh() -> None:
        published_when_asked.append(kids(issuer.jwks()))

    new_kid, sign_from = await issuer.rotate(refresh)
    assert new_kid != old_kid and sign_from == rotated_at
    # The new key was already in the JWKS when MediaMTX was asked to refetch it.
    assert published_when_asked == [{old_kid, new_kid}]
    new_token = issue(issuer)
    assert header_of(new_token)["kid"] == new_kid
    assert header_of(old_token)["kid"] == old_kid
    assert kids(issuer.jwks()) == {old_kid, new_kid}
    assert issuer.verify(old_token).subject == issuer.verify(new_token).subject == "bob"

    old_expiry = issuer.verify(old_token).expires_at
    clock.now = old_expiry - 1
    assert issuer.verify(old_token).subject == "bob"  # old tokens work until they expire
    clock.now = rotated_at + ttl - 1
    assert old_kid in kids(issuer.jwks())
    clock.now = rotated_at + ttl
    assert kids(issuer.jwks()) == {new_kid}  # gone once its last token has expired
    with pytest.raises(TokenInvalid):
        issuer.verify(old_token)
    assert issuer.verify(issue(issuer)).subject == "bob"


@pytest.mark.parametrize("outcome", ["refresh fails", "no refresh"])
async def test_rotation_without_a_refresh_keeps_the_old_key_signing_for_an_hour(
    clocked: tuple[TokenIssuer, Clock, Settings], outcome: str
) -> None:
    issuer, clock, found = clocked
    ttl = found.token_ttl_seconds
    (old_kid,) = kids(issuer.jwks())
    calls = []

    async def failing_refresh() -> None:
        calls.append(1)
        raise httpx.ConnectError("MediaMTX is down")

    rotated_at = clock.now
    new_kid, sign_from = await issuer.rotate(failing_refresh if outcome == "refresh fails" else None)
    assert calls == ([1] if outcome == "refresh fails" else [])
    assert sign_from == rotated_at + JWKS_CACHE_SECONDS
    assert kids(issuer.jwks()) == {old_kid, new_kid}  # the new key is published at once ...
    assert header_of(issue(issuer))["kid"] == old_kid  # ... but the old key keeps signing
    clock.now = rotated_at + JWKS_CACHE_SECONDS - 1
    last_old_token = issue(issuer)
    assert header_of(last_old_token)["kid"] == old_kid
    clock.now = rotated_at + JWKS_CACHE_SECONDS
    assert header_of(issue(issuer))["kid"] == new_kid
    clock.now = issuer.verify(last_old_token).expires_at - 1
    assert issuer.verify(last_old_token).subject == "bob"
    assert old_kid in kids(issuer.jwks())
    clock.now = rotated_at + JWKS_CACHE_SECONDS + ttl
    assert kids(issuer.jwks()) == {new_kid}
    with pytest.raises(TokenInvalid):
        issuer.verify(last_old_token)


async def test_rotation_is_audited_with_the_refresh_outcome(clocked: tuple[TokenIssuer, Clock, Settings]) -> None:
    issuer, _, _ = clocked

    async def refresh() -> None:
        return None

    confirmed, _ = await issuer.rotate(refresh)
    unconfirmed, _ = await issuer.rotate(None)
    events = issuer.store.list_audit(action="keys.rotate")
    assert [(event.target, event.detail["refreshed"]) for event in events] == [(unconfirmed, False), (confirmed, True)]


# --- sidecar rotate-keys ----------------------------------------------------------------------------------------------


@pytest.fixture
def fake_server() -> Iterator[tuple[FakeMediaMTX, str]]:
    """The fake MediaMTX control API on a real local port, so the CLI's own HTTP client can reach it."""
    fake = create_fake_mediamtx()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(fake.app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.01)
    assert server.started
    yield fake, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bootstrapped data dir and a clean SIDECAR_* environment pointing at it (no .env in the working dir)."""
    for name in list(os.environ):
        if name.startswith("SIDECAR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    data_dir = tmp_path / "data"
    bootstrapped_settings(data_dir)
    monkeypatch.setenv("SIDECAR_DATA_DIR", str(data_dir))
    monkeypatch.setenv("SIDECAR_API_KEY", API_KEY)
    return data_dir


def stored_keys(data_dir: Path) -> dict[str, tuple[float, float | None]]:
    store = Store(data_dir / "sidecar.db")
    try:
        return {row["kid"]: (row["sign_from"], row["retire_at"]) for row in store.signing_keys()}
    finally:
        store.close()


def test_rotate_keys_cli_asks_mediamtx_to_refresh_exactly_once(
    cli_env: Path,
    fake_server: tuple[FakeMediaMTX, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake, url = fake_server
    monkeypatch.setenv("SIDECAR_MEDIAMTX_API_URL", url)
    before = stored_keys(cli_env)
    started = time.time()
    assert main(["rotate-keys"]) == 0
    out = capsys.readouterr().out
    assert fake.jwks_refreshes == 1
    assert [(r.method, r.path) for r in fake.requests] == [("POST", "/v3/auth/jwks/refresh")]
    assert "signs from now on" in out
    after = stored_keys(cli_env)
    (new_kid,) = set(after) - set(before)
    assert new_kid in out
    assert after[new_kid][0] <= time.time() and after[new_kid][1] is None
    (old_kid,) = before
    retire_at = after[old_kid][1]
    assert retire_at is not None and retire_at >= started + 600


def test_rotate_keys_cli_with_mediamtx_unreachable_delays_the_new_key(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    monkeypatch.setenv("SIDECAR_MEDIAMTX_API_URL", f"http://127.0.0.1:{port}")
    before = stored_keys(cli_env)
    started = time.time()
    assert main(["rotate-keys"]) == 0
    out = capsys.readouterr().out
    assert "was not asked" in out
    after = stored_keys(cli_env)
    (new_kid,) = set(after) - set(before)
    assert after[new_kid][0] >= started + JWKS_CACHE_SECONDS


# --- JWT mode: a verifier that behaves like MediaMTX's ----------------------------------------------------------------

PARITY_CASES = [
    ("read", "live/cam1", "rtsp"),
    ("playback", "live/cam1", ""),
    ("read", "live/cam2", "hls"),
    ("read", "live/private/x", "webrtc"),
    ("read", "live/a/b", "srt"),
    ("read", "live", "rtsp"),
    ("read", "other/x", "rtmp"),
    ("read", "xlive/cam1", "rtsp"),
    ("publish", "live/cam1", "rtsp"),
    ("api", "", ""),
    ("metrics", "", ""),
    ("pprof", "", ""),
]


def test_jwt_mode_makes_the_same_decisions_as_http_mode(shared: Env) -> None:
    tokens = {
        "viewer live/cam1": shared.token("live/cam1"),
        "admin live/**": shared.token("live/**", "admin", ADMIN_PASSWORD),
        "admin live/private/x": shared.token("live/private/x", "admin", ADMIN_PASSWORD),
    }
    shared.verifier.refresh()
    fetches = shared.verifier.fetches
    mismatches = []
    for name, token in tokens.items():
        for action, path, protocol in PARITY_CASES:
            jwt_mode = shared.verifier.allows(token, action, path)
            http_mode = shared.auth(token=token, action=action, path=path, protocol=protocol).status_code == 200
            if jwt_mode != http_mode:
                mismatches.append((name, action, path, jwt_mode, http_mode))
    assert mismatches == []
    assert shared.verifier.allows(tokens["viewer live/cam1"], "read", "live/cam1")
    assert not shared.verifier.allows(tokens["viewer live/cam1"], "read", "live/cam2")
    assert shared.verifier.fetches == fetches + 1  # fetched once, then cached


def test_after_rotation_without_refresh_a_stale_mediamtx_still_accepts_new_tokens(env: Env) -> None:
    before = env.token("live/cam1")
    assert env.verifier.allows(before, "read", "live/cam1")
    assert env.verifier.fetches == 1
    old_kid = header_of(before)["kid"]

    assert env.services.mediamtx is not None
    env.fake.fail_next(500)  # MediaMTX cannot be asked to refetch
    new_kid, _ = env.rotate(env.services.mediamtx.refresh_jwks)
    assert env.fake.jwks_refreshes == 0
    assert new_kid in kids(env.client.get("/.well-known/jwks.json").json())  # published already

    after = env.token("live/cam1")
    assert header_of(after)["kid"] == old_kid  # still the key the stale cache knows
    assert env.verifier.allows(after, "read", "live/cam1")
    assert env.auth(token=after).status_code == 200
    assert env.verifier.fetches == 1
    # Had the sidecar signed with the new key at once, the stale MediaMTX would refuse every new token.
    _, new_key = env.signing_key(new_kid)
    too_early = jwt.encode({"alg": "ES256", "kid": new_kid}, env.verifier.claims(after), new_key, algorithms=["ES256"])
    assert not env.verifier.allows(too_early, "read", "live/cam1")


def test_after_rotation_with_refresh_mediamtx_refetches_and_accepts_the_new_key(env: Env) -> None:
    before = env.token("live/cam1")
    assert env.verifier.allows(before, "read", "live/cam1")
    assert env.services.mediamtx is not None
    new_kid, _ = env.rotate(env.services.mediamtx.refresh_jwks)
    assert env.fake.jwks_refreshes == 1
    after = env.token("live/cam1")
    assert header_of(after)["kid"] == new_kid
    assert env.verifier.allows(after, "read", "live/cam1")
    assert env.verifier.fetches == 2
    assert env.verifier.known_kids() == {header_of(before)["kid"], new_kid}
    assert env.verifier.allows(before, "read", "live/cam1")  # the old key stays until its tokens expire
    assert env.auth(token=after).status_code == 200
    assert env.auth(token=before).status_code == 200


def test_the_sidecars_own_api_token_is_accepted_in_jwt_mode_for_api_only(shared: Env) -> None:
    issued = shared.services.tokens.issue("sidecar", [{"action": "api", "path": ""}], [], service=True, ttl=60)
    assert shared.verifier.allows(issued.token, "api", "")
    assert not shared.verifier.allows(issued.token, "read", "live/cam1")
    assert shared.auth(token=issued.token, action="api", path="", protocol="").status_code == 200
    assert shared.auth(token=issued.token).status_code == 401


def request_as_bob(env: Env, path: str) -> httpx.Response:
    env.client.cookies.clear()
    headers = login(env.client, "bob", BOB_PASSWORD)
    return env.client.post("/api/v1/streams/token", json={"path": path}, headers=headers)


def test_http_mode_keeps_a_tilde_path_token_to_what_the_rules_allow(env: Env) -> None:
    # A rule covering every path (an operator's catch-all) lets a viewer name a "stream" that starts with "~".
    assert env.client.put("/api/v1/rules", json={"pattern": "**", "groups": ["vid_public"]}, headers=KEY).is_success
    response = request_as_bob(env, "~.")
    if response.status_code == 200:
        # The callback re-decides every request against the rules, so the private stream stays closed.
        assert env.auth(token=response.json()["token"], path="live/private/x").status_code == 401
    else:
        assert response.status_code in (400, 403)


def test_a_viewer_token_never_carries_a_regex(env: Env) -> None:
    assert env.client.put("/api/v1/rules", json={"pattern": "**", "groups": ["vid_public"]}, headers=KEY).is_success
    response = request_as_bob(env, "~.")
    if response.status_code != 200:
        return  # refusing such a path is a fine answer
    token = response.json()["token"]
    assert not env.verifier.allows(token, "read", "live/private/x")  # the rules give live/private/* to vid_private
    permissions = env.verifier.permissions(env.verifier.claims(token))
    assert all(not p["path"].startswith("~") for p in permissions), permissions
