"""MediaMTX's HTTP auth callback (`POST /mediamtx/auth`) fed with MediaMTX's exact body: viewer tokens, the API key,
publisher credentials, malformed input, who may call it, the claims inside playback tokens, and remembered sessions."""

from __future__ import annotations

import hmac
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import KeySet
from starlette.testclient import TestClient

from sidecar import publishers as publishers_module
from sidecar.app import create_app
from tests.helpers import ADMIN_PASSWORD, API_KEY, CALLBACK_FIELDS, TRUSTED_PEER, UNTRUSTED_PEER, callback_body
from tests.mediamtx_env import RULES, MediaMTXEnv, fake_transport, open_mediamtx_env
from tests.mediamtx_jwt import rfc7638_thumbprint

pytestmark = pytest.mark.usefixtures("cheap_bcrypt")

PROTOCOLS = ("rtsp", "rtmp", "hls", "webrtc", "srt", "moq")


Env = MediaMTXEnv


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """A bootstrapped sidecar whose MediaMTX client talks to the fake; rules seeded, bob in vid_public."""
    with open_mediamtx_env(Env, tmp_path / "data", fake_transport) as found:
        yield found


@dataclass
class Shared:
    env: Env
    cam1: str  # bob's (vid_public) token for live/cam1
    admin_glob: str  # the admin's token for live/**


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """One sidecar for the read-only cases (nothing here changes rules, users or publishers)."""
    with open_mediamtx_env(Env, tmp_path_factory.mktemp("media-auth") / "data", fake_transport) as env:
        cam1 = env.token("live/cam1")
        admin_glob = env.token("live/**", "admin", ADMIN_PASSWORD)
        yield Shared(env, cam1, admin_glob)


def assert_json_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert isinstance(response.json().get("error"), str)


# --- viewers with a playback token ------------------------------------------------------------------------------------

TOKEN_CARRIERS: dict[str, Callable[[str], dict[str, str]]] = {
    "token": lambda token: {"token": token},
    "password copied into token": lambda token: {"user": "bob", "password": token, "token": token},
    "query token=": lambda token: {"query": f"foo=bar&token={token}"},
    "query jwt=": lambda token: {"query": f"jwt={token}"},
}
VIEW_CASES = [("read", protocol) for protocol in PROTOCOLS] + [("playback", "")]


@pytest.mark.parametrize("carrier", sorted(TOKEN_CARRIERS))
@pytest.mark.parametrize(("action", "protocol"), VIEW_CASES)
def test_viewer_token_is_allowed_for_every_protocol(shared: Shared, action: str, protocol: str, carrier: str) -> None:
    fields = TOKEN_CARRIERS[carrier](shared.cam1)
    response = shared.env.auth(action=action, protocol=protocol, path="live/cam1", **fields)
    assert response.status_code == 200, response.text


VIEWER_DENIED = [
    ("read", "live/private/x", "rtsp"),
    ("playback", "live/private/x", ""),
    ("read", "live/cam2", "hls"),
    ("playback", "live/cam2", ""),
    ("read", "other/cam1", "webrtc"),
    ("read", "live/cam1/sub", "rtsp"),
    ("read", "live", "rtsp"),
    ("publish", "live/cam1", "rtsp"),
    ("publish", "live/cam1", "rtmp"),
    ("publish", "live/cam1", "webrtc"),
    ("api", "", ""),
    ("metrics", "", ""),
    ("pprof", "", ""),
    ("delete", "live/cam1", "rtsp"),
    ("READ", "live/cam1", "rtsp"),
    ("", "live/cam1", "rtsp"),
]


@pytest.mark.parametrize("carrier", ["token", "query token="])
@pytest.mark.parametrize(("action", "path", "protocol"), VIEWER_DENIED)
def test_viewer_token_is_denied_outside_its_grant(
    shared: Shared, action: str, path: str, protocol: str, carrier: str
) -> None:
    fields = TOKEN_CARRIERS[carrier](shared.cam1)
    response = shared.env.auth(action=action, path=path, protocol=protocol, **fields)
    assert_json_error(response, 401)


def test_a_token_for_one_stream_opens_only_that_stream(shared: Shared) -> None:
    cam2 = shared.env.token("live/cam2")
    assert shared.env.auth(token=shared.cam1, path="live/cam1").status_code == 200
    assert shared.env.auth(token=shared.cam1, path="live/cam2").status_code == 401
    assert shared.env.auth(token=cam2, path="live/cam2").status_code == 200
    assert shared.env.auth(token=cam2, path="live/cam1").status_code == 401


def test_viewer_cannot_get_a_token_for_a_private_stream_or_a_pattern(shared: Shared) -> None:
    assert_json_error(shared.env.request_token("live/private/x"), 403)
    for pattern in ("live/*", "live/**", "**"):
        response = shared.env.request_token(pattern)
        assert_json_error(response, 400)
        assert response.json().get("field") == "path"


def test_the_admin_glob_token_covers_the_private_stream_that_the_viewer_cannot_open(shared: Shared) -> None:
    # The same path is denied to the viewer because of groups, not because it is unreachable.
    assert shared.env.auth(token=shared.admin_glob, path="live/private/x").status_code == 200
    assert shared.env.auth(token=shared.admin_glob, path="live/a/b/c", protocol="hls").status_code == 200
    assert shared.env.auth(token=shared.admin_glob, path="other/x").status_code == 401
    assert shared.env.auth(token=shared.admin_glob, path="live").status_code == 401
    assert shared.env.auth(token=shared.admin_glob, action="publish").status_code == 401


def test_a_garbage_token_is_denied(shared: Shared) -> None:
    header, claims, signature = shared.cam1.split(".")
    for token in (f"{header}.{claims}.", f"{header}.{claims}.{signature[::-1]}", "a" * 30 + ".b.c", "x.y.z"):
        assert shared.env.auth(token=token).status_code == 401
        assert shared.env.auth(query=f"token={token}").status_code == 401


# --- no credentials, malformed bodies, callers ------------------------------------------------------------------------


@pytest.mark.parametrize(("action", "protocol"), [("read", "rtsp"), ("publish", "rtmp"), ("playback", ""), ("api", "")])
def test_empty_credentials_are_401_so_rtsp_clients_prompt(shared: Shared, action: str, protocol: str) -> None:
    response = shared.env.auth(action=action, protocol=protocol, user="", password="", token="", query="")
    assert_json_error(response, 401)


def _with(**fields: Any) -> bytes:
    return json.dumps(callback_body(**fields)).encode()


MALFORMED = {
    "empty body": b"",
    "truncated JSON": b'{"action": "read"',
    "not JSON": b"action=read&path=live/cam1",
    "not UTF-8": b"\xff\xfe\x00{",
    "a JSON list": json.dumps([callback_body()]).encode(),
    "a JSON string": b'"read"',
    "JSON null": b"null",
    "a JSON number": b"42",
    "user is a number": _with(user=5),
    "password is a list": _with(password=["x"]),
    "token is an object": _with(token={"jwt": "x"}),
    "action is a list": _with(action=["read"]),
    "path is a number": _with(path=1.5),
    "protocol is a boolean": _with(protocol=True),
    "query is a number": _with(query=0),
    "ip is a number": _with(ip=3232235777),
    "userAgent is a list": _with(userAgent=["VLC"]),
    "id is a number": _with(id=5),
    "id is an object": _with(id={"uuid": str(uuid.uuid4())}),
    "id is a boolean": _with(id=True),
    "a field is too long": _with(user="u" * 5000),
}


@pytest.mark.parametrize("content", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_bodies_are_400_json(shared: Shared, content: bytes) -> None:
    response = shared.env.client.post("/mediamtx/auth", content=content, headers={"content-type": "application/json"})
    assert_json_error(response, 400)


@pytest.mark.parametrize("content", [b"[" * 5000 + b"]" * 5000, b'{"a":' * 2000 + b"1" + b"}" * 2000])
def test_deeply_nested_json_is_400_not_500(shared: Shared, content: bytes) -> None:
    assert len(content) <= 16 * 1024  # under the callback's own cap: the parser has to cope with it
    response = shared.env.client.post("/mediamtx/auth", content=content, headers={"content-type": "application/json"})
    assert_json_error(response, 400)


def test_a_body_over_16_kib_is_400_json(shared: Shared) -> None:
    # Every field is valid; only the size is wrong (MediaMTX never sends an unknown key, so padding goes there).
    body = callback_body(token=shared.cam1)
    small = json.dumps({**body, "pad": "p" * (16 * 1024 - 2000)}).encode()
    large = json.dumps({**body, "pad": "p" * (16 * 1024)}).encode()
    assert len(small) <= 16 * 1024 < len(large)
    assert shared.env.client.post("/mediamtx/auth", content=small).status_code == 200
    assert_json_error(shared.env.client.post("/mediamtx/auth", content=large), 400)


def test_a_body_over_the_app_wide_cap_is_413_json_whether_declared_or_streamed(shared: Shared) -> None:
    # Past the app-wide 64 KiB cap the answer is 413, as on every route; MediaMTX treats any non-2xx as deny.
    large = json.dumps({**callback_body(token=shared.cam1), "pad": "p" * (100 * 1024)}).encode()
    assert_json_error(shared.env.client.post("/mediamtx/auth", content=large), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while the body arrives
        for start in range(0, len(large), 8192):
            yield large[start : start + 8192]

    assert_json_error(shared.env.client.post("/mediamtx/auth", content=chunks()), 413)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_on_the_callback_are_405_json(shared: Shared, method: str) -> None:
    response = shared.env.client.request(method, "/mediamtx/auth")
    assert_json_error(response, 405)
    assert response.headers["allow"] == "POST"


def test_a_failure_inside_the_decision_is_a_json_500_without_details(
    shared: Shared, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(request: object) -> object:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(shared.env.services.media_auth, "check", broken)
    response = shared.env.client.post("/mediamtx/auth", json=callback_body(token=shared.cam1))
    assert_json_error(response, 500)
    assert "secret internals" not in response.text and "Traceback" not in response.text
    assert "secret internals" in caplog.text  # the operator's log has it


def test_a_caller_outside_the_allowed_ips_is_403_even_with_a_valid_token(shared: Shared) -> None:
    app = create_app(shared.env.settings)
    with TestClient(app, client=UNTRUSTED_PEER, raise_server_exceptions=False) as outsider:
        response = outsider.post("/mediamtx/auth", json=callback_body(token=shared.cam1))
        assert_json_error(response, 403)
        response = outsider.post("/mediamtx/auth", json=callback_body(password=API_KEY, token=API_KEY))
        assert_json_error(response, 403)


def test_the_allowed_ips_setting_admits_another_network(shared: Shared) -> None:
    widened = shared.env.settings.model_copy(update={"mediamtx_allowed_ips": ["203.0.113.0/24"]})
    with TestClient(create_app(widened), client=UNTRUSTED_PEER, raise_server_exceptions=False) as mediamtx:
        assert mediamtx.post("/mediamtx/auth", json=callback_body(token=shared.cam1)).status_code == 200
    with TestClient(create_app(widened), client=TRUSTED_PEER, raise_server_exceptions=False) as loopback:
        assert_json_error(loopback.post("/mediamtx/auth", json=callback_body(token=shared.cam1)), 403)


# --- the API key ------------------------------------------------------------------------------------------------------

SERVICE_CASES = [
    ("api", "", ""),
    ("metrics", "", ""),
    ("pprof", "", ""),
    ("publish", "live/cam1", "rtsp"),
    ("publish", "live/private/x", "rtmp"),
    ("read", "live/private/x", "hls"),
    ("read", "unruled/path", "rtsp"),
    ("playback", "live/cam1", ""),
]


@pytest.mark.parametrize("user", ["", "anyone", "bob"])
@pytest.mark.parametrize(("action", "path", "protocol"), SERVICE_CASES)
def test_the_api_key_as_password_is_allowed_everything(
    shared: Shared, user: str, action: str, path: str, protocol: str
) -> None:
    # MediaMTX copies the password into `token` when there is no bearer token.
    response = shared.env.auth(user=user, password=API_KEY, token=API_KEY, action=action, path=path, protocol=protocol)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "key", ["wrong-key-0123456789", API_KEY + "x", API_KEY[:-1], API_KEY.upper(), " " + API_KEY, API_KEY[::-1]]
)
@pytest.mark.parametrize(("action", "path", "protocol"), SERVICE_CASES[:4])
def test_a_wrong_api_key_is_401(shared: Shared, key: str, action: str, path: str, protocol: str) -> None:
    response = shared.env.auth(user="anyone", password=key, token=key, action=action, path=path, protocol=protocol)
    assert_json_error(response, 401)


def test_the_api_key_as_user_name_is_no_credential(shared: Shared) -> None:
    assert_json_error(shared.env.auth(user=API_KEY, password="x", token="x", action="api", path=""), 401)


# --- publisher credentials --------------------------------------------------------------------------------------------


def create_publisher(env: Env, name: str, pattern: str) -> str:
    headers = env.sign_in()
    response = env.client.post("/api/v1/publishers", json={"name": name, "pattern": pattern}, headers=headers)
    assert response.status_code == 201, response.text
    secret: str = response.json()["secret"]
    return secret


def publish(env: Env, name: str, secret: str, path: str, protocol: str = "rtsp", action: str = "publish") -> int:
    return env.auth(user=name, password=secret, token=secret, action=action, path=path, protocol=protocol).status_code


def test_a_publisher_may_publish_only_within_its_pattern(env: Env) -> None:
    secret = create_publisher(env, "drone1", "drones/d1/*")
    for protocol in ("rtsp", "rtmp", "srt", "webrtc"):
        assert publish(env, "drone1", secret, "drones/d1/feed", protocol) == 200
    for path in (
        "drones/d2/feed",
        "drones/d1",
        "drones/d1/feed/x",
        "live/cam1",
        "drones/d1/../d2/feed",
        "/drones/d2/f",
    ):
        assert publish(env, "drone1", secret, path) == 401, path
    assert publish(env, "drone1", secret + "x", "drones/d1/feed") == 401
    assert publish(env, "drone2", secret, "drones/d1/feed") == 401


@pytest.mark.parametrize(("action", "protocol"), [("read", "rtsp"), ("playback", ""), ("api", ""), ("metrics", "")])
def test_a_publisher_credential_grants_nothing_but_publish(env: Env, action: str, protocol: str) -> None:
    secret = create_publisher(env, "drone1", "drones/**")
    path = "" if action in ("api", "metrics") else "drones/d1/feed"
    assert publish(env, "drone1", secret, path, protocol, action=action) == 401


def test_a_revoked_publisher_is_denied(env: Env) -> None:
    secret = create_publisher(env, "drone1", "drones/**")
    assert publish(env, "drone1", secret, "drones/d1/feed") == 200
    headers = env.sign_in()
    assert env.client.delete("/api/v1/publishers/drone1", headers=headers).status_code == 200
    assert publish(env, "drone1", secret, "drones/d1/feed") == 401
    # A new credential with the same name gets a new secret; the old one stays dead.
    new_secret = create_publisher(env, "drone1", "drones/**")
    assert new_secret != secret
    assert publish(env, "drone1", secret, "drones/d1/feed") == 401
    assert publish(env, "drone1", new_secret, "drones/d1/feed") == 200


def test_the_publisher_secret_is_shown_once_and_never_stored_or_listed(env: Env) -> None:
    secret = create_publisher(env, "drone1", "drones/**")
    headers = env.sign_in()
    listed = env.client.get("/api/v1/publishers", headers=headers)
    assert listed.status_code == 200
    assert [p["name"] for p in listed.json()["publishers"]] == ["drone1"]
    assert secret not in listed.text
    assert "secret" not in json.dumps(listed.json()["publishers"][0])
    for event in env.services.store.list_audit(limit=1000):
        assert secret not in json.dumps(event.detail)
    stored = env.services.store.publisher("drone1")
    assert stored is not None and secret not in tuple(stored)
    for file in env.settings.data_dir.glob("sidecar.db*"):
        assert secret.encode() not in file.read_bytes(), file.name


def test_an_unknown_publisher_name_costs_the_same_hash_comparison(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = create_publisher(env, "drone1", "drones/**")
    counts = {"secret_hash": 0, "compare_digest": 0}
    real_hash, real_compare = publishers_module.secret_hash, hmac.compare_digest

    def counting_hash(value: str) -> str:
        counts["secret_hash"] += 1
        return real_hash(value)

    def counting_compare(a: Any, b: Any) -> bool:
        counts["compare_digest"] += 1
        return real_compare(a, b)

    monkeypatch.setattr(publishers_module, "secret_hash", counting_hash)
    monkeypatch.setattr(hmac, "compare_digest", counting_compare)

    def work_for(name: str) -> dict[str, int]:
        counts.update(secret_hash=0, compare_digest=0)
        assert publish(env, name, "wrong-" + secret, "drones/d1/feed") == 401
        return dict(counts)

    known, unknown = work_for("drone1"), work_for("no-such-drone")
    assert known["secret_hash"] >= 1 and known["compare_digest"] >= 1
    assert unknown == known


# --- tokens are re-decided against the current rules ------------------------------------------------------------------


def test_an_old_token_is_denied_once_the_rule_no_longer_names_the_viewers_group(env: Env) -> None:
    token = env.token("live/cam1")
    assert env.auth(token=token).status_code == 200
    headers = env.sign_in()
    response = env.client.put("/api/v1/rules", json={"pattern": "live/**", "groups": ["vid_private"]}, headers=headers)
    assert response.status_code == 200
    assert env.auth(token=token).status_code == 401
    assert env.auth(query=f"token={token}", protocol="hls").status_code == 401
    # It is the rule that decides, not a revocation: restoring the rule makes the same token work again.
    response = env.client.put("/api/v1/rules", json=RULES[0], headers=headers)
    assert response.status_code == 200
    assert env.auth(token=token).status_code == 200
    env.client.portal.call(env.services.revoker.idle)


def test_an_old_token_is_denied_once_a_more_specific_rule_excludes_the_path(env: Env) -> None:
    token = env.token("live/cam1")
    headers = env.sign_in()
    rule = {"pattern": "live/cam1", "groups": ["vid_private"]}
    assert env.client.put("/api/v1/rules", json=rule, headers=headers).status_code == 200
    assert env.auth(token=token).status_code == 401
    env.client.portal.call(env.services.revoker.idle)


# --- what the tokens say ----------------------------------------------------------------------------------------------


def decode(shared: Shared, token: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Header, claims (verified with joserfc against the served JWKS) and the JWK that verified them."""
    jwks = shared.env.client.get("/.well-known/jwks.json").json()
    decoded = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["ES256"])
    jwk = next(key for key in jwks["keys"] if key["kid"] == decoded.header["kid"])
    return dict(decoded.header), dict(decoded.claims), jwk


def test_token_header_and_standard_claims(shared: Shared) -> None:
    found = shared.env.settings
    for token in (shared.cam1, shared.admin_glob):
        header, claims, jwk = decode(shared, token)
        assert header["alg"] == "ES256"
        assert header["kid"] == rfc7638_thumbprint(jwk)
        assert claims["iss"] == found.jwt_issuer
        assert claims["aud"] == found.jwt_audience
        assert claims["exp"] - claims["iat"] == found.token_ttl_seconds
        assert claims["nbf"] <= claims["iat"] < claims["exp"]
    _, claims, _ = decode(shared, shared.cam1)
    assert claims["sub"] == "bob"


def test_the_token_endpoint_answers_the_expiry(shared: Shared) -> None:
    response = shared.env.request_token("live/cam1")
    _, claims, _ = decode(shared, response.json()["token"])
    assert response.json()["expires_at"] == claims["exp"]


@pytest.mark.parametrize("path", ["live/cam1", "/live/cam1", "live/sub.dir/cam-1_x"])
def test_viewer_permissions_name_exactly_the_one_path(shared: Shared, path: str) -> None:
    _, claims, _ = decode(shared, shared.env.token(path))
    permissions = claims[shared.env.settings.jwt_claim_key]
    assert sorted(p["action"] for p in permissions) == ["playback", "read"]
    for permission in permissions:
        assert permission["path"] == path.lstrip("/")
        assert permission["path"] != ""
        assert "*" not in permission["path"] and not permission["path"].startswith("~")


def test_admin_glob_permissions_are_anchored_regexes(shared: Shared) -> None:
    _, claims, _ = decode(shared, shared.admin_glob)
    permissions = claims[shared.env.settings.jwt_claim_key]
    assert sorted(p["action"] for p in permissions) == ["playback", "read"]
    for permission in permissions:
        path = permission["path"]
        assert path.startswith("~^") and path.endswith("$"), path
        regex = path[1:]
        # Matched the way MediaMTX does (an unanchored search): the anchors are what keep it to live/**.
        assert re.search(regex, "live/cam1") and re.search(regex, "live/a/b")
        assert not re.search(regex, "live") and not re.search(regex, "x/live/cam1")
        assert not re.search(regex, "livestock/cam1") and not re.search(regex, "a/live/b")


def test_admin_exact_path_permissions_are_exact(shared: Shared) -> None:
    _, claims, _ = decode(shared, shared.env.token("live/private/x", "admin", ADMIN_PASSWORD))
    assert {p["path"] for p in claims[shared.env.settings.jwt_claim_key]} == {"live/private/x"}


# --- remembered sessions ----------------------------------------------------------------------------------------------


def remembered_rows(shared: Shared) -> dict[str, Any]:
    return {row["id"]: row for row in shared.env.services.store.media_sessions()}


def wait_until_remembered(shared: Shared, session_id: str) -> dict[str, Any]:
    """All remembered sessions once `session_id` is among them (they may be written a moment after the answer)."""
    deadline = time.monotonic() + 5
    while session_id not in (rows := remembered_rows(shared)):
        assert time.monotonic() < deadline, "the allowed session was not remembered within 5 s"
        time.sleep(0.02)
    return rows


def allow_a_sentinel(shared: Shared) -> str:
    """An allowed session after the ones under test: once it is remembered, everything before it would be too."""
    sentinel = str(uuid.uuid4())
    assert shared.env.auth(token=shared.cam1, id=sentinel, protocol="hls").status_code == 200
    return sentinel


def test_an_allowed_callback_with_an_id_is_remembered(shared: Shared) -> None:
    session_id = str(uuid.uuid4())
    assert shared.env.auth(token=shared.cam1, id=session_id, protocol="webrtc").status_code == 200
    row = wait_until_remembered(shared, session_id)[session_id]
    assert (row["username"], row["path"], row["action"], row["protocol"]) == ("bob", "live/cam1", "read", "webrtc")
    assert json.loads(row["groups"]) == ["vid_public"]


@pytest.mark.parametrize(
    "fields",
    [
        {"path": "live/private/x"},
        {"path": "live/cam2"},
        {"action": "publish"},
        {"token": "", "password": "nope", "user": "bob"},
        {"token": "", "user": "", "password": ""},
    ],
)
def test_a_denied_callback_is_not_remembered(shared: Shared, fields: dict[str, str]) -> None:
    session_id = str(uuid.uuid4())
    response = shared.env.auth(**{"token": shared.cam1, "id": session_id, **fields})
    assert response.status_code == 401
    assert session_id not in wait_until_remembered(shared, allow_a_sentinel(shared))


def test_a_callback_without_an_id_or_for_the_api_is_not_remembered(shared: Shared) -> None:
    before = set(remembered_rows(shared))
    assert shared.env.auth(token=shared.cam1, id=None).status_code == 200
    api_id = str(uuid.uuid4())
    assert shared.env.auth(password=API_KEY, token=API_KEY, action="api", path="", id=api_id).status_code == 200
    sentinel = allow_a_sentinel(shared)
    assert set(wait_until_remembered(shared, sentinel)) - before == {sentinel}


# --- property: nothing random is ever a 500 or an allow ---------------------------------------------------------------

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
KNOWN_ACTIONS = ("read", "playback", "publish", "api", "metrics", "pprof")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(st.sampled_from(CALLBACK_FIELDS) | st.text(max_size=12), JSON_VALUES, max_size=12))
def test_random_json_bodies_are_never_a_500_or_an_allow(shared: Shared, body: dict[str, Any]) -> None:
    # Serialised by hand: Python's encoder writes NaN/Infinity, which Python's decoder (the sidecar's) accepts.
    response = shared.env.client.post("/mediamtx/auth", content=json.dumps(body).encode())
    assert response.status_code in (400, 401), (body, response.text)
    assert isinstance(response.json().get("error"), str)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    action=st.sampled_from(KNOWN_ACTIONS) | st.text(max_size=20),
    path=st.text(max_size=60),
    protocol=st.sampled_from(PROTOCOLS) | st.text(max_size=10),
    user=st.text(max_size=20),
    password=st.text(max_size=40),
    token=st.text(max_size=60),
    query=st.text(max_size=60),
    session_id=st.none() | st.text(max_size=40),
)
def test_random_fields_without_a_valid_credential_never_allow(
    shared: Shared,
    action: str,
    path: str,
    protocol: str,
    user: str,
    password: str,
    token: str,
    query: str,
    session_id: str | None,
) -> None:
    fields = {"user": user, "password": password, "token": token, "query": query, "id": session_id}
    response = shared.env.auth(action=action, path=path, protocol=protocol, **fields)
    assert response.status_code in (400, 401), response.text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    action=st.sampled_from(KNOWN_ACTIONS) | st.text(max_size=12),
    path=st.sampled_from(["live/cam1", "/live/cam1", "live/cam2", "live/private/x", "live//cam1", "live/cam1/"])
    | st.text(max_size=40),
    protocol=st.sampled_from(PROTOCOLS) | st.just(""),
    in_query=st.booleans(),
)
def test_a_viewer_token_allows_only_viewing_its_own_path(
    shared: Shared, action: str, path: str, protocol: str, in_query: bool
) -> None:
    fields = {"query": f"token={shared.cam1}"} if in_query else {"token": shared.cam1}
    response = shared.env.auth(action=action, path=path, protocol=protocol, **fields)
    assert response.status_code in (200, 400, 401)
    if response.status_code == 200:
        assert action in ("read", "playback") and path.removeprefix("/") == "live/cam1", (action, path)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=200))
def test_random_bytes_are_never_a_500(shared: Shared, content: bytes) -> None:
    response = shared.env.client.post("/mediamtx/auth", content=content)
    assert response.status_code in (400, 401)
