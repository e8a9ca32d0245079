"""Identity spoofing and request smuggling through the real Caddy with the shipped Caddyfile.

Every request here is written byte for byte on a raw socket (HTTP/1.1, HTTP/1.0 and HTTP/2 prior knowledge, which
Caddy also speaks on its cleartext port): obsolete line folding, malformed header names, CL/TE smuggling,
pipelining, hop-by-hop `Connection` tricks, upgrades, trailers, forwarding headers and Host tricks. Whatever the
framing, the sidecar may only see the identity the auth reply vouched for, and must never act on another.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sidecar.processes import free_port
from tests.processes_fixtures import VIEWER_PASSWORD, VIEWER_USER, Endpoint, Launch, SidecarInstance, child_env
from tests.raw_http import Reply
from tests.stand_ins import ALICE, SEEN_PATH

pytestmark = pytest.mark.caddy

FIELDS = ("username", "groups", "email", "name", "uid")
SPOOF = (
    "X-Authentik-Username: admin",
    "X-Authentik-Groups: vid_admin",
    "X-Authentik-Email: root@example.org",
    "X-Authentik-Name: Root",
    "X-Authentik-Uid: 0",
)
VOUCHED_ALICE = sorted((k.lower(), v) for k, v in ALICE.items() if k.lower().removeprefix("x-authentik-") in FIELDS)
# Routes Caddy serves without forward_auth: the sidecar sees them anonymous whatever the outpost would say.
PUBLIC_PATHS = frozenset({"/healthz", "/request-access"})
STEPS = ("step=front", "step=hidden", "step=hidden-public", "step=final")
# Where a spoofed header is sent: behind forward_auth (copy_headers also overwrites it) and on a public route
# (only the strip snippet removes it there).
TARGETS = {"guarded": "/api/v1/me", "public": "/request-access"}
STACK_PASSWORD = "stack-admin-password-for-tests"
LOGIN_BUDGET = 3  # failed logins per client address on this module's own sidecar


# --- A raw HTTP/1.x client: nothing normalised, every response on the connection parsed ---------------------


@dataclass(frozen=True)
class RawReply(Reply):
    def json_or_none(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def echoed(self) -> dict[str, Any] | None:
        """What the echo stand-in received, when this reply came from it."""
        found = self.json_or_none()
        return found if isinstance(found, dict) and "upstream" in found else None


@dataclass(frozen=True)
class Exchange:
    replies: list[RawReply]
    rest: bytes  # what followed the last complete reply (a tunnel after a 101, or a cut-off reply)


def http(line: str, *fields: str | bytes, body: bytes = b"") -> bytes:
    """A request line and header lines joined with CRLF exactly as given, the blank line, then the body."""
    parts = [p if isinstance(p, bytes) else p.encode("latin-1") for p in (line, *fields)]
    return b"".join(p + b"\r\n" for p in parts) + b"\r\n" + body


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _dechunk(data: bytes) -> tuple[bytes, bytes]:
    body = b""
    while True:
        line, _, data = data.partition(b"\r\n")
        size = int(line.split(b";")[0] or b"0", 16)
        if size == 0:
            _, _, data = data.partition(b"\r\n")  # no trailers in the replies we read
            return body, data
        body, data = body + data[:size], data[size + 2 :]


def parse_replies(data: bytes) -> Exchange:
    replies: list[RawReply] = []
    while data.startswith(b"HTTP/"):
        head, sep, after = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
        names = {k.lower(): v for k, v in headers}
        if status == 101 or status in (204, 304):
            body = b""
        elif names.get("transfer-encoding", "").lower() == "chunked":
            body, after = _dechunk(after)
        elif "content-length" in names:
            length = int(names["content-length"])
            body, after = after[:length], after[length:]
        else:
            body, after = after, b""
        replies.append(RawReply(status, headers, body))
        data = after
        if status == 101:
            break
    return Exchange(replies, data)


def exchange(endpoint: Endpoint, data: bytes, *, timeout: float = 5.0) -> Exchange:
    """Send `data` on one connection and read until the server closes it (or stops answering)."""
    received = bytearray()
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=timeout) as sock:
        # Refused early (e.g. 431): the sending fails, but the answer is in the receive buffer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        try:
            while chunk_ := sock.recv(65536):
                received += chunk_
        except (TimeoutError, ConnectionResetError):
            pass
    return parse_replies(bytes(received))


def identity_seen(described: dict[str, Any]) -> list[tuple[str, str]]:
    """Identity-looking headers an echo received, in any spelling, with duplicates."""
    return sorted((k, v) for k, v in described["headers"] if "authentik" in k.lower())


def vouched(outpost: Endpoint, raw_path: str) -> list[tuple[str, str]]:
    """What the sidecar may see: the outpost's identity on guarded routes, nothing on public ones."""
    return VOUCHED_ALICE if outpost.name == "outpost-alice" and raw_path not in PUBLIC_PATHS else []


def assert_echo_saw_only_vouched_identity(outpost: Endpoint, done: Exchange) -> list[dict[str, Any]]:
    """No tunnel, each request the echo answered carries the vouched identity only, in request order."""
    assert all(reply.status != 101 for reply in done.replies)
    echoed = [seen for reply in done.replies if (seen := reply.echoed) is not None]
    for seen in echoed:
        assert identity_seen(seen) == vouched(outpost, seen["raw_path"]), seen
    steps = [seen["query"] for seen in echoed if seen["query"] in STEPS]
    assert steps == sorted(set(steps), key=STEPS.index), steps
    return echoed


def assert_no_desync(caddy: Endpoint) -> None:
    """Fresh requests get their own answers: no smuggled reply is waiting on a pooled upstream connection."""
    for _ in range(3):
        probe = f"probe={uuid.uuid4().hex}"
        done = exchange(caddy, http(f"GET /healthz?{probe} HTTP/1.1", f"Host: {caddy.hostport}", "Connection: close"))
        assert [reply.echoed and reply.echoed["query"] for reply in done.replies] == [probe]


def outpost_saw(outpost: Endpoint, marker: str) -> bool:
    """Whether Caddy asked the outpost about a request whose URI contains `marker`."""
    done = exchange(outpost, http(f"GET {SEEN_PATH} HTTP/1.1", f"Host: {outpost.hostport}", "Connection: close"))
    return any(marker in value for entry in done.replies[0].json() for _, value in entry["headers"])


# --- A minimal HTTP/2 prior-knowledge client (literal HPACK fields, no Huffman on the way out) ---------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, CONTINUATION = 0, 1, 3, 4, 6, 7, 9
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
# `:status` as Go's HPACK encoder writes it: a static-table index (8-14), or a literal value (Huffman-coded digits)
# under one of those names, with or without indexing.
STATIC_STATUS = {0x88: 200, 0x89: 204, 0x8A: 206, 0x8B: 304, 0x8C: 400, 0x8D: 404, 0x8E: 500}
STATUS_NAMED = frozenset(flags | index for flags in (0x00, 0x10, 0x40) for index in range(8, 15))
HUFFMAN_DIGITS = {
    "00000": "0",
    "00001": "1",
    "00010": "2",
    "011001": "3",
    "011010": "4",
    "011011": "5",
    "011100": "6",
    "011101": "7",
    "011110": "8",
    "011111": "9",
}


def h2_frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _hpack_int(value: int, bits: int, flags: int = 0) -> bytes:
    limit = (1 << bits) - 1
    if value < limit:
        return bytes([flags | value])
    out, value = bytearray([flags | limit]), value - limit
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    return bytes([*out, value])


def hpack_field(name: bytes, value: bytes, *, index: bool = False) -> bytes:
    """A literal field with a literal name: without indexing, or added to the dynamic table."""
    first = 0x40 if index else 0x00
    return bytes([first]) + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value


def h2_request_fields(method: str, path: str, authority: str) -> bytes:
    pseudo = ((":method", method), (":scheme", "http"), (":path", path), (":authority", authority))
    return b"".join(hpack_field(k.encode(), v.encode()) for k, v in pseudo)


@dataclass
class H2Stream:
    block: bytes = b""
    data: bytes = b""
    reset: int | None = None
    ended: bool = False

    @property
    def status(self) -> int | None:
        if not self.block:
            return None
        if self.block[0] in STATIC_STATUS:
            return STATIC_STATUS[self.block[0]]
        if self.block[0] not in STATUS_NAMED or len(self.block) < 2:
            return None
        raw = self.block[2 : 2 + (self.block[1] & 0x7F)]
        if not self.block[1] & 0x80:
            return int(raw)
        digits, code = "", ""
        for bit in "".join(f"{byte:08b}" for byte in raw):
            code += bit
            if code in HUFFMAN_DIGITS:
                digits, code = digits + HUFFMAN_DIGITS[code], ""
        return int(digits[:3]) if len(digits) >= 3 else None

    def json_or_none(self) -> Any:
        try:
            return json.loads(self.data)
        except ValueError:
            return None


def h2_exchange(
    endpoint: Endpoint, frames: bytes, streams: Sequence[int], *, timeout: float = 5.0
) -> dict[int, H2Stream]:
    """Speak HTTP/2 with prior knowledge on Caddy's cleartext port until every given stream has ended."""
    found = {sid: H2Stream() for sid in streams}
    buffer = b""
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=timeout) as sock:
        sock.sendall(PREFACE + h2_frame(SETTINGS, 0, 0) + frames)
        try:
            while not all(s.ended for s in found.values()):
                received = sock.recv(65536)
                if not received:
                    break
                buffer += received
                while len(buffer) >= 9 and len(buffer) >= 9 + (length := int.from_bytes(buffer[:3], "big")):
                    kind, flags = buffer[3], buffer[4]
                    sid = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
                    payload, buffer = buffer[9 : 9 + length], buffer[9 + length :]
                    if kind in (SETTINGS, PING) and not flags & ACK:
                        sock.sendall(h2_frame(kind, ACK, 0, payload if kind == PING else b""))
                    elif kind == GOAWAY:
                        return found
                    elif sid in found:
                        stream = found[sid]
                        if kind in (HEADERS, CONTINUATION):
                            stream.block += payload
                        elif kind == DATA:
                            stream.data += payload
                        elif kind == RST_STREAM:
                            stream.reset = int.from_bytes(payload, "big")
                        stream.ended = (
                            stream.ended or kind == RST_STREAM or bool(kind in (DATA, HEADERS) and flags & END_STREAM)
                        )
        except (TimeoutError, ConnectionResetError):
            pass
    return found


# --- Fixtures: the shared stacks, and this module's own local-mode stack for writes and rate limits --------


@pytest.fixture(params=["caddy_local", "caddy_alice", "caddy_anonymous"])
def real_site(request: pytest.FixtureRequest) -> tuple[str, Endpoint]:
    """The real sidecar behind the shipped Caddyfile: local mode, an outpost vouching for alice, one vouching for
    nobody."""
    return request.param, request.getfixturevalue(request.param)


def assert_sidecar_acted_on_no_client_identity(site: str, bodies: Sequence[Any]) -> None:
    """No answer names anyone but the vouched person, and none reveals a client header merged with hers."""
    assert bodies, "no answer at all"
    for body in bodies:
        if not isinstance(body, dict):
            continue
        assert "duplicate identity" not in str(body.get("error", "")), body
        if "role" in body or "username" in body:
            assert site == "caddy_alice", body
            assert (body["username"], body["role"], body["groups"]) == ("alice", "viewer", ["vid_public"])


@dataclass
class Stack:
    """A local-mode sidecar of this module's own, behind the shipped Caddyfile, with bob (vid_public) signed in."""

    caddy: Endpoint
    sidecar: Endpoint
    api_key: str
    cookie: str = ""
    csrf: str = ""

    def api(self, target: str) -> Any:
        """A read with the API key, straight to the sidecar: the ground truth after an attack."""
        fields = (f"Host: {self.sidecar.hostport}", f"X-API-Key: {self.api_key}", "Connection: close")
        replies = exchange(self.sidecar, http(f"GET {target} HTTP/1.1", *fields)).replies
        assert replies[0].status == 200, replies[0].body
        return replies[0].json()

    def rule_patterns(self) -> set[str]:
        return {rule["pattern"] for rule in self.api("/api/v1/rules")["rules"]}

    def groups_of(self, username: str) -> set[str]:
        users = self.api(f"/api/v1/users?search={username}")["users"]
        return {group for user in users if user["username"] == username for group in user["groups"]}


@pytest.fixture(scope="module")
def stack(launch: Launch, start_caddy: Callable[..., Endpoint], process_dir: Path, echo_editor: Endpoint) -> Stack:
    data_dir = process_dir / "identity-spoofing-data"
    env = child_env(SIDECAR_MODE="local", SIDECAR_DATA_DIR=str(data_dir), SIDECAR_LOG_LEVEL="WARNING")
    cli = [sys.executable, "-m", "sidecar"]
    for argv, stdin in (
        ([*cli, "bootstrap"], ""),
        ([*cli, "users", "add", VIEWER_USER, "--group", "vid_public", "--password-stdin"], VIEWER_PASSWORD + "\n"),
    ):
        run_env = {**env, "SIDECAR_BOOTSTRAP_PASSWORD": STACK_PASSWORD}
        done = subprocess.run(
            argv, env=run_env, cwd=process_dir, input=stdin, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"{' '.join(argv[2:])} failed:\n{done.stdout}\n{done.stderr}"
    port = free_port()
    serve_env = {
        **env,
        "SIDECAR_HOST": "127.0.0.1",
        "SIDECAR_PORT": str(port),
        "SIDECAR_TRUSTED_PROXIES": "127.0.0.0/8,::1/128",
        "SIDECAR_EDITOR_URL": echo_editor.url,
        "SIDECAR_LOGIN_RATE_IP": f"{LOGIN_BUDGET}/minute",
        "SIDECAR_LOGIN_RATE_USER": "100/minute",
    }
    launch("sidecar-identity-spoofing", [*cli, "serve"], serve_env, ready_url=f"http://127.0.0.1:{port}/healthz")
    sidecar = Endpoint("sidecar-identity-spoofing", port)
    caddy = start_caddy("caddy-identity-spoofing", sidecar=sidecar, auth=sidecar, auth_uri="/auth/verify")
    built = Stack(caddy, sidecar, (data_dir / "api_key").read_text().strip())
    # Sign bob in now: the rate-limit attack below spends this stack's failed-login budget for Caddy's address.
    body = json.dumps({"username": VIEWER_USER, "password": VIEWER_PASSWORD}).encode()
    login = http(
        "POST /auth/login HTTP/1.1",
        f"Host: {caddy.hostport}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        body=body,
    )
    signed_in = exchange(caddy, login).replies[0]
    assert signed_in.status == 200, signed_in.body
    built.cookie = f"sidecar_session={signed_in.json()['token']}"
    me = exchange(
        caddy,
        http("GET /api/v1/me HTTP/1.1", f"Host: {caddy.hostport}", f"Cookie: {built.cookie}", "Connection: close"),
    )
    built.csrf = me.replies[0].json()["csrf_token"]
    return built


def spoofed_writes(
    stack: Stack, tag: str, *, group: str = "vid_admin", extra: Sequence[str] = (), session: bool = True
) -> bytes:
    """bob's own session, CSRF token and origin, plus headers claiming he is in vid_admin: a rule write and his own
    promotion to `group`. From a trusted peer, without the session cookie (which the sidecar would read again and
    which says bob is a viewer), these succeed (see the potency test); through Caddy they must not."""
    body = json.dumps({"pattern": f"{tag}/**", "groups": ["vid_public"]}).encode()
    common = (
        f"Host: {stack.caddy.hostport}",
        f"Origin: http://{stack.caddy.hostport}",
        f"X-CSRF-Token: {stack.csrf}",
        *((f"Cookie: {stack.cookie}",) if session else ()),
        f"X-Authentik-Username: {VIEWER_USER}",
        "X-Authentik-Groups: vid_admin",
        *extra,
    )
    rule = http(
        "PUT /api/v1/rules HTTP/1.1",
        *common,
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        body=body,
    )
    promote = http(f"PUT /api/v1/users/{VIEWER_USER}/groups/{group} HTTP/1.1", *common, "Content-Length: 0")
    return rule + promote


def assert_no_write_answered(replies: Sequence[RawReply]) -> None:
    """No reply is the answer of a rule write (`pattern`) or a membership change (`member`)."""
    for reply in replies:
        body = reply.json_or_none()
        assert not (isinstance(body, dict) and {"pattern", "member"} & body.keys()), (reply.status, body)


def assert_no_spoofed_write_landed(stack: Stack) -> None:
    assert not {p for p in stack.rule_patterns() if p.startswith("smuggled/")}
    assert "vid_admin" not in stack.groups_of(VIEWER_USER)


# --- Framings that try to hide a second request from Caddy -----------------------------------------------------

H2C_SETTINGS = "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"


def framings(host: str, hidden: bytes) -> dict[str, bytes]:
    """Each entry: one connection's bytes, `hidden` smuggled somewhere inside, ending with a request that closes."""
    h = f"Host: {host}"
    final = http("GET /healthz?step=final HTTP/1.1", h, "Connection: close")
    end = b"0\r\n\r\n"

    def post(*fields: str, body: bytes) -> bytes:
        return http("POST /request-access?step=front HTTP/1.1", h, *fields, body=body) + final

    def te(spelling: str) -> bytes:  # classic CL.TE: the length covers `hidden`, the chunked body ends before it
        return post(f"Content-Length: {len(end + hidden)}", spelling, body=end + hidden)

    return {
        "pipelined": http("GET /healthz?step=front HTTP/1.1", h) + hidden + final,
        "cl-te": te("Transfer-Encoding: chunked"),
        "te-cl": post("Content-Length: 4", "Transfer-Encoding: chunked", body=chunk(hidden) + end),
        "te-capitalised": te("Transfer-Encoding: Chunked"),
        "te-leading-space": te("Transfer-Encoding:  chunked"),
        "te-leading-tab": te("Transfer-Encoding:\tchunked"),
        "te-chunked-identity": te("Transfer-Encoding: chunked, identity"),
        "te-identity-chunked": te("Transfer-Encoding: identity, chunked"),
        "te-twice": te("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity"),
        "te-space-before-colon": te("Transfer-Encoding : chunked"),
        "te-unknown-coding": post(f"Content-Length: {len(hidden)}", "Transfer-Encoding: xchunked", body=hidden),
        "cl-twice": post("Content-Length: 0", f"Content-Length: {len(hidden)}", body=hidden),
        "cl-list": post(f"Content-Length: 0, {len(hidden)}", body=hidden),
        "cl-signed": post(f"Content-Length: +{len(hidden)}", body=hidden),
        "cl-on-get": http("GET /api/v1/me?step=front HTTP/1.1", h, f"Content-Length: {len(hidden)}", body=hidden)
        + final,
        "chunked-get": http(
            "GET /api/v1/me?step=front HTTP/1.1", h, "Transfer-Encoding: chunked", body=chunk(hidden) + end
        )
        + final,
        "chunk-extension-quoted-crlf": post(
            "Transfer-Encoding: chunked", body=f'{len(hidden):x};x="\r\n'.encode() + hidden + b'"\r\n' + end
        ),
        "chunk-bare-lf": post("Transfer-Encoding: chunked", body=f"{len(hidden):x}\n".encode() + hidden + b"\n0\n\n"),
        "chunk-size-overflow": post(
            "Transfer-Encoding: chunked", body=b"1" + b"0" * 16 + b"\r\n" + hidden + b"\r\n" + end
        ),
        "connection-names-framing": post(
            f"Content-Length: {len(hidden)}",
            "Connection: keep-alive, Content-Length, Transfer-Encoding, Host",
            body=hidden,
        ),
        "http10-keep-alive": http("GET /healthz?step=front HTTP/1.0", h, "Connection: keep-alive") + hidden + final,
        "upgrade-h2c": http(
            "GET /healthz?step=front HTTP/1.1", h, "Upgrade: h2c", H2C_SETTINGS, "Connection: Upgrade, HTTP2-Settings"
        )
        + hidden
        + final,
        "upgrade-websocket": http(
            "GET /api/v1/me?step=front HTTP/1.1",
            h,
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
        )
        + hidden
        + final,
        "connect-tunnel": http(f"CONNECT {host} HTTP/1.1", h) + hidden + final,
    }


FRAMINGS = list(framings("x", b""))


def hidden_me(host: str, *extra: str) -> bytes:
    return http("GET /api/v1/me?step=hidden HTTP/1.1", f"Host: {host}", *SPOOF, *extra)


def hidden_pair(host: str) -> bytes:
    """A spoofed request behind forward_auth, then one on a public route, where only the strip stands guard."""
    return hidden_me(host) + http("GET /request-access?step=hidden-public HTTP/1.1", f"Host: {host}", *SPOOF)


@pytest.mark.parametrize("framing", FRAMINGS)
def test_smuggled_request_reaches_the_backend_only_with_the_vouched_identity(
    caddy_echo: tuple[Endpoint, Endpoint], framing: str
) -> None:
    caddy, outpost = caddy_echo
    done = exchange(caddy, framings(caddy.hostport, hidden_pair(caddy.hostport))[framing])
    assert_echo_saw_only_vouched_identity(outpost, done)
    assert_no_desync(caddy)


@pytest.mark.parametrize("framing", FRAMINGS)
def test_smuggled_admin_request_is_never_honoured_by_the_sidecar(real_site: tuple[str, Endpoint], framing: str) -> None:
    site, caddy = real_site
    done = exchange(caddy, framings(caddy.hostport, hidden_me(caddy.hostport))[framing])
    assert all(reply.status != 101 for reply in done.replies)
    assert_sidecar_acted_on_no_client_identity(site, [reply.json_or_none() for reply in done.replies])


@pytest.mark.parametrize("framing", FRAMINGS)
def test_smuggled_self_promotion_and_rule_write_never_land(stack: Stack, framing: str) -> None:
    done = exchange(stack.caddy, framings(stack.caddy.hostport, spoofed_writes(stack, f"smuggled/{framing}"))[framing])
    assert all(reply.status != 101 for reply in done.replies)
    assert_no_write_answered(done.replies)
    assert_no_spoofed_write_landed(stack)


def test_spoofed_writes_would_land_if_they_reached_the_sidecar_from_a_trusted_peer(stack: Stack) -> None:
    """Potency of the payload above: straight from loopback (a trusted proxy address) the same bytes, less bob's
    session cookie, are obeyed, so only Caddy's stripping keeps them out. (With the cookie the sidecar reads bob's
    session again and he stays a viewer.) Promotes bob to vid_private, which is harmless for the other tests."""
    tag = f"potency/{uuid.uuid4().hex}"
    done = exchange(
        stack.sidecar,
        spoofed_writes(stack, tag, group="vid_private", session=False)
        + http("GET /healthz HTTP/1.1", f"Host: {stack.caddy.hostport}", "Connection: close"),
    )
    assert [reply.status for reply in done.replies] == [200, 200, 200]
    assert f"{tag}/**" in stack.rule_patterns()
    assert "vid_private" in stack.groups_of(VIEWER_USER)
    assert "vid_admin" not in stack.groups_of(VIEWER_USER)


# --- Header-level tricks: folding, malformed names, long and many headers ----------------------------------


FOLDED = {
    "identity-value-folded": ("X-Authentik-Groups: vid_public\r\n vid_admin",),
    "identity-name-in-continuation": ("X-Foo: a\r\n X-Authentik-Groups: vid_admin",),
    "identity-name-in-tab-continuation": ("X-Foo: a\r\n\tX-Authentik-Username: admin", "X-Authentik-Groups: vid_admin"),
    "identity-after-folded-identity": ("X-Authentik-Username: admin\r\n  ", "X-Authentik-Groups: vid_admin"),
}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("folded", FOLDED)
def test_obsolete_line_folding_cannot_carry_an_identity_header(
    caddy_echo: tuple[Endpoint, Endpoint], folded: str, target: str
) -> None:
    caddy, outpost = caddy_echo
    request = http(f"GET {TARGETS[target]} HTTP/1.1", f"Host: {caddy.hostport}", *FOLDED[folded], "Connection: close")
    done = exchange(caddy, request)
    echoed = assert_echo_saw_only_vouched_identity(outpost, done)
    # Caddy joins folded lines into the previous field's value (or refuses them): either way no new field appears.
    assert (len(echoed), done.replies[0].status) in ((1, 200), (0, 400))


@pytest.mark.parametrize("folded", FOLDED)
def test_obsolete_line_folding_never_signs_anyone_in(real_site: tuple[str, Endpoint], folded: str) -> None:
    site, caddy = real_site
    request = http(
        "GET /api/v1/me HTTP/1.1", f"Host: {caddy.hostport}", *FOLDED[folded], *SPOOF[:1], "Connection: close"
    )
    assert_sidecar_acted_on_no_client_identity(site, [r.json_or_none() for r in exchange(caddy, request).replies])


MALFORMED_NAMES: dict[str, bytes] = {
    "space-before-colon": b"X-Authentik-Groups : vid_admin",
    "tab-before-colon": b"X-Authentik-Groups\t: vid_admin",
    "nul-at-end": b"X-Authentik-Groups\x00: vid_admin",
    "nul-inside": b"X-Authentik\x00-Groups: vid_admin",
    "utf8-letter": "X-Authentik-Gröups: vid_admin".encode(),
    "latin1-byte": b"X-Authentik-Groups\xe9: vid_admin",
    "kelvin-sign-k": "X-Authenti\u212a-Groups: vid_admin".encode(),
    "bare-cr-splits-line": b"X-Foo: a\rX-Authentik-Groups: vid_admin",
    "continuation-of-host": b" X-Authentik-Groups: vid_admin",
    "name-with-slash": b"X-Authentik/Groups: vid_admin",
}


@pytest.mark.parametrize("name", MALFORMED_NAMES)
def test_malformed_identity_header_name_is_refused_before_any_routing(
    caddy_echo: tuple[Endpoint, Endpoint], name: str
) -> None:
    caddy, outpost = caddy_echo
    marker = uuid.uuid4().hex
    request = http(
        f"GET /api/v1/me?m={marker} HTTP/1.1",
        f"Host: {caddy.hostport}",
        MALFORMED_NAMES[name],
        *SPOOF[:1],
        "Connection: close",
    )
    replies = exchange(caddy, request).replies
    assert [reply.status for reply in replies] == [400]
    assert replies[0].echoed is None
    assert not outpost_saw(outpost, marker)


@pytest.mark.parametrize("name", MALFORMED_NAMES)
def test_malformed_identity_header_name_never_signs_anyone_in(real_site: tuple[str, Endpoint], name: str) -> None:
    site, caddy = real_site
    request = http(
        "GET /api/v1/me HTTP/1.1", f"Host: {caddy.hostport}", MALFORMED_NAMES[name], *SPOOF, "Connection: close"
    )
    replies = exchange(caddy, request).replies
    assert [reply.status for reply in replies] == [400]
    assert_sidecar_acted_on_no_client_identity(site, [reply.json_or_none() for reply in replies])


PADDING = {
    "after-a-16k-header": (f"X-Pad: {'a' * 16_000}",),
    "after-300-headers": tuple(f"X-Pad-{n}: {n}" for n in range(300)),
    "after-a-long-cookie": (f"Cookie: {'; '.join(f'c{n}=v' for n in range(1500))}",),
    "between-long-headers": (f"X-Pad: {'a' * 8_000}", "X-Authentik-Groups: vid_admin", f"X-Pad-2: {'b' * 8_000}"),
}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("padding", PADDING)
def test_identity_header_hidden_after_long_headers_is_still_stripped(
    caddy_echo: tuple[Endpoint, Endpoint], padding: str, target: str
) -> None:
    caddy, outpost = caddy_echo
    fields = (f"Host: {caddy.hostport}", *PADDING[padding], *SPOOF, "Connection: close")
    request = http(f"GET {TARGETS[target]} HTTP/1.1", *fields)
    done = exchange(caddy, request)
    assert [reply.status for reply in done.replies] == [200]
    assert_echo_saw_only_vouched_identity(outpost, done)


@pytest.mark.parametrize("padding", PADDING)
def test_identity_header_hidden_after_long_headers_never_signs_anyone_in(
    real_site: tuple[str, Endpoint], padding: str
) -> None:
    site, caddy = real_site
    request = http("GET /api/v1/me HTTP/1.1", f"Host: {caddy.hostport}", *PADDING[padding], *SPOOF, "Connection: close")
    replies = exchange(caddy, request).replies
    assert len(replies) == 1 and replies[0].status < 500, replies
    assert_sidecar_acted_on_no_client_identity(site, [replies[0].json_or_none()])


def test_identity_header_beyond_caddys_header_limit_reaches_nothing(caddy_echo: tuple[Endpoint, Endpoint]) -> None:
    caddy, outpost = caddy_echo
    marker = uuid.uuid4().hex
    request = http(f"GET /api/v1/me?m={marker} HTTP/1.1", f"Host: {caddy.hostport}", f"X-Pad: {'a' * 200_000}", *SPOOF)
    replies = exchange(caddy, request).replies
    assert [reply.status for reply in replies] == [431]
    assert not outpost_saw(outpost, marker)


REQUEST_LINE_INJECTION = {
    "encoded-crlf-in-path": "GET /api/v1/me%0d%0aX-Authentik-Groups:%20vid_admin HTTP/1.1",
    "encoded-crlf-in-query": "GET /api/v1/me?x=%0d%0aX-Authentik-Username:%20admin HTTP/1.1",
    "encoded-upper-crlf-in-query": "GET /api/v1/me?x=%0D%0AX-Authentik-Groups:%20vid_admin%0D%0A%0D%0A HTTP/1.1",
}


@pytest.mark.parametrize("line", [name for name in REQUEST_LINE_INJECTION if "query" in name])
def test_encoded_crlf_in_the_target_stays_in_the_target(caddy_echo: tuple[Endpoint, Endpoint], line: str) -> None:
    """(The echo's router cannot match a path holding a decoded CRLF; the path variant is checked on the sidecar.)"""
    caddy, outpost = caddy_echo
    done = exchange(caddy, http(REQUEST_LINE_INJECTION[line], f"Host: {caddy.hostport}", "Connection: close"))
    (seen,) = assert_echo_saw_only_vouched_identity(outpost, done)
    assert "%0d%0a" in seen["query"].lower()


@pytest.mark.parametrize("line", REQUEST_LINE_INJECTION)
def test_encoded_crlf_in_the_target_never_signs_anyone_in(real_site: tuple[str, Endpoint], line: str) -> None:
    site, caddy = real_site
    replies = exchange(
        caddy, http(REQUEST_LINE_INJECTION[line], f"Host: {caddy.hostport}", "Connection: close")
    ).replies
    assert len(replies) == 1 and replies[0].status < 500
    assert_sidecar_acted_on_no_client_identity(site, [replies[0].json_or_none()])


def test_raw_crlf_in_the_request_line_is_refused(caddy_echo: tuple[Endpoint, Endpoint]) -> None:
    caddy, _ = caddy_echo
    request = (
        b"GET /api/v1/me\r\nX-Authentik-Groups: vid_admin HTTP/1.1\r\nHost: " + caddy.hostport.encode() + b"\r\n\r\n"
    )
    replies = exchange(caddy, request).replies
    assert [reply.status for reply in replies] == [400]
    assert replies[0].echoed is None


# --- Hop-by-hop: naming the vouched headers in Connection ----------------------------------------------------

HOP_BY_HOP = {
    "groups": "Connection: keep-alive, X-Authentik-Groups",
    "username": "Connection: close, X-Authentik-Username",
    "every-identity-field": "Connection: close, " + ", ".join(f"X-Authentik-{f.capitalize()}" for f in FIELDS),
    "lower-case-and-forwarding": "Connection: close, x-authentik-groups, X-Forwarded-For, Via, X-Forwarded-Host",
}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("connection", HOP_BY_HOP)
def test_connection_header_can_only_drop_vouched_identity_never_let_a_client_copy_through(
    caddy_echo: tuple[Endpoint, Endpoint], connection: str, target: str
) -> None:
    caddy, outpost = caddy_echo
    request = http(f"GET {TARGETS[target]} HTTP/1.1", f"Host: {caddy.hostport}", *SPOOF, HOP_BY_HOP[connection])
    done = exchange(
        caddy, request + http("GET /healthz?step=final HTTP/1.1", f"Host: {caddy.hostport}", "Connection: close")
    )
    seen = done.replies[0].echoed
    assert seen is not None
    identity = identity_seen(seen)
    assert set(identity) <= set(vouched(outpost, TARGETS[target]))  # a subset of what the outpost said, never more
    assert len({name for name, _ in identity}) == len(identity)
    # Caddy adds the forwarding fields after removing hop-by-hop ones: the peer cannot be erased or chosen.
    assert dict(seen["headers"])["x-forwarded-for"] == "127.0.0.1"


@pytest.mark.parametrize("connection", HOP_BY_HOP)
def test_connection_header_trick_never_grants_admin(real_site: tuple[str, Endpoint], connection: str) -> None:
    site, caddy = real_site
    h = f"Host: {caddy.hostport}"
    final = http("GET /healthz HTTP/1.1", h, "Connection: close")
    me = exchange(caddy, http("GET /api/v1/me HTTP/1.1", h, *SPOOF, HOP_BY_HOP[connection]) + final).replies[0]
    assert me.status in (200, 401, 403)
    assert_sidecar_acted_on_no_client_identity(site, [me.json()])
    if me.status != 200:
        assert "error" in me.json()
    rules = exchange(caddy, http("GET /api/v1/rules HTTP/1.1", h, *SPOOF, HOP_BY_HOP[connection]) + final).replies[0]
    assert rules.status in (401, 403)
    assert "error" in rules.json()


def test_connection_header_trick_cannot_promote_a_signed_in_viewer(stack: Stack) -> None:
    hop = "Connection: keep-alive, X-Authentik-Groups, X-Authentik-Username"
    writes = spoofed_writes(stack, "smuggled/connection", extra=[hop])
    done = exchange(
        stack.caddy, writes + http("GET /healthz HTTP/1.1", f"Host: {stack.caddy.hostport}", "Connection: close")
    )
    assert [reply.status for reply in done.replies][:2] == [403, 403]
    assert_no_spoofed_write_landed(stack)


# --- Trailers ------------------------------------------------------------------------------------------------


def trailer_request(host: str, method: str, target: str, body: bytes, *extra: str) -> bytes:
    trailers = "".join(f"{line}\r\n" for line in SPOOF).encode()
    return http(
        f"{method} {target} HTTP/1.1",
        f"Host: {host}",
        "Transfer-Encoding: chunked",
        "Trailer: X-Authentik-Username, X-Authentik-Groups",
        *extra,
        "Connection: close",
        body=(chunk(body) if body else b"") + b"0\r\n" + trailers + b"\r\n",
    )


@pytest.mark.parametrize("target", TARGETS)
def test_identity_in_chunked_trailers_never_reaches_the_backend(
    caddy_echo: tuple[Endpoint, Endpoint], target: str
) -> None:
    caddy, outpost = caddy_echo
    done = exchange(caddy, trailer_request(caddy.hostport, "POST", TARGETS[target], b"{}"))
    (seen,) = assert_echo_saw_only_vouched_identity(outpost, done)
    assert seen["method"] == "POST"


def test_identity_in_chunked_trailers_cannot_write_rules(stack: Stack) -> None:
    body = json.dumps({"pattern": "smuggled/trailers/**", "groups": ["vid_public"]}).encode()
    extra = (f"Origin: http://{stack.caddy.hostport}", f"X-CSRF-Token: {stack.csrf}", f"Cookie: {stack.cookie}")
    done = exchange(stack.caddy, trailer_request(stack.caddy.hostport, "PUT", "/api/v1/rules", body, *extra))
    assert [reply.status for reply in done.replies] == [403]
    assert "error" in done.replies[0].json()
    assert_no_spoofed_write_landed(stack)


# --- HTTP/2 with prior knowledge on the cleartext port -------------------------------------------------------

H2_SPOOF = [(b"x-authentik-username", b"admin"), (b"x-authentik-groups", b"vid_admin")]


def h2_attacks(authority: str, path: str = "/api/v1/me") -> dict[str, tuple[bytes, list[int]]]:
    """Frames after the preface, and the streams they open."""

    def get(sid: int, fields: Sequence[tuple[bytes, bytes]], *, index: bool = False) -> bytes:
        block = h2_request_fields("GET", path, authority) + b"".join(hpack_field(k, v, index=index) for k, v in fields)
        return h2_frame(HEADERS, END_STREAM | END_HEADERS, sid, block)

    def post(sid: int, fields: Sequence[tuple[bytes, bytes]], data: bytes) -> bytes:
        block = h2_request_fields("POST", path, authority) + b"".join(hpack_field(k, v) for k, v in fields)
        return h2_frame(HEADERS, END_HEADERS, sid, block) + h2_frame(DATA, END_STREAM, sid, data)

    smuggled = hidden_me("x")
    attacks: dict[str, tuple[bytes, list[int]]] = {
        "lower-case-fields": (get(1, H2_SPOOF), [1]),
        "underscore-fields": (
            get(1, [(b"x_authentik_username", b"admin"), (b"x_authentik_groups", b"vid_admin")]),
            [1],
        ),
        "duplicated-fields": (get(1, [*H2_SPOOF, (b"x-authentik-groups", b"vid_admin")]), [1]),
        "upper-case-name": (get(1, [(b"X-Authentik-Groups", b"vid_admin")]), [1]),
        "crlf-in-value": (get(1, [(b"x-foo", b"a\r\nx-authentik-groups: vid_admin")]), [1]),
        "crlf-in-name": (get(1, [(b"x-foo: a\r\nx-authentik-groups", b"vid_admin")]), [1]),
        "colon-in-name": (get(1, [(b"x-authentik-groups:", b"vid_admin")]), [1]),
        "nul-in-value": (get(1, [(b"x-authentik-groups", b"vid\x00admin")]), [1]),
        # Indexed into HPACK's dynamic table on stream 1, then sent as bare indexes (62, 63) on stream 3.
        "hpack-indexed-reuse": (
            get(1, H2_SPOOF, index=True)
            + h2_frame(HEADERS, END_STREAM | END_HEADERS, 3, h2_request_fields("GET", path, authority) + b"\xbe\xbf"),
            [1, 3],
        ),
        "identity-in-continuation": (
            h2_frame(HEADERS, END_STREAM, 1, h2_request_fields("GET", path, authority))
            + h2_frame(CONTINUATION, END_HEADERS, 1, b"".join(hpack_field(k, v) for k, v in H2_SPOOF)),
            [1],
        ),
        "identity-in-trailers": (
            h2_frame(HEADERS, END_HEADERS, 1, h2_request_fields("POST", path, authority))
            + h2_frame(DATA, 0, 1, b"{}")
            + h2_frame(HEADERS, END_STREAM | END_HEADERS, 1, b"".join(hpack_field(k, v) for k, v in H2_SPOOF)),
            [1],
        ),
        "transfer-encoding-with-smuggled-body": (
            post(1, [(b"transfer-encoding", b"chunked")], b"0\r\n\r\n" + smuggled),
            [1],
        ),
        "content-length-shorter-than-data": (post(1, [(b"content-length", b"0")], smuggled), [1]),
        "connection-names-identity": (get(1, [(b"connection", b"x-authentik-groups")]), [1]),
        "host-differs-from-authority": (get(1, [(b"host", b"evil.example"), *H2_SPOOF]), [1]),
        "userinfo-in-authority": (
            h2_frame(HEADERS, END_STREAM | END_HEADERS, 1, h2_request_fields("GET", path, f"admin@{authority}")),
            [1],
        ),
        "crlf-in-path": (
            h2_frame(
                HEADERS,
                END_STREAM | END_HEADERS,
                1,
                h2_request_fields("GET", f"{path} HTTP/1.1\r\nX-Authentik-Groups: vid_admin\r\nX-Foo: /", authority),
            ),
            [1],
        ),
        "request-line-in-path": (
            h2_frame(HEADERS, END_STREAM | END_HEADERS, 1, h2_request_fields("GET", f"{path} HTTP/1.1", authority)),
            [1],
        ),
        "request-in-method": (
            h2_frame(
                HEADERS,
                END_STREAM | END_HEADERS,
                1,
                h2_request_fields(f"GET {path} HTTP/1.1\r\nX-Authentik-Groups: vid_admin\r\n\r\nGET", path, authority),
            ),
            [1],
        ),
    }
    return attacks


H2_ATTACKS = list(h2_attacks("x"))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("attack", H2_ATTACKS)
def test_http2_prior_knowledge_request_reaches_the_backend_only_with_the_vouched_identity(
    caddy_echo: tuple[Endpoint, Endpoint], attack: str, target: str
) -> None:
    caddy, outpost = caddy_echo
    frames, streams = h2_attacks(caddy.hostport, TARGETS[target])[attack]
    found = h2_exchange(caddy, frames, streams)
    assert all(stream.ended for stream in found.values()), found
    for stream in found.values():
        seen = stream.json_or_none()
        if isinstance(seen, dict) and "upstream" in seen:
            assert identity_seen(seen) == vouched(outpost, seen["raw_path"]), seen
            assert not any("\r" in value or "\n" in value for _, value in seen["headers"])
        else:
            assert stream.reset is not None or (stream.status or 0) >= 400, stream
    assert_no_desync(caddy)


@pytest.mark.parametrize("attack", H2_ATTACKS)
def test_http2_prior_knowledge_request_never_signs_anyone_in(real_site: tuple[str, Endpoint], attack: str) -> None:
    site, caddy = real_site
    frames, streams = h2_attacks(caddy.hostport)[attack]
    found = h2_exchange(caddy, frames, streams)
    assert all(stream.ended for stream in found.values()), found
    assert_sidecar_acted_on_no_client_identity(site, [stream.json_or_none() for stream in found.values()])
    for stream in found.values():
        if site != "caddy_alice" and stream.status is not None and stream.data.startswith(b"{"):
            assert 400 <= stream.status < 500, stream


def test_http2_spoofed_write_from_a_signed_in_viewer_never_lands(stack: Stack) -> None:
    authority = stack.caddy.hostport
    body = json.dumps({"pattern": "smuggled/http2/**", "groups": ["vid_public"]}).encode()
    fields = [
        (b"origin", f"http://{authority}".encode()),
        (b"x-csrf-token", stack.csrf.encode()),
        (b"cookie", stack.cookie.encode()),
        (b"content-type", b"application/json"),
        (b"x-authentik-username", VIEWER_USER.encode()),
        (b"x-authentik-groups", b"vid_admin"),
    ]
    spoof = b"".join(hpack_field(k, v) for k, v in fields)
    rule = h2_request_fields("PUT", "/api/v1/rules", authority) + spoof
    promote = h2_request_fields("PUT", f"/api/v1/users/{VIEWER_USER}/groups/vid_admin", authority) + spoof
    # One connection each, so that each answer's `:status` is written without HPACK's dynamic table.
    for frames in (
        h2_frame(HEADERS, END_HEADERS, 1, rule) + h2_frame(DATA, END_STREAM, 1, body),
        h2_frame(HEADERS, END_STREAM | END_HEADERS, 1, promote),
    ):
        answer = h2_exchange(stack.caddy, frames, [1])[1]
        assert answer.status == 403, answer
        assert "error" in answer.json_or_none()
    assert_no_spoofed_write_landed(stack)


def test_h2c_upgrade_is_not_switched_so_no_raw_tunnel_to_the_sidecar_opens(caddy_local: Endpoint) -> None:
    """h2c smuggling: a proxy that forwards `Upgrade: h2c` and relays a 101 hands the client a raw channel to the
    backend from the proxy's (trusted) address. Nothing may switch protocols, and the next request is Caddy's."""
    h = f"Host: {caddy_local.hostport}"
    upgrade = http("GET /healthz HTTP/1.1", h, "Upgrade: h2c", H2C_SETTINGS, "Connection: Upgrade, HTTP2-Settings")
    done = exchange(caddy_local, upgrade + PREFACE + hidden_me(caddy_local.hostport, "Connection: close"))
    assert [reply.status for reply in done.replies][:1] == [200]
    assert all(reply.status != 101 for reply in done.replies)
    assert_sidecar_acted_on_no_client_identity("caddy_local", [reply.json_or_none() for reply in done.replies])


# --- Forwarding headers: the peer is Caddy, whatever the client claims ------------------------------------------

FORWARDING = (
    "X-Forwarded-For: {ip}",
    "X-Real-IP: {ip}",
    "Forwarded: for={ip};proto=https;host=evil.example",
    "True-Client-IP: {ip}",
    "CF-Connecting-IP: {ip}",
    "X-Client-IP: {ip}",
    "X-Originating-IP: {ip}",
)


def forwarding(ip: str) -> list[str]:
    return [line.format(ip=ip) for line in FORWARDING]


def login_attempt(stack: Stack, target: Endpoint, username: str, password: str, *extra: str) -> RawReply:
    body = json.dumps({"username": username, "password": password}).encode()
    request = http(
        "POST /auth/login HTTP/1.1",
        f"Host: {stack.caddy.hostport}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *extra,
        "Connection: close",
        body=body,
    )
    return exchange(target, request).replies[0]


def test_forwarding_headers_through_caddy_cannot_pick_a_fresh_login_rate_limit_bucket(stack: Stack) -> None:
    for n in range(LOGIN_BUDGET):
        failed = login_attempt(stack, stack.caddy, f"guess{n}", "wrong-password", *forwarding(f"198.51.100.{n + 1}"))
        assert failed.status == 400, failed.body
    # A new claimed address per attempt changes nothing: every attempt came from Caddy's view of the client.
    blocked = login_attempt(stack, stack.caddy, VIEWER_USER, VIEWER_PASSWORD, *forwarding("198.51.100.99"))
    assert blocked.status == 429
    assert "error" in blocked.json()
    # Contrast: from a trusted peer X-Forwarded-For does choose the bucket, so Caddy's overwrite is what holds.
    direct = login_attempt(
        stack, stack.sidecar, f"guess-{uuid.uuid4().hex[:8]}", "wrong-password", *forwarding("203.0.113.5")
    )
    assert direct.status == 400, direct.body


@pytest.mark.parametrize("claimed", ["192.0.2.1", "192.0.2.254", "::ffff:192.0.2.1"])
def test_forwarding_headers_do_not_make_a_direct_client_a_trusted_proxy(
    sidecar_untrusting: SidecarInstance, claimed: str
) -> None:
    """The sidecar trusts only 192.0.2.0/24 here; the tests connect from loopback and claim to be inside it."""
    endpoint = sidecar_untrusting.endpoint
    for target in ("/api/v1/me", "/api/v1/rules", "/auth/verify"):
        request = http(
            f"GET {target} HTTP/1.1", f"Host: {endpoint.hostport}", *forwarding(claimed), *SPOOF, "Connection: close"
        )
        (reply,) = exchange(endpoint, request).replies
        assert reply.status == 401, (target, reply.body)
        assert reply.json() == {"error": "Unauthorized"}


def test_proxy_protocol_preamble_does_not_make_a_direct_client_a_trusted_proxy(
    sidecar_untrusting: SidecarInstance,
) -> None:
    endpoint = sidecar_untrusting.endpoint
    preamble = b"PROXY TCP4 192.0.2.1 192.0.2.2 40000 80\r\n"
    request = http("GET /api/v1/me HTTP/1.1", f"Host: {endpoint.hostport}", *SPOOF, "Connection: close")
    replies = exchange(endpoint, preamble + request).replies
    assert replies, "the sidecar must answer (400) rather than hang"
    assert replies[0].status in (400, 401)
    assert b"admin" not in replies[0].body


# --- Host tricks ---------------------------------------------------------------------------------------------


def host_tricks(hostport: str, me: str = "/api/v1/me") -> dict[str, bytes]:
    return {
        "missing-host-http11": http(f"GET {me} HTTP/1.1", *SPOOF, "Connection: close"),
        "missing-host-http10": http(f"GET {me} HTTP/1.0", *SPOOF),
        "duplicated-host": http(
            f"GET {me} HTTP/1.1", f"Host: {hostport}", "Host: evil.example", *SPOOF, "Connection: close"
        ),
        "host-with-userinfo": http(
            f"GET {me} HTTP/1.1", f"Host: admin:vid_admin@{hostport}", *SPOOF, "Connection: close"
        ),
        "foreign-host": http(f"GET {me} HTTP/1.1", "Host: evil.example", *SPOOF, "Connection: close"),
        "absolute-form-wins-over-host": http(
            f"GET http://{hostport}{me} HTTP/1.1", "Host: evil.example", *SPOOF, "Connection: close"
        ),
        "absolute-form-foreign-authority": http(
            f"GET http://evil.example{me} HTTP/1.1", f"Host: {hostport}", *SPOOF, "Connection: close"
        ),
        "absolute-form-with-userinfo": http(
            f"GET http://admin:vid_admin@{hostport}{me} HTTP/1.1", f"Host: {hostport}", *SPOOF, "Connection: close"
        ),
        "absolute-form-http10-without-host": http(f"GET http://{hostport}{me} HTTP/1.0", *SPOOF),
        "http10-with-host": http(f"GET {me} HTTP/1.0", f"Host: {hostport}", *SPOOF),
    }


HOST_TRICKS = list(host_tricks("x"))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("trick", HOST_TRICKS)
def test_host_trick_reaches_the_backend_only_with_the_vouched_identity(
    caddy_echo: tuple[Endpoint, Endpoint], trick: str, target: str
) -> None:
    caddy, outpost = caddy_echo
    done = exchange(caddy, host_tricks(caddy.hostport, TARGETS[target])[trick])
    assert len(done.replies) == 1
    reply = done.replies[0]
    echoed = assert_echo_saw_only_vouched_identity(outpost, done)
    if not echoed:
        # Refused, or no site matched: Caddy answers itself (an empty 200 for an unknown host), nothing upstream.
        assert reply.status == 400 or (reply.status == 200 and reply.body == b""), reply
    for seen in echoed:
        assert dict(seen["headers"])["host"] == caddy.hostport  # the absolute-form authority, never the Host field
        assert "authorization" not in dict(seen["headers"])  # userinfo in the target is not turned into credentials


@pytest.mark.parametrize("trick", HOST_TRICKS)
def test_host_trick_never_signs_anyone_in(real_site: tuple[str, Endpoint], trick: str) -> None:
    site, caddy = real_site
    replies = exchange(caddy, host_tricks(caddy.hostport)[trick]).replies
    assert len(replies) == 1
    assert_sidecar_acted_on_no_client_identity(site, [replies[0].json_or_none()])


def test_absolute_form_target_cannot_make_a_foreign_origin_look_same_origin(caddy_local: Endpoint) -> None:
    """Login CSRF through Host confusion: the sidecar compares Origin with the Host Caddy forwards, which is the
    absolute-form authority, so a foreign Host field (and Origin to match) gains nothing."""
    body = json.dumps({"username": VIEWER_USER, "password": VIEWER_PASSWORD}).encode()
    request = http(
        f"POST http://{caddy_local.hostport}/auth/login HTTP/1.1",
        "Host: evil.example",
        "Origin: http://evil.example",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        body=body,
    )
    (reply,) = exchange(caddy_local, request).replies
    assert reply.status == 403
    assert "cross-origin" in reply.json()["error"]
    assert reply.header("set-cookie") is None
