"""Attack: fuzzing everything MediaMTX talks to on the sidecar.

The auth callback `POST /mediamtx/auth` (a plain ASGI fast path in front of the app, `sidecar/web/callback.py`), the
runOn* hooks `POST /mediamtx/hooks/{event}` and `GET /.well-known/jwks.json` are fed bodies an outsider on MediaMTX's
network could send instead of MediaMTX: hand-built JSON with every field of MediaMTX's body replaced by wrong types,
odd numbers (`1e999`, `NaN`, `-0`), escapes, duplicate keys, deep nesting, BOMs and other encodings, invalid UTF-8,
lone surrogates, wrong content types, chunked bodies, `query` strings stuffed with `token=`/`jwt=` parameters and paths
with odd characters. For every input: never a 5xx, never a 200 without a real grant (no credentials: 401 for a
well-formed MediaMTX body, 400 for a malformed one, as `tests/test_media_auth.py` pins), 4xx answers are JSON with an
`error`, and the process keeps answering. Part of it runs against the real `sidecar serve` (uvicorn) over raw sockets:
HTTP/1.0, missing or wrong Content-Length, pipelining, request smuggling through the body, `Expect: 100-continue`,
slowly sent bodies, odd methods, targets and header bytes.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from sidecar.processes import LoggedProcess, free_port
from tests.helpers import ADMIN_PASSWORD, API_KEY, CALLBACK_FIELDS, callback_body
from tests.mediamtx_env import BOB_PASSWORD, MediaMTXEnv, fake_transport, open_mediamtx_env
from tests.processes_fixtures import child_env

AUTH = "/mediamtx/auth"
JWKS = "/.well-known/jwks.json"
KEY = {"x-api-key": API_KEY}
JSON_TYPE = {"content-type": "application/json"}
MAX_CALLBACK_BYTES = 16 * 1024  # the callback's own cap (tests/test_media_auth.py)
MAX_BODY_BYTES = 64 * 1024  # the app-wide cap: 413
MAX_FIELD, MAX_ID = 4096, 128
HOOK_EVENTS = ("ready", "not-ready", "notready", "read", "unread")
HOOK_FIELDS = ("path", "query", "source_type", "source_id", "reader_type", "reader_id")
VIEW_ACTIONS = ("read", "playback")
ACTIONS = ("read", "playback", "publish", "api", "metrics", "pprof")
PROTOCOLS = ("rtsp", "rtmp", "hls", "webrtc", "srt", "moq", "")
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def assert_json_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    assert isinstance(response.json().get("error"), str)


# --- the contract, as an oracle ---------------------------------------------------------------------------------------


def expected_without_credentials(raw: bytes) -> int:
    """What the callback must answer for a body that carries no credential: 401 when it is MediaMTX's body (a JSON
    object whose fields are strings or null, within their lengths, and valid text), else 400 (tests/test_media_auth.py).
    """
    if len(raw) > MAX_BODY_BYTES:
        return 413
    if len(raw) > MAX_CALLBACK_BYTES:
        return 400
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return 400
    if type(data) is not dict:
        return 400
    for name in CALLBACK_FIELDS:
        value = data.get(name)
        limit = MAX_ID if name == "id" else MAX_FIELD
        if value is not None and (type(value) is not str or len(value) > limit or not encodable(value)):
            return 400
    return 401


def encodable(value: object) -> bool:
    """Whether a value is valid text (JSON can carry lone surrogates, as `\\ud800` or as the bytes ED A0 80)."""
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


# --- strategies: hand-built JSON text ---------------------------------------------------------------------------------

ODD_CHARS = st.sampled_from(
    ["\x00", "\n", "\r", "\t", "\x1b", "\x7f", "\u2028", "\u2029", "\ufeff", "\ufffd", "\U0001f600", "\u202e", "\\"]
    + ['"', "/", "%00", "%", "\u0130", "\u212a", "\u200b", "..", "token=", "&", "=", "\U0010ffff"]
)
TEXT = st.lists(st.text(max_size=6) | ODD_CHARS, max_size=8).map("".join)  # st.text() never yields a lone surrogate
ODD_NUMBERS = ["1e999", "-1e999", "NaN", "Infinity", "-Infinity", "-0", "-0.0", "0e0", "1E+2", "1e-400", "0.1e1"]
ODD_NUMBERS += ["123456789012345678901234567890", "9" * 5000, "01", ".5", "+1", "1.", "0x10", "1_000", "--1"]
ODD_LITERALS = ["true", "false", "[]", "{}", "[null]", '{"":""}', '[""]', "tru", "nul", "undefined", "'x'", "None"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def string_fragments(draw: st.DrawFn) -> str:
    """A JSON string literal, spelled in one of the ways JSON allows (and sometimes one it does not)."""
    value = draw(TEXT)
    rendered = json.dumps(value, ensure_ascii=draw(st.booleans()))
    style = draw(st.sampled_from(["plain", "plain", "escaped slash", "escape everything", "raw control"]))
    if style == "escaped slash":
        rendered = rendered.replace("/", "\\/")
    elif style == "escape everything":  # every character as \uXXXX (astral ones as surrogate pairs)
        units = value.encode("utf-16-be")
        rendered = '"' + "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2)) + '"'
    elif style == "raw control":  # a literal control character inside the string: not JSON
        rendered = rendered[:-1] + "\x01" + '"'
    return rendered


GOOD_FRAGMENTS = (
    string_fragments() | st.just("null") | st.sampled_from([MAX_ID, MAX_FIELD]).map(lambda n: f'"{"a" * n}"')
)
BAD_FRAGMENTS = st.one_of(
    st.sampled_from(ODD_NUMBERS),
    st.sampled_from(ODD_LITERALS),
    st.integers().map(str),
    st.floats().map(json.dumps),
    JSON_VALUES.map(json.dumps),
    st.sampled_from([MAX_ID + 1, MAX_FIELD + 1, 10_000]).map(lambda n: f'"{"a" * n}"'),
    st.sampled_from([3, 100, 3000]).map(lambda n: "[" * n + "]" * n),
    st.sampled_from([3, 100, 3000]).map(lambda n: '{"a":' * n + "1" + "}" * n),
)
ANY_FRAGMENT = GOOD_FRAGMENTS | BAD_FRAGMENTS


def render_key(name: str, escape_at: int | None) -> str:
    """A key, with one character optionally spelled as \\uXXXX (`"\\u0075ser"` is `"user"`)."""
    if escape_at is None or not name:
        return json.dumps(name)
    at = escape_at % len(name)
    return '"' + name[:at] + f"\\u{ord(name[at]):04x}" + name[at + 1 :] + '"'


@st.composite
def callback_documents(draw: st.DrawFn) -> str:
    """MediaMTX's body as JSON text: every field present, some replaced by wrong types, some given twice (the earlier
    copy any value), unknown keys added, keys escaped, members in any order, any JSON whitespace."""
    broken = draw(st.sets(st.sampled_from(CALLBACK_FIELDS), max_size=3))
    members = [(name, draw(ANY_FRAGMENT if name in broken else GOOD_FRAGMENTS)) for name in CALLBACK_FIELDS]
    members = draw(st.permutations(members))
    for name in draw(st.lists(st.sampled_from(CALLBACK_FIELDS), max_size=3)):
        members.insert(0, (name, draw(ANY_FRAGMENT)))  # a duplicate ahead of the real one
    for key in draw(st.lists(st.text(max_size=6).filter(lambda k: k not in CALLBACK_FIELDS), max_size=2)):
        members.insert(draw(st.integers(0, len(members))), (key, draw(ANY_FRAGMENT)))
    space = draw(st.sampled_from(["", " ", "\n", "\t", "\r\n ", "  "]))
    escape = st.none() | st.integers(0, 20)
    parts = [f"{render_key(k, draw(escape))}{space}:{space}{v}" for k, v in members]
    return "{" + space + f",{space}".join(parts) + space + "}"


ENCODINGS = ["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"]
# Not the UTF-8 spelling of a surrogate (b"\xed\xa0\x80"): json.loads(bytes) decodes with "surrogatepass", so that
# one is a lone surrogate, not an error (see the surrogate tests below).
INVALID_UTF8 = [b"\xff", b"\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\xc2"]
INVALID_UTF8 += [b"\xf8\x88\x80\x80\x80", b"\xc1\xbf", b"\xfe\xfe"]
PREFIXES = [b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff", b"\xef\xbb\xbf\xef\xbb\xbf", b"\x00"]


# --- the in-process sidecar (fast: most of the fuzzing runs here) -----------------------------------------------------


@dataclass
class InProcess:
    env: MediaMTXEnv
    cam1: str  # bob's (vid_public) token for live/cam1
    cam2: str  # bob's token for live/cam2
    admin_glob: str  # the admin's token for live/**

    @property
    def client(self) -> TestClient:
        return self.env.client

    def post(self, content: bytes | Iterator[bytes], headers: dict[str, str] | None = None) -> httpx.Response:
        return self.client.post(AUTH, content=content, headers=JSON_TYPE if headers is None else headers)

    def live_paths(self) -> set[str]:
        return {stream.path for stream in self.env.services.live.ready()}


@pytest.fixture(scope="module")
def inproc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    data_dir = tmp_path_factory.mktemp("callback-fuzzing") / "data"
    with open_mediamtx_env(MediaMTXEnv, data_dir, fake_transport) as env:
        admin_glob = env.token("live/**", "admin", ADMIN_PASSWORD)
        yield InProcess(env, env.token("live/cam1"), env.token("live/cam2"), admin_glob)


# --- the callback: bodies -------------------------------------------------------------------------------------------


@settings(FUZZ, max_examples=100)
@given(document=callback_documents(), encoding=st.sampled_from(ENCODINGS))
def test_mediamtx_bodies_with_wrong_types_odd_numbers_and_duplicate_keys_are_exactly_400_or_401(
    inproc: InProcess, document: str, encoding: str
) -> None:
    raw = document.encode(encoding)
    assert_json_error(inproc.post(raw), expected_without_credentials(raw))


@settings(FUZZ, max_examples=40)
@given(document=callback_documents(), bad=st.sampled_from(INVALID_UTF8), where=st.integers(min_value=0))
def test_invalid_utf8_anywhere_in_the_body_is_400(inproc: InProcess, document: str, bad: bytes, where: int) -> None:
    raw = document.encode()
    at = 1 + where % len(raw)  # after the first byte, so no byte-order mark picks another codec
    raw = raw[:at] + bad + raw[at:]
    assert expected_without_credentials(raw) == 400
    assert_json_error(inproc.post(raw), 400)


@settings(FUZZ, max_examples=40)
@given(
    prefix=st.sampled_from(PREFIXES),
    middle=st.binary(max_size=300),
    suffix=st.sampled_from([b"", b"}", json.dumps(callback_body()).encode(), b"\x00" * 8]),
)
def test_random_bytes_behind_byte_order_marks_are_never_a_500(
    inproc: InProcess, prefix: bytes, middle: bytes, suffix: bytes
) -> None:
    raw = prefix + middle + suffix
    assert_json_error(inproc.post(raw), expected_without_credentials(raw))


CONTENT_TYPES = [
    None,
    "application/json",
    "application/json; charset=latin-1",
    "application/json; charset=utf-16",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "multipart/form-data",
    "application/octet-stream",
    "*/*",
    "application/json, text/html",
    "garbage;;;=",
]


@settings(FUZZ, max_examples=50)
@given(
    document=callback_documents(),
    content_type=st.sampled_from(CONTENT_TYPES),
    chunked=st.booleans(),
    cuts=st.lists(st.integers(1, 40), max_size=20),
)
def test_content_type_and_chunked_framing_do_not_change_the_answer(
    inproc: InProcess, document: str, content_type: str | None, chunked: bool, cuts: list[int]
) -> None:
    raw = document.encode()

    def pieces() -> Iterator[bytes]:  # no Content-Length: the body arrives in chunks of the drawn sizes
        rest = raw
        for size in cuts:
            piece, rest = rest[:size], rest[size:]
            yield piece
        yield rest

    headers = {} if content_type is None else {"content-type": content_type}
    assert_json_error(inproc.post(pieces() if chunked else raw, headers), expected_without_credentials(raw))


def with_spelling(field: str, spelled: bytes, **fields: Any) -> bytes:
    """MediaMTX's body with `field` spelled as these bytes between the quotes: an escape or a byte sequence that
    json.dumps would never write (e.g. a lone surrogate as `\\ud800`, or as its UTF-8 spelling `\xed\xa0\x80`)."""
    body = callback_body(**{field: "PLACEHOLDER", **fields})
    return json.dumps(body).encode().replace(b'"PLACEHOLDER"', b'"' + spelled + b'"', 1)


LONE_SURROGATES = [
    b"\\ud800",
    b"\\udfff",
    b"x\\udc80y",
    b"\\ud83d",
    b"\\ude00\\ud83d",
    b"\xed\xa0\x80",
    b"a\xed\xbf\xbfb",
]


SURROGATE_CARRIERS: dict[str, Callable[[bytes], bytes]] = {
    **{field: lambda spelled, field=field: with_spelling(field, spelled) for field in CALLBACK_FIELDS},
    "user beside a password": lambda spelled: with_spelling("user", spelled, password="x", token="x"),
    "password beside a user": lambda spelled: with_spelling("password", spelled, user="bob"),
    "a JWT-shaped token": lambda spelled: with_spelling("token", b"a" * 24 + b".b.c" + spelled),
    "a JWT-shaped query token": lambda spelled: with_spelling("query", b"token=" + b"a" * 24 + b".b.c" + spelled),
    "a JWT-shaped query jwt": lambda spelled: with_spelling("query", b"x=1&jwt=" + b"a" * 24 + b".b.c" + spelled),
}


@pytest.mark.parametrize("spelled", LONE_SURROGATES, ids=[repr(s) for s in LONE_SURROGATES])
@pytest.mark.parametrize("carrier", sorted(SURROGATE_CARRIERS))
def test_lone_surrogates_in_any_field_are_a_json_4xx_not_a_500(inproc: InProcess, carrier: str, spelled: bytes) -> None:
    """No text MediaMTX sends holds a lone surrogate (Go writes U+FFFD for bad UTF-8), but JSON can carry one, as an
    escape or as the bytes ED A0 80 (Python's decoder lets those through); anything that encodes it later (digests,
    constant-time comparisons, SQLite) must not turn it into a 500."""
    response = inproc.post(SURROGATE_CARRIERS[carrier](spelled))
    assert response.status_code in (400, 401), (response.status_code, response.text)
    assert_json_error(response, response.status_code)


@pytest.mark.parametrize("field", ["id", "protocol"])
def test_a_lone_surrogate_in_an_allowed_callback_does_not_stop_sessions_being_remembered(
    tmp_path: Path, field: str
) -> None:
    """Sessions are written to SQLite in batches after the answer, and a failed batch stays queued: a row SQLite cannot
    take (a lone surrogate in the session id or protocol) would block every later one, so revocation could not kick
    them, and every unread hook (which flushes first) would fail."""
    with open_mediamtx_env(MediaMTXEnv, tmp_path / "data", fake_transport) as env:
        writer = env.services.media_auth.sessions
        try:
            token = env.token("live/cam1")
            fields: dict[str, Any] = {"token": token, "protocol": "hls", "id": str(uuid.uuid4())}
            poisoned = with_spelling(field, b"\\ud800", **{k: v for k, v in fields.items() if k != field})
            response = env.client.post(AUTH, content=poisoned, headers=JSON_TYPE)
            assert response.status_code in (200, 400), response.text
            later = str(uuid.uuid4())
            assert env.auth(token=token, id=later, protocol="hls").status_code == 200
            deadline = time.monotonic() + 1.5
            while later not in {row["id"] for row in env.services.store.media_sessions()}:
                assert time.monotonic() < deadline, "a later allowed session was never remembered"
                time.sleep(0.02)
            unread = {"path": "live/cam1", "reader_type": "hlsSession", "reader_id": later}
            assert env.client.post("/mediamtx/hooks/unread", json=unread, headers=KEY).status_code == 204
        finally:  # should such a row get through, it stays queued and would fail the shutdown's flush: drop it
            writer._pending[:] = [row for row in writer._pending if encodable(row)]


@pytest.mark.parametrize("spelled", [b"r\\ud800", b"\xed\xa0\x80"], ids=["escape", "UTF-8 bytes"])
def test_an_unread_hook_with_a_lone_surrogate_reader_id_is_not_a_500(inproc: InProcess, spelled: bytes) -> None:
    content = b'{"path": "live/cam1", "reader_type": "hlsSession", "reader_id": "' + spelled + b'"}'
    response = inproc.client.post("/mediamtx/hooks/unread", content=content, headers={**KEY, **JSON_TYPE})
    assert response.status_code in (204, 400), (response.status_code, response.text)


@pytest.mark.parametrize("event", ["ready", "read", "not-ready"])
def test_hooks_with_lone_surrogates_do_not_break_the_live_view_for_later_readers(inproc: InProcess, event: str) -> None:
    content = (
        b'{"path": "live/\\ud800", "source_type": "\\udfff", "reader_id": "\xed\xa0\x80", "reader_type": "\\ud83d"}'
    )
    response = inproc.client.post(f"/mediamtx/hooks/{event}", content=content, headers={**KEY, **JSON_TYPE})
    assert response.status_code in (204, 400), (response.status_code, response.text)
    listed = inproc.client.get("/api/v1/streams", headers=KEY)
    assert listed.status_code == 200, listed.text
    assert all(encodable(stream["name"]) for stream in listed.json()["streams"])


# --- the callback: what the fields say --------------------------------------------------------------------------------


def token_covers(token_path: str, path: str) -> bool:
    return path.removeprefix("/") == token_path


@settings(FUZZ, max_examples=60)
@given(
    params=st.lists(
        st.sampled_from(
            ["token={cam1}", "jwt={cam1}", "token={cam2}", "jwt={cam2}", "token=", "jwt=", "token", "x=1", "=", "&"]
            + ["tok%65n={cam1}", "TOKEN={cam1}", "token[]={cam1}", "token%00={cam1}", "token={cam1}x", "token=x{cam1}"]
            + ["token={cam1_dots}", "token=a.b.c", "token=" + "a" * 30 + ".b.c", "token={cam1}%00", "jwt=%ff%fe"]
            + ["token={cam1};token={cam2}", "token={cam2}\x00", "token=+{cam1}", "token={cam1}#"]
        ),
        max_size=30,
    ),
    separator=st.sampled_from(["&", ";", "&&", "&amp;"]),
    path=st.sampled_from(["live/cam1", "live/cam2", "/live/cam1", "live/private/x", "live/cam3", "live", ""]),
    action=st.sampled_from(ACTIONS + ("READ", "")),
    protocol=st.sampled_from(PROTOCOLS),
    token_field=st.sampled_from(["", "garbage", "bob"]),
)
def test_a_query_stuffed_with_token_and_jwt_parameters_opens_only_a_path_one_of_them_grants(
    inproc: InProcess,
    params: list[str],
    separator: str,
    path: str,
    action: str,
    protocol: str,
    token_field: str,
) -> None:
    values = {"cam1": inproc.cam1, "cam2": inproc.cam2, "cam1_dots": inproc.cam1.replace(".", "%2E")}
    query = separator.join(param.format(**values) for param in params)
    response = inproc.env.auth(action=action, path=path, protocol=protocol, token=token_field, query=query)
    assert response.status_code in (200, 400, 401), response.text
    if response.status_code == 200:
        assert action in VIEW_ACTIONS
        granted = [name for name in ("cam1", "cam2") if token_covers(f"live/{name}", path) and values[name] in query]
        granted += ["cam1"] if token_covers("live/cam1", path) and values["cam1_dots"] in query else []
        assert granted, (query, path)
    else:
        assert isinstance(response.json().get("error"), str)


PATH_PIECES = ["live", "/", "cam1", ".", "..", "%2e", "%2F", "\\", "\x00", "\n", " ", "\t", "\u2215", "\uff0f"]
PATH_PIECES += ["\u212a", "\u0130", "~", "*", "?", "#", "private", "x", "LIVE", "\ufeff", "\u200b", ";", "@", ":", "+"]
PATH_PIECES += ["%00", "\u0000", "\u00a0", "\u2028", "~^live/.*$", "**", "live/cam1"]
NOT_IN_A_PLAIN_PATH = set('%\\?#"<>*')


def plainly_below_live(path: str) -> bool:
    """A necessary condition for what the admin's `live/**` token may open: `live/` and then only non-empty segments
    other than `.`/`..`, each of printable ASCII without `%`, `\\`, `?`, `#`, quotes, angle brackets or `*`."""
    segments = path.removeprefix("/").split("/")
    if segments[0] != "live" or len(segments) < 2:
        return False
    return all(
        s not in ("", ".", "..") and all("!" <= c <= "~" and c not in NOT_IN_A_PLAIN_PATH for c in s)
        for s in segments[1:]
    )


@settings(FUZZ, max_examples=80)
@given(
    path=st.lists(st.sampled_from(PATH_PIECES) | st.text(max_size=3), max_size=8).map("".join),
    action=st.sampled_from(ACTIONS),
    who=st.sampled_from(["cam1", "admin_glob"]),
    in_query=st.booleans(),
)
def test_paths_with_odd_characters_open_nothing_beyond_the_token(
    inproc: InProcess, path: str, action: str, who: str, in_query: bool
) -> None:
    token = inproc.cam1 if who == "cam1" else inproc.admin_glob
    fields = {"query": f"token={token}"} if in_query else {"token": token}
    response = inproc.env.auth(action=action, path=path, protocol="hls", **fields)
    assert response.status_code in (200, 400, 401), response.text
    if response.status_code == 200:
        assert action in VIEW_ACTIONS, path
        assert token_covers("live/cam1", path) if who == "cam1" else plainly_below_live(path), repr(path)


@settings(FUZZ, max_examples=25)
@given(
    ip=st.sampled_from(["127.0.0.1", "::1", "::ffff:127.0.0.1", "0.0.0.0", "localhost", "127.1", "0177.0.0.1"])
    | st.sampled_from(["2130706433", "[::1]", "127.0.0.1%lo", " 127.0.0.1", "", "\u0661\u0662\u0667.0.0.1"])
    | st.text(max_size=20),
    action=st.sampled_from(["api", "metrics", "pprof", "publish", "read", "playback"]),
    session_id=st.none() | st.text(max_size=10) | st.just("x" * 128),
)
def test_no_credentials_from_any_reported_ip_is_401(
    inproc: InProcess, ip: str, action: str, session_id: str | None
) -> None:
    # No SIDECAR_MEDIAMTX_LOCAL_API_IPS is set, so no client address stands in for a credential.
    response = inproc.env.auth(ip=ip, action=action, path="", protocol="", id=session_id)
    assert_json_error(response, 401)


def test_duplicate_keys_cannot_decide_on_one_copy_and_remember_another(inproc: InProcess) -> None:
    """A repeated `path`/`action` beside a token for live/cam1: whichever copy is read, only live/cam1 may be opened,
    and an allowed session is remembered under the very path and action that were decided."""
    for extra in ('"path": "live/private/x"', '"action": "publish"', '"path": "other/x"', '"action": "api"'):
        session_id = str(uuid.uuid4())
        base = json.dumps(callback_body(token=inproc.cam1, path="live/cam1", action="read", id=session_id))[1:-1]
        for raw in ("{" + base + ", " + extra + "}", "{" + extra + ", " + base + "}"):
            response = inproc.post(raw.encode())
            assert response.status_code in (200, 401), (raw[:80], response.text)
            if response.status_code != 200:
                continue
            deadline = time.monotonic() + 5
            while not (rows := [r for r in inproc.env.services.store.media_sessions() if r["id"] == session_id]):
                assert time.monotonic() < deadline, "the allowed session was not remembered"
                time.sleep(0.02)
            assert (rows[0]["path"], rows[0]["action"]) == ("live/cam1", "read"), raw[:120]


# --- the hooks --------------------------------------------------------------------------------------------------------

HOOK_VALUES = st.text(max_size=20) | st.sampled_from(["", "x" * 1025, "live/cam1"]) | JSON_VALUES
# No `%` here: Starlette's TestClient decodes the path twice (uvicorn once); percent-encoded event names are sent
# through the real server instead (test_hook_event_names_are_percent_decoded_once_through_the_real_server).
ODD_EVENTS = ["READY", "Ready", "ready ", " ready", "ready\x00", "kick", "ready.json", "not_ready", ".."]
ODD_EVENTS += ["ready/x", "", "unread;", "\u0155eady", "ready?x=1", "ready#x", "r\u0435ady"]


@st.composite
def hook_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str], int | None]:
    """A hook body, its headers, and its answer under a valid event (None where only "204 or 400" can be said)."""
    kind = draw(st.sampled_from(["json object", "json object", "json value", "form", "bytes"]))
    if kind == "json object":
        broken = draw(st.sets(st.sampled_from(HOOK_FIELDS), max_size=2))
        present = draw(st.sets(st.sampled_from(HOOK_FIELDS))) | broken | ({"path"} if draw(st.booleans()) else set())
        body: dict[str, Any] = {name: draw(HOOK_VALUES if name in broken else TEXT) for name in sorted(present)}
        body.update(draw(st.dictionaries(st.text(max_size=5).filter(lambda k: k not in HOOK_FIELDS), JSON_VALUES)))
        ok = all(isinstance(body.get(n, ""), str) and len(body.get(n, "")) <= 1024 for n in HOOK_FIELDS)
        content_type = draw(st.sampled_from(["application/json", "application/json; charset=utf-8"]))
        return json.dumps(body).encode(), {"content-type": content_type}, 204 if ok and body.get("path") else 400
    if kind == "json value":
        value = draw(JSON_VALUES)
        expected = None if isinstance(value, dict) else 400
        return json.dumps(value).encode(), {"content-type": "application/json"}, expected
    if kind == "form":
        form = draw(st.dictionaries(st.sampled_from(HOOK_FIELDS) | st.text(max_size=5), TEXT, max_size=6))
        ok = all(len(form.get(n, "")) <= 1024 for n in HOOK_FIELDS) and bool(form.get("path"))
        return urlencode(form).encode(), {"content-type": "application/x-www-form-urlencoded"}, 204 if ok else 400
    content_type = draw(st.sampled_from([c for c in CONTENT_TYPES if c is not None]))
    return draw(st.binary(max_size=200)), {"content-type": content_type}, None


@settings(FUZZ, max_examples=80)
@given(event=st.sampled_from(HOOK_EVENTS) | st.sampled_from(ODD_EVENTS), request=hook_requests())
def test_hooks_with_the_key_answer_204_or_a_json_4xx_for_any_body(
    inproc: InProcess, event: str, request: tuple[bytes, dict[str, str], int | None]
) -> None:
    content, headers, expected = request
    response = inproc.client.post(
        f"/mediamtx/hooks/{quote(event, safe='')}", content=content, headers={**KEY, **headers}
    )
    if event not in HOOK_EVENTS:
        assert response.status_code in (400, 404, 405), (event, response.status_code, response.text)
    elif expected is not None:
        assert response.status_code == expected, (content[:200], response.text)
    else:
        assert response.status_code in (204, 400), (content[:200], response.text)
    if response.status_code != 204:
        assert response.headers["content-type"].startswith("application/json"), response.text
        assert isinstance(response.json().get("error"), str)


WRONG_KEYS = [API_KEY.upper(), API_KEY[:-1], API_KEY + "0", "x" + API_KEY, API_KEY[::-1], f"Bearer {API_KEY}"]
WRONG_KEYS += [API_KEY.replace("-", "_"), f"{API_KEY},{API_KEY}", "*", "null", "0"]


@settings(FUZZ, max_examples=30)
@given(
    key=st.none() | st.sampled_from(WRONG_KEYS) | st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126)),
    event=st.sampled_from(HOOK_EVENTS),
    source_type=TEXT,
)
def test_hooks_without_the_exact_key_are_401_and_change_nothing(
    inproc: InProcess, key: str | None, event: str, source_type: str
) -> None:
    if key == API_KEY:
        return
    path = f"live/fuzz-{uuid.uuid4().hex}"
    headers = {} if key is None else {"x-api-key": key}
    body = {"path": path, "source_type": source_type, "reader_id": "r1"}
    response = inproc.client.post(f"/mediamtx/hooks/{event}", json=body, headers=headers)
    assert_json_error(response, 401)
    assert path not in inproc.live_paths()


# --- the JWKS ---------------------------------------------------------------------------------------------------------

PRINTABLE = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60)


@settings(FUZZ, max_examples=40)
@given(
    method=st.sampled_from(["GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "PROPFIND"]),
    if_none_match=st.none()
    | st.sampled_from(["{etag}", "W/{etag}", "*", "{etag}, *", '"", {etag}', "{etag}x"])
    | PRINTABLE,
    range_header=st.none()
    | st.sampled_from(["bytes=0-3", "bytes=-1", "bytes=99999-", "bytes=0-0,5-9", "lines=1"])
    | PRINTABLE,
    other=st.dictionaries(
        st.sampled_from(["accept", "if-modified-since", "if-match", "accept-encoding", "cache-control", "origin"]),
        PRINTABLE,
        max_size=3,
    ),
)
def test_jwks_with_odd_methods_and_conditional_or_range_headers_is_never_a_500(
    inproc: InProcess, method: str, if_none_match: str | None, range_header: str | None, other: dict[str, str]
) -> None:
    plain = inproc.client.get(JWKS)
    etag = plain.headers["etag"]
    headers = dict(other)
    if if_none_match is not None:
        headers["if-none-match"] = if_none_match.replace("{etag}", etag)
    if range_header is not None:
        headers["range"] = range_header
    response = inproc.client.request(method, JWKS, headers=headers)
    if method not in ("GET", "HEAD"):
        assert_json_error(response, 405)
        return
    expected = 304 if headers.get("if-none-match") == etag else 200
    assert response.status_code == expected, (headers, response.status_code)
    if method == "GET" and expected == 200:
        assert response.content == plain.content  # the whole key set, never a range of it
        keys = response.json()["keys"]
        assert keys and all("d" not in key for key in keys)  # public keys only
    else:
        assert response.content == b""


# --- the real process: uvicorn in front of the fast path --------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    port: int
    process: LoggedProcess
    log_path: Path
    cam1: str  # bob's token for live/cam1, issued by this process

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def mint_token(base: str, path: str) -> str:
    with httpx.Client(base_url=base, timeout=10) as client:
        response = client.post("/auth/login", json={"username": "bob", "password": BOB_PASSWORD})
        assert response.status_code == 200, response.text
        csrf = client.get("/api/v1/me").json()["csrf_token"]
        headers = {"origin": base, "x-csrf-token": csrf}
        response = client.post("/api/v1/streams/token", json={"path": path}, headers=headers)
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        return token


@pytest.fixture(scope="module")
def served(launch: Callable[..., LoggedProcess], process_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Served:
    """`sidecar serve` on a free loopback port, over a data dir with the rules and bob that the in-process tests use."""
    data_dir = tmp_path_factory.mktemp("callback-fuzzing-served") / "data"
    with open_mediamtx_env(MediaMTXEnv, data_dir, fake_transport):
        pass  # bootstraps the data dir: the admin, bob (vid_public), the live/** rules
    port = free_port()
    env = child_env(
        SIDECAR_MODE="local",
        SIDECAR_DATA_DIR=str(data_dir),
        SIDECAR_HOST="127.0.0.1",
        SIDECAR_PORT=str(port),
        SIDECAR_API_KEY=API_KEY,
        SIDECAR_LOG_LEVEL="WARNING",
    )
    name = "sidecar-callback-fuzzing"
    process = launch(
        name, [sys.executable, "-m", "sidecar", "serve"], env, ready_url=f"http://127.0.0.1:{port}/healthz"
    )
    base = f"http://127.0.0.1:{port}"
    return Served(port, process, process_dir / f"{name}.log", mint_token(base, "live/cam1"))


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse_replies(raw: bytes, *, head: bool = False) -> list[Reply]:
    """The HTTP/1.x responses in `raw`, in order (1xx ones included); an incomplete tail is dropped."""
    replies: list[Reply] = []
    rest = raw
    while rest:
        top, found, rest = rest.partition(b"\r\n\r\n")
        if not found:
            break
        lines = top.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        body = b""
        if status >= 200 and status not in (204, 304) and not head:
            if "content-length" in headers:
                size = int(headers["content-length"])
                body, rest = rest[:size], rest[size:]
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    size_line, _, rest = rest.partition(b"\r\n")
                    size = int(size_line.split(b";")[0], 16)
                    body, rest = body + rest[:size], rest[size + 2 :]
                    if size == 0:
                        break
            else:
                body, rest = rest, b""
        replies.append(Reply(status, headers, body))
    return replies


def exchange(
    port: int,
    parts: Sequence[bytes],
    *,
    pause: float = 0.0,
    half_close: bool = False,
    timeout: float = 5.0,
    before_each: Callable[[socket.socket, int], None] | None = None,
) -> bytes:
    """Send `parts` on one connection (optionally pausing between them), then read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            for index, part in enumerate(parts):
                if before_each is not None:
                    before_each(sock, index)
                sock.sendall(part)
                if pause:
                    time.sleep(pause)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (and closed) before taking everything: read what it said
        received = bytearray()
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return bytes(received)


def request_bytes(
    body: bytes,
    *,
    target: str = AUTH,
    method: str = "POST",
    version: str = "HTTP/1.1",
    headers: Sequence[tuple[str, str]] | None = None,
    length: int | None = None,
    close: bool = True,
) -> bytes:
    """A request with exactly these bytes; Content-Length is the body's unless given (or unless `headers` has one)."""
    lines = [f"{method} {target} {version}", "Host: 127.0.0.1"]
    given_headers = list(headers or [("Content-Type", "application/json")])
    lines += [f"{name}: {value}" for name, value in given_headers]
    names = {name.lower() for name, _ in given_headers}
    if "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(body: bytes, cuts: Sequence[int], *, extension: str = "", trailer: str = "") -> bytes:
    out = bytearray()
    rest = body
    for size in [*cuts, len(body)]:
        piece, rest = rest[:size], rest[size:]
        if piece:
            out += f"{len(piece):x}{extension}\r\n".encode() + piece + b"\r\n"
    return bytes(out) + b"0\r\n" + trailer.encode() + b"\r\n"


def no_credentials() -> bytes:
    return json.dumps(callback_body()).encode()


def granted(served: Served, **fields: Any) -> bytes:
    return json.dumps(callback_body(token=served.cam1, protocol="hls", **fields)).encode()


def assert_reply_json_error(reply: Reply, status: int | Sequence[int]) -> None:
    allowed = (status,) if isinstance(status, int) else tuple(status)
    assert reply.status in allowed, (reply.status, reply.body[:200])
    assert reply.headers.get("content-type", "").startswith("application/json"), reply
    assert isinstance(reply.json().get("error"), str)


def one_reply(raw: bytes) -> Reply:
    replies = parse_replies(raw)
    assert len(replies) == 1, replies
    return replies[0]


def still_answering(served: Served) -> None:
    assert served.process.poll() is None, "the sidecar process died"
    with httpx.Client(base_url=served.base, timeout=10) as client:
        assert client.get("/healthz").status_code == 200
        response = client.post(AUTH, content=granted(served), headers=JSON_TYPE)
        assert response.status_code == 200, response.text


@pytest.mark.caddy
@settings(FUZZ, max_examples=40)
@given(
    document=callback_documents(),
    framing=st.sampled_from(["length", "chunked", "chunked with extensions and a trailer", "HTTP/1.0"]),
    cuts=st.lists(st.integers(1, 64), max_size=12),
    content_type=st.sampled_from(CONTENT_TYPES),
)
def test_fuzzed_bodies_through_the_real_server_in_any_framing_are_exactly_400_or_401(
    served: Served, document: str, framing: str, cuts: list[int], content_type: str | None
) -> None:
    raw = document.encode()
    headers = [] if content_type is None else [("Content-Type", content_type)]
    if framing == "length":
        wire = request_bytes(raw, headers=headers)
    elif framing == "HTTP/1.0":
        wire = request_bytes(raw, headers=headers, version="HTTP/1.0", close=False)
    else:
        extension, trailer = (";x=1;y", "X-Trailer: t\r\n") if "trailer" in framing else ("", "")
        wire = request_bytes(b"", headers=[*headers, ("Transfer-Encoding", "chunked")])
        wire += chunked(raw, cuts, extension=extension, trailer=trailer)
    assert_reply_json_error(one_reply(exchange(served.port, [wire])), expected_without_credentials(raw))


@pytest.mark.caddy
def test_pipelined_callbacks_on_one_connection_are_each_answered_on_their_own_merits(served: Served) -> None:
    requests = [
        (granted(served), 200),
        (no_credentials(), 401),
        (b'{"action": ', 400),
        (granted(served, path="live/private/x"), 401),
        (granted(served, action="publish"), 401),
        (granted(served), 200),
    ]
    wire = b"".join(request_bytes(body, close=False) for body, _ in requests[:-1])
    wire += request_bytes(requests[-1][0])
    replies = parse_replies(exchange(served.port, [wire]))
    assert [reply.status for reply in replies] == [status for _, status in requests]
    for reply in replies[1:-1]:
        assert_reply_json_error(reply, reply.status)
    still_answering(served)


@pytest.mark.caddy
def test_a_second_request_hidden_in_the_body_is_not_run(served: Served) -> None:
    """Request smuggling: a Content-Length that spans a no-credential body and a complete granted request behind it."""
    hidden = request_bytes(granted(served))
    body = no_credentials() + b"\r\n" + hidden
    assert_reply_json_error(one_reply(exchange(served.port, [request_bytes(body)])), 400)
    # A chunked body that ends early, followed by the hidden request on the same connection: it is a request of its
    # own, answered after the first one, and must be the one and only 200.
    wire = request_bytes(b"", headers=[("Transfer-Encoding", "chunked")], close=False) + chunked(no_credentials(), [7])
    replies = parse_replies(exchange(served.port, [wire + hidden]))
    assert [reply.status for reply in replies] == [401, 200]


@pytest.mark.caddy
@pytest.mark.parametrize("kind", ["no credentials", "a granted token"])
def test_expect_100_continue_gets_the_same_answer(served: Served, kind: str) -> None:
    body = no_credentials() if kind == "no credentials" else granted(served)
    head = request_bytes(b"", headers=[*JSON_TYPE.items(), ("Expect", "100-continue")], length=len(body))
    continued: list[bytes] = []

    def wait_for_continue(sock: socket.socket, index: int) -> None:
        if index == 1:  # before the body: the server asks for it first
            seen = b""
            while b"\r\n\r\n" not in seen:
                seen += sock.recv(1)
            continued.append(seen)

    replies = parse_replies(exchange(served.port, [head, body], before_each=wait_for_continue))
    assert continued and continued[0].startswith(b"HTTP/1.1 100")
    assert len(replies) == 1
    if kind == "no credentials":
        assert_reply_json_error(replies[0], 401)
    else:
        assert replies[0].status == 200 and replies[0].json() == {"allowed": True}


@pytest.mark.caddy
def test_expect_100_continue_with_an_oversized_declared_body_is_413_without_asking_for_it(served: Served) -> None:
    head = request_bytes(b"", headers=[*JSON_TYPE.items(), ("Expect", "100-continue")], length=10 * 1024 * 1024)
    replies = parse_replies(exchange(served.port, [head], half_close=True))
    assert [reply.status for reply in replies] == [413]
    assert_reply_json_error(replies[0], 413)


@pytest.mark.caddy
def test_a_slowly_sent_body_is_answered_and_does_not_hold_up_other_callers(served: Served) -> None:
    results: dict[str, bytes] = {}
    bodies = {"granted": granted(served), "none": no_credentials()}

    def dribble(name: str) -> None:
        wire = request_bytes(bodies[name])
        results[name] = exchange(served.port, [wire[i : i + 16] for i in range(0, len(wire), 16)], pause=0.005)

    threads = [threading.Thread(target=dribble, args=(name,)) for name in bodies]
    for thread in threads:
        thread.start()
    still_answering(served)  # while both bodies are still arriving
    for thread in threads:
        thread.join(30)
    assert one_reply(results["granted"]).status == 200
    assert_reply_json_error(one_reply(results["none"]), 401)


@pytest.mark.caddy
def test_a_stalled_body_does_not_block_other_callbacks(served: Served) -> None:
    body = no_credentials()
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as stalled:
        stalled.sendall(request_bytes(body[:20], length=len(body)))  # promises more than it sends
        still_answering(served)


@pytest.mark.caddy
def test_http_1_0_callbacks(served: Served) -> None:
    # With a Content-Length: an ordinary callback.
    wire = request_bytes(no_credentials(), version="HTTP/1.0", close=False)
    assert_reply_json_error(one_reply(exchange(served.port, [wire])), 401)
    # Without one the body is empty: malformed, whatever bytes follow.
    head = b"POST /mediamtx/auth HTTP/1.0\r\nContent-Type: application/json\r\n\r\n"
    replies = parse_replies(exchange(served.port, [head + granted(served)], half_close=True))
    assert replies, "no answer"
    assert_reply_json_error(replies[0], 400)
    assert all(reply.status == 400 for reply in replies), [reply.status for reply in replies]
    still_answering(served)


@pytest.mark.caddy
@pytest.mark.parametrize("body_kind", ["no credentials", "a granted token"])
def test_a_content_length_longer_than_the_body_never_allows_a_truncated_body(served: Served, body_kind: str) -> None:
    body = no_credentials() if body_kind == "no credentials" else granted(served)
    cut = body[: len(body) // 2]  # half a granted body: the token and path may be in it, the object is not closed
    replies = parse_replies(exchange(served.port, [request_bytes(cut, length=len(body))], half_close=True))
    assert all(reply.status in (400, 401) for reply in replies), [(r.status, r.body) for r in replies]
    still_answering(served)


@pytest.mark.caddy
def test_a_content_length_shorter_than_the_body_answers_for_the_prefix_only(served: Served) -> None:
    body = no_credentials()
    replies = parse_replies(exchange(served.port, [request_bytes(body + b"  ", length=len(body) - 5)]))
    assert replies and replies[0].status == 400
    assert_reply_json_error(replies[0], 400)
    # The prefix of a granted body with a longer tail of granted bytes: the prefix alone is not JSON.
    body = granted(served)
    wire = request_bytes(body, length=len(body) - 1, close=False)
    replies = parse_replies(exchange(served.port, [wire], half_close=True))
    assert [reply.status for reply in replies][:1] == [400], [(r.status, r.body) for r in replies]
    assert all(reply.status == 400 for reply in replies)
    still_answering(served)


BAD_LENGTHS = [
    "abc",
    "-1",
    "+10",
    "1e3",
    "0x10",
    "10 10",
    "",
    "99999999999999999999999",
    "\u0661\u0660".encode().decode("latin-1"),
]


@pytest.mark.caddy
@pytest.mark.parametrize("value", BAD_LENGTHS, ids=[repr(v) for v in BAD_LENGTHS])
def test_a_malformed_content_length_never_reaches_a_decision(served: Served, value: str) -> None:
    body = granted(served)
    wire = request_bytes(body, headers=[*JSON_TYPE.items(), ("Content-Length", value)])
    replies = parse_replies(exchange(served.port, [wire], half_close=True))
    assert replies, "no answer"
    assert all(reply.status in (400, 413) for reply in replies), [(r.status, r.body) for r in replies]
    still_answering(served)


@pytest.mark.caddy
@pytest.mark.parametrize(
    "headers",
    [
        [("Content-Length", "{n}"), ("Content-Length", "5")],
        [("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
        [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "identity")],
        [("Transfer-Encoding", "gzip, chunked")],
        [("Transfer-Encoding", "chunked, identity")],
        [("Transfer-Encoding", " chunked")],
        [("Transfer-Encoding", "xchunked")],
    ],
    ids=["two lengths", "length and chunked", "two codings", "gzip chunked", "chunked identity", "spaced", "xchunked"],
)
def test_conflicting_framing_headers_are_refused_or_framed_as_chunked(
    served: Served, headers: list[tuple[str, str]]
) -> None:
    """Request smuggling: a no-credential body sent chunked under conflicting framing headers, a complete granted
    request right behind it. The server must refuse the request (400, and nothing after it runs) or frame it as
    chunked (RFC 9112: the first answered 401 on its own, then the granted one 200 on its own); never answer the
    first with the second's 200, never run the granted one inside a refused exchange, never a 5xx."""
    first = no_credentials()
    hidden = request_bytes(granted(served))
    filled = [(name, value.replace("{n}", str(len(first)))) for name, value in headers]
    wire = request_bytes(b"", headers=[*JSON_TYPE.items(), *filled], close=False) + chunked(first, []) + hidden
    replies = parse_replies(exchange(served.port, [wire], half_close=True))
    assert [reply.status for reply in replies] in ([400], [400, 400], [401, 200]), [(r.status, r.body) for r in replies]
    still_answering(served)


ODD_TARGETS = [
    "/mediamtx/auth?x=1",
    "/mediamtx/auth?token=abc",
    "/mediamtx/auth/",
    "/mediamtx//auth",
    "//mediamtx/auth",
    "/mediamtx/%61uth",
    "/%6dediamtx/auth",
    "/mediamtx/auth%00",
    "/mediamtx/auth;x",
    "/mediamtx/./auth",
    "/mediamtx/x/../auth",
    "/MEDIAMTX/AUTH",
    "http://127.0.0.1/mediamtx/auth",
    "http://evil.example/mediamtx/auth",
    "/mediamtx/auth#frag",
    "*",
    "mediamtx/auth",
    "/mediamtx/auth\\",
]


@pytest.mark.caddy
@pytest.mark.parametrize("target", ODD_TARGETS)
def test_odd_request_targets_never_allow_without_credentials(served: Served, target: str) -> None:
    replies = parse_replies(exchange(served.port, [request_bytes(no_credentials(), target=target)], half_close=True))
    assert replies, "no answer"
    for reply in replies:
        assert reply.status != 200 and reply.status < 500, (reply.status, reply.body[:200])
        if reply.status in (401, 403, 405) or (reply.status in (400, 404) and reply.body.startswith(b"{")):
            assert_reply_json_error(reply, reply.status)


@pytest.mark.caddy
@pytest.mark.parametrize(
    "method", ["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "post", "Post", "PRI", "M-POST"]
)
def test_other_methods_on_the_callback_are_refused_through_the_real_server(served: Served, method: str) -> None:
    wire = request_bytes(granted(served), method=method)
    replies = parse_replies(exchange(served.port, [wire], half_close=True), head=method == "HEAD")
    assert replies, "no answer"
    assert replies[0].status in (400, 405), replies[0]
    if replies[0].status == 405 and method != "HEAD":
        assert_reply_json_error(replies[0], 405)
        assert replies[0].headers.get("allow") == "POST"
    assert all(reply.status != 200 for reply in replies)


ODD_HEADER_BLOCKS: dict[str, bytes] = {
    "non-ASCII user agent": b"User-Agent: \xff\xfe\xc0\xaf\r\n",
    "NUL in a header value": b"X-Thing: a\x00b\r\n",
    "obsolete line folding": b"X-Thing: a\r\n b\r\n",
    "bare LF line ends": b"X-Thing: a\nX-Other: b\r\n",
    "a space before the colon": b"Content-Type : application/json\r\n",
    "a header without a colon": b"Garbage\r\n",
    "two hundred headers": b"".join(b"X-H%d: v\r\n" % i for i in range(200)),
    "a 70 KB header": b"X-Big: " + b"a" * 70_000 + b"\r\n",
    "identity headers": b"X-Authentik-Username: admin\r\nX-Authentik-Groups: vid_admin\r\nX-Real-IP: 1.2.3.4\r\n",
    "an Authorization header with the API key": f"Authorization: Bearer {API_KEY}\r\nX-API-Key: {API_KEY}\r\n".encode(),
    "a UTF-8 header name": "X-Ü: v\r\n".encode(),
}


@pytest.mark.caddy
@pytest.mark.parametrize("block", sorted(ODD_HEADER_BLOCKS))
def test_odd_header_bytes_never_allow_and_never_crash(served: Served, block: str) -> None:
    body = no_credentials()
    head = b"POST /mediamtx/auth HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    head += ODD_HEADER_BLOCKS[block] + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    replies = parse_replies(exchange(served.port, [head + body], half_close=True))
    assert replies, "no answer"
    for reply in replies:
        assert reply.status in (400, 401, 413, 431), (reply.status, reply.body[:200])
        if reply.status == 401:
            assert_reply_json_error(reply, 401)
    still_answering(served)


@pytest.mark.caddy
def test_a_chunked_body_past_the_app_wide_cap_is_413_through_the_real_server(served: Served) -> None:
    body = json.dumps({**callback_body(token=served.cam1), "pad": "p" * (100 * 1024)}).encode()
    wire = request_bytes(b"", headers=[*JSON_TYPE.items(), ("Transfer-Encoding", "chunked")])
    wire += chunked(body, [8192] * 13)
    replies = parse_replies(exchange(served.port, [wire], half_close=True))
    assert replies and replies[0].status == 413
    assert_reply_json_error(replies[0], 413)


JWKS_HEADER_BLOCKS: dict[str, bytes] = {
    "If-None-Match garbage bytes": b"If-None-Match: \xff\xfe\x00garbage\r\n",
    "If-None-Match non-ASCII": b'If-None-Match: "\xc3\xa9"\r\n',
    "If-None-Match very long": b"If-None-Match: " + b'"x", ' * 2000 + b"*\r\n",
    "Range bytes": b"Range: bytes=0-3\r\n",
    "Range suffix": b"Range: bytes=-5\r\n",
    "Range garbage bytes": b"Range: \xff\xff=1-\r\n",
    "If-Modified-Since garbage": b"If-Modified-Since: \xffyesterday\r\n",
    "Accept-Encoding odd": b"Accept-Encoding: gzip;q=2, br;q=-1, \xff\r\n",
    "two If-None-Match": b'If-None-Match: "a"\r\nIf-None-Match: "b"\r\n',
}


@pytest.mark.caddy
@pytest.mark.parametrize("block", sorted(JWKS_HEADER_BLOCKS))
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_jwks_with_odd_header_bytes_through_the_real_server(served: Served, method: str, block: str) -> None:
    head = f"{method} {JWKS} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".encode()
    raw = exchange(served.port, [head + JWKS_HEADER_BLOCKS[block] + b"\r\n"], half_close=True)
    replies = parse_replies(raw, head=method == "HEAD")
    assert len(replies) == 1, raw[:300]
    reply = replies[0]
    if reply.status == 400 and not reply.body.startswith(b"{"):
        return  # refused by the HTTP parser itself: never reached the app
    assert reply.status == 200, (reply.status, reply.body[:200])
    if method == "GET":
        keys = reply.json()["keys"]
        assert keys and all("d" not in key for key in keys)


@pytest.mark.caddy
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PROPFIND", "CONNECT"])
def test_jwks_with_other_methods_through_the_real_server_is_405(served: Served, method: str) -> None:
    raw = exchange(served.port, [request_bytes(b"{}", target=JWKS, method=method)], half_close=True)
    replies = parse_replies(raw)
    assert replies, raw[:300]
    assert replies[0].status in (400, 405), replies[0]
    if replies[0].status == 405:
        assert_reply_json_error(replies[0], 405)


@pytest.mark.caddy
@settings(FUZZ, max_examples=25)
@given(event=st.sampled_from(HOOK_EVENTS), request=hook_requests(), cuts=st.lists(st.integers(1, 32), max_size=8))
def test_fuzzed_hooks_through_the_real_server_in_chunks(
    served: Served, event: str, request: tuple[bytes, dict[str, str], int | None], cuts: list[int]
) -> None:
    content, headers, expected = request
    wire = request_bytes(
        b"",
        target=f"/mediamtx/hooks/{event}",
        headers=[*headers.items(), ("X-API-Key", API_KEY), ("Transfer-Encoding", "chunked")],
    )
    reply = one_reply(exchange(served.port, [wire + chunked(content, cuts)]))
    if expected is not None:
        assert reply.status == expected, (content[:200], reply)
    else:
        assert reply.status in (204, 400), (content[:200], reply)
    if reply.status != 204:
        assert_reply_json_error(reply, reply.status)


HOOK_TARGETS = {
    "re%61dy": 204,  # one decoding: "ready"
    "%72%65%61%64%79": 204,
    "re%2561dy": 400,  # decoded twice this would be "ready"
    "ready%00": 400,
    "ready%20": 400,
    "ready%2F": 307,  # "ready/": redirected to the name without the slash, not acted on
    "READY": 400,
    "ready;x": 400,
    "./ready": 400,
    "x/../ready": 404,
}


@pytest.mark.caddy
@pytest.mark.parametrize("target", sorted(HOOK_TARGETS))
def test_hook_event_names_are_percent_decoded_once_through_the_real_server(served: Served, target: str) -> None:
    path = f"live/event-{uuid.uuid4().hex}"
    body = json.dumps({"path": path, "source_type": "rtspSession"}).encode()
    headers = [*JSON_TYPE.items(), ("X-API-Key", API_KEY)]
    wire = request_bytes(body, target=f"/mediamtx/hooks/{target}", headers=headers)
    reply = one_reply(exchange(served.port, [wire]))
    expected = HOOK_TARGETS[target]
    if expected == 307:
        assert reply.status == 307 and reply.headers["location"].endswith("/mediamtx/hooks/ready"), reply
    elif expected == 204:
        assert reply.status == 204, reply
    else:
        assert_reply_json_error(reply, reply.status)
        assert reply.status in (400, 404), reply
    with httpx.Client(base_url=served.base, timeout=10) as client:
        streams = client.get("/api/v1/streams", headers=KEY).json()["streams"]
    assert (path in {stream["name"] for stream in streams}) == (expected == 204), streams


@pytest.mark.caddy
def test_the_real_process_survived_every_attack_without_an_unhandled_error(served: Served) -> None:
    still_answering(served)
    logged = served.log_path.read_text(errors="replace")
    assert "Traceback" not in logged and '"level": "error"' not in logged, logged[-3000:]
