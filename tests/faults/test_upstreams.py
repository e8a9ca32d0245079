"""Upstreams that misbehave: Authentik's API and MediaMTX's control API refuse, hang before or after accepting,
trickle a byte at a time, fail, answer an HTML page, cut their answer short or send far too much. The stand-ins are
real loopback servers (raw asyncio and socket servers); the sidecar runs in this process behind a real uvicorn.

For every fault, each outbound call and each endpoint that makes one (`/readyz`, the Users page's
`GET /api/v1/users`, `GET /api/v1/streams`, `POST /api/v1/sources`) answers within the upstream timeout plus a
small margin, with a clear JSON sentence and a 502/503 status, never a 500, and nothing is recorded as done that
was not (a source is not audited as added, a JWKS refresh MediaMTX never confirmed does not switch signing keys).
A hung Authentik holds only its own connections: viewers' stream lists keep being answered meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from sidecar.app import create_app
from sidecar.authentik import AuthentikClient, AuthentikError
from sidecar.mediamtx import NOT_MEDIAMTX_MESSAGE, MediaMTXClient, MediaMTXError, SessionKind
from sidecar.outbound import build_upstreams
from sidecar.processes import free_port
from sidecar.settings import Settings
from sidecar.store import Store
from sidecar.tokens import JWKS_CACHE_SECONDS
from tests.fake_authentik import TOKEN, FakeAuthentik, create_fake_authentik
from tests.fake_mediamtx import FakeMediaMTX, create_fake_mediamtx
from tests.helpers import API_KEY
from tests.processes_fixtures import ServedApp, child_env

UPSTREAM_TIMEOUT = 1.0
BOUND = UPSTREAM_TIMEOUT + 2.0  # the promise: the upstream timeout plus a small margin
KEY = {"x-api-key": API_KEY}
ADMIN = {"x-authentik-username": "alice", "x-authentik-groups": "vid_admin"}
VIEWER = {"x-authentik-username": "bob", "x-authentik-groups": "vid_public"}
SESSION_ID = "0d4f3c9a-6a53-4a3e-9a0e-7f1f1d1b2c3d"
HUGE_BYTES = 150 * 1024 * 1024
TRICKLE_SECONDS = 0.4  # between two bytes: far below any per-read timeout, so only a total deadline stops it

FAULTS = [
    "refuse",  # nothing listens on the port
    "hang-on-accept",  # listening, but the accept queue is full: the connection is never set up
    "hang",  # accepts and reads the request, never answers
    "trickle",  # a valid answer, one byte at a time
    "500",
    "html",  # 200 with an HTML page: a wrong URL (a web server's welcome page, a login page)
    "truncated",  # announces more than it sends, then closes
    "cut-json",  # a complete answer whose JSON is cut short
    "huge",  # announces and streams 150 MB
    "huge-chunked",  # streams without announcing a length until the sidecar stops reading
]
# Faults `/readyz` cannot tell from a healthy upstream: it asks only whether the upstream answers below 500.
READYZ_BLIND = {"html", "cut-json"}
# An Authentik that answers only the lookup of bob's groups (so a viewer's standing is known) and hangs otherwise.
HANG_EXCEPT_BOB = "hang-except-bob"
BOB_IN_AUTHENTIK = {
    "pagination": {"count": 1, "current": 1, "next": 0, "previous": 0, "total_pages": 1},
    "results": [
        {
            "pk": 7,
            "username": "bob",
            "name": "Bob",
            "email": "bob@example.org",
            "is_active": True,
            "is_superuser": False,
            "type": "internal",
            "groups_obj": [{"pk": "5e1f7c1e-2f7d-4a53-9d1c-3c1c0f0e0a01", "name": "vid_public"}],
        }
    ],
}


# --- the misbehaving stand-ins ------------------------------------------------------------------------------------


def _answer(status: str, content_type: str, body: bytes, *, length: int | None = None) -> bytes:
    announced = len(body) if length is None else length
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {announced}\r\n"
    return head.encode() + b"Connection: close\r\n\r\n" + body


HTML_PAGE = b"<!doctype html><html><head><title>Welcome</title></head><body><h1>It works!</h1></body></html>"
TRICKLED = _answer("200 OK", "application/json", json.dumps({"results": [], "pagination": {"count": 0}}).encode())


class Misbehaving:
    """One loopback port per fault, all served by one asyncio loop in a thread of its own; counts connections."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="misbehaving-upstreams", daemon=True)
        self.ports: dict[str, int] = {}
        self.accepted: Counter[str] = Counter()
        self.open: Counter[str] = Counter()
        self.requests: dict[str, list[str]] = {fault: [] for fault in (*FAULTS, HANG_EXCEPT_BOB)}
        self._servers: list[asyncio.AbstractServer] = []
        self._sockets: list[socket.socket] = []

    def url(self, fault: str) -> str:
        return f"http://127.0.0.1:{self.ports[fault]}"

    def __enter__(self) -> Misbehaving:
        self.thread.start()
        for fault in (*FAULTS, HANG_EXCEPT_BOB):
            if fault == "refuse":
                self.ports[fault] = free_port()
            elif fault == "hang-on-accept":
                self.ports[fault] = self._full_backlog()
            else:
                future = asyncio.run_coroutine_threadsafe(self._start(fault), self.loop)
                self.ports[fault] = future.result(10)
        return self

    def _full_backlog(self) -> int:
        """A socket that listens but never accepts, its accept queue filled: the kernel drops every new SYN."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        filler = socket.create_connection(("127.0.0.1", port), timeout=5)  # the one place the queue has
        self._sockets += [listener, filler]
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.settimeout(0.3)
        with probe, pytest.raises(TimeoutError):
            probe.connect(("127.0.0.1", port))
        return port

    async def _start(self, fault: str) -> int:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve(fault, reader, writer)

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self._servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, fault: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted[fault] += 1
        self.open[fault] += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length" and value.strip().isdigit():
                    await reader.readexactly(int(value.strip()))
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            self.requests[fault].append(request_line)
            if fault == HANG_EXCEPT_BOB:
                fault = "answer-bob" if "username=bob&" in request_line else "hang"
            await self._misbehave(fault, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self.open[fault] -= 1
            writer.close()

    async def _misbehave(self, fault: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if fault == "hang":
            while await reader.read(65536):  # until the sidecar gives up and closes
                pass
        elif fault == "answer-bob":
            writer.write(_answer("200 OK", "application/json", json.dumps(BOB_IN_AUTHENTIK).encode()))
        elif fault == "trickle":
            for byte in TRICKLED:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(TRICKLE_SECONDS)
        elif fault == "500":
            writer.write(_answer("500 Internal Server Error", "application/json", b'{"error": "boom"}'))
        elif fault == "html":
            writer.write(_answer("200 OK", "text/html; charset=utf-8", HTML_PAGE))
        elif fault == "truncated":
            writer.write(_answer("200 OK", "application/json", b'{"results": [{"pk": 1, ', length=5000))
        elif fault == "cut-json":
            writer.write(_answer("200 OK", "application/json", b'{"results": [{"pk": 1, "username": "al'))
        elif fault in ("huge", "huge-chunked"):
            chunked = fault == "huge-chunked"
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            head += (
                b"Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {HUGE_BYTES}\r\n\r\n".encode()
            )
            writer.write(head)
            piece = b" " * 65536
            for _ in range(HUGE_BYTES // len(piece)):
                writer.write(b"10000\r\n" + piece + b"\r\n" if chunked else piece)
                await writer.drain()
        await writer.drain()

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            for server in self._servers:
                server.close()
            current = asyncio.current_task()
            tasks = [task for task in asyncio.all_tasks() if task is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        for sock in self._sockets:
            sock.close()


@pytest.fixture(scope="module")
def misbehaving() -> Iterator[Misbehaving]:
    with Misbehaving() as servers:
        yield servers


@pytest.fixture(scope="module")
def healthy_mediamtx() -> Iterator[tuple[FakeMediaMTX, str]]:
    fake = create_fake_mediamtx()
    fake.add_path("live/cam1")
    with ServedApp(fake.app) as served:
        yield fake, served.url


@pytest.fixture(scope="module")
def healthy_authentik() -> Iterator[tuple[FakeAuthentik, str]]:
    fake = create_fake_authentik()
    fake.add_user("alice", "vid_admin", name="Alice")
    fake.add_user("bob", "vid_public", name="Bob")
    with ServedApp(fake.app) as served:
        yield fake, served.url


# --- the sidecar, served for real in this process --------------------------------------------------------------------


class ServedSidecar:
    """The sidecar app (with its lifespan, so its real services and connection pools) behind uvicorn in a thread."""

    def __init__(self, settings: Settings) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        config = uvicorn.Config(
            create_app(settings), log_level="warning", lifespan="on", timeout_graceful_shutdown=BOUND
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> ServedSidecar:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the sidecar did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.socket.close()


def sidecar_settings(
    data_dir: Path, *, authentik: str, mediamtx: str, timeout: float = UPSTREAM_TIMEOUT, **more: Any
) -> Settings:
    values: dict[str, Any] = {
        **more,
        "data_dir": data_dir,
        "mode": "authentik",
        "authentik_url": authentik,
        "authentik_token": TOKEN,
        "mediamtx_api_url": mediamtx,
        "api_key": API_KEY,
        "upstream_timeout": timeout,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    seconds: float


async def timed(http: httpx.AsyncClient, method: str, path: str, **options: Any) -> Answer:
    """One request to the sidecar; the test client itself gives up well after the promised bound."""
    started = time.monotonic()
    response = await http.request(method, path, timeout=BOUND + 10, **options)
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return Answer(response.status_code, body, time.monotonic() - started)


def assert_clear_refusal(answer: Answer, *, statuses: tuple[int, ...] = (502, 503)) -> str:
    """Within the bound, a 502/503 with the API's `{"error": sentence}` shape; returns the sentence."""
    assert answer.seconds < BOUND, f"answered after {answer.seconds:.1f} s"
    assert answer.status in statuses, answer
    assert isinstance(answer.body, dict) and set(answer.body) == {"error"}, answer
    sentence = answer.body["error"]
    assert isinstance(sentence, str) and len(sentence) > 20 and "Internal error" not in sentence
    return sentence


def assert_readyz(answer: Answer, check: str, fault: str) -> None:
    assert answer.seconds < BOUND, f"/readyz answered after {answer.seconds:.1f} s"
    assert answer.status in (200, 503), answer
    assert isinstance(answer.body, dict) and answer.body["checks"]["store"] == "ok"
    if fault not in READYZ_BLIND:
        assert answer.status == 503 and answer.body["status"] == "not ready"
        assert answer.body["checks"][check].startswith(("unreachable", "unhealthy")), answer.body


# --- Authentik misbehaves --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", FAULTS)
async def test_authentik_fault_keeps_readyz_and_the_users_page_bounded_and_clear(
    fault: str, misbehaving: Misbehaving, healthy_mediamtx: tuple[FakeMediaMTX, str], tmp_path: Path
) -> None:
    settings = sidecar_settings(tmp_path, authentik=misbehaving.url(fault), mediamtx=healthy_mediamtx[1])
    with ServedSidecar(settings) as sidecar:
        async with httpx.AsyncClient(base_url=sidecar.url) as http:
            readyz, users, streams = await asyncio.gather(
                timed(http, "GET", "/readyz"),
                timed(http, "GET", "/api/v1/users", headers=ADMIN),
                timed(http, "GET", "/api/v1/streams", headers=VIEWER),
            )
    assert_readyz(readyz, "authentik", fault)
    # Both need the person's groups from Authentik first (nobody's are known yet): a clear 503 saying why.
    for answer in (users, streams):
        sentence = assert_clear_refusal(answer, statuses=(503,))
        assert "Authentik" in sentence
        if fault in ("huge", "huge-chunked"):
            assert "Authentik sent an answer larger than 8 MiB" in sentence
        if fault in ("hang-on-accept", "hang", "trickle"):
            assert "no answer within 1 s" in sentence


# --- MediaMTX misbehaves ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", FAULTS)
async def test_mediamtx_fault_keeps_readyz_streams_and_sources_bounded_and_records_nothing(
    fault: str, misbehaving: Misbehaving, healthy_authentik: tuple[FakeAuthentik, str], tmp_path: Path
) -> None:
    settings = sidecar_settings(tmp_path, authentik=healthy_authentik[1], mediamtx=misbehaving.url(fault))
    source = {"name": f"live/{fault}", "source": "publisher"}
    with ServedSidecar(settings) as sidecar:
        async with httpx.AsyncClient(base_url=sidecar.url) as http:
            readyz, viewer, admin, added = await asyncio.gather(
                timed(http, "GET", "/readyz"),
                timed(http, "GET", "/api/v1/streams", headers=VIEWER),
                timed(http, "GET", "/api/v1/streams", headers=KEY),
                timed(http, "POST", "/api/v1/sources", headers=KEY, json=source),
            )
            audit = await timed(http, "GET", "/api/v1/audit?action=source.add", headers=KEY)
    assert_readyz(readyz, "mediamtx", fault)
    # Viewers learn only that it failed; admins get MediaMTX's side of the story in one sentence.
    assert assert_clear_refusal(viewer) == "MediaMTX is not available right now; try again shortly"
    assert assert_clear_refusal(admin).startswith("MediaMTX: ")
    sentence = assert_clear_refusal(added)
    assert sentence.startswith("MediaMTX: ")
    if fault == "html":
        assert sentence == f"MediaMTX: {NOT_MEDIAMTX_MESSAGE}"
    if fault in ("huge", "huge-chunked"):
        assert "MediaMTX sent an answer larger than 8 MiB" in sentence
    if fault in ("hang-on-accept", "hang", "trickle"):
        assert "did not answer within 1 s" in sentence
    # A source MediaMTX never confirmed is not recorded as added.
    assert audit.status == 200 and audit.body["events"] == []


# --- the clients themselves ------------------------------------------------------------------------------------------


async def _each_call(
    calls: dict[str, Callable[[], Awaitable[Any]]], errors: type[Exception] | tuple[type[Exception], ...]
) -> dict[str, tuple[str, float]]:
    """Every call at once; each must fail with a clear error. name -> (message, seconds)."""

    async def one(call: Callable[[], Awaitable[Any]]) -> tuple[str, float]:
        started = time.monotonic()
        with pytest.raises(errors) as caught:
            await call()
        return str(caught.value), time.monotonic() - started

    results = await asyncio.gather(*(one(call) for call in calls.values()))
    return dict(zip(calls, results, strict=True))


@pytest.mark.parametrize("fault", FAULTS)
async def test_every_call_to_a_faulty_upstream_ends_within_its_deadline(fault: str, misbehaving: Misbehaving) -> None:
    url = misbehaving.url(fault)
    upstreams = build_upstreams(timeout=UPSTREAM_TIMEOUT, authentik_url=url)
    try:
        authentik = AuthentikClient(upstreams.authentik, url, TOKEN)
        mediamtx = MediaMTXClient(upstreams.mediamtx, url)
        authentik_results, mediamtx_results = await asyncio.gather(
            _each_call(
                {
                    "read": lambda: authentik.list_users(),
                    "write": lambda: authentik.create_group("vid_new"),
                },
                AuthentikError,
            ),
            _each_call(
                {
                    "read": lambda: mediamtx.list_paths(),
                    "sessions": lambda: mediamtx.list_all_sessions(),
                    "add": lambda: mediamtx.add_path_config("live/new", {"source": "publisher"}),
                    "patch": lambda: mediamtx.patch_path_config("live/new", {"sourceOnDemand": True}),
                    "delete": lambda: mediamtx.delete_path_config("live/new"),
                    "kick": lambda: mediamtx.kick_session(SessionKind.RTSP, SESSION_ID),
                    "jwks": lambda: mediamtx.refresh_jwks(),
                },
                MediaMTXError,
            ),
        )
    finally:
        await upstreams.aclose()
    for upstream, results in (("Authentik", authentik_results), ("MediaMTX", mediamtx_results)):
        for name, (message, seconds) in results.items():
            assert seconds < BOUND, f"{upstream} {name} took {seconds:.1f} s"
            assert upstream in message and len(message) > 20 and "\n" not in message, message
    if fault == "html":
        for name in ("add", "patch", "delete", "kick", "jwks"):
            assert mediamtx_results[name][0] == NOT_MEDIAMTX_MESSAGE  # a web page's 200 confirms nothing
    if fault in ("huge", "huge-chunked"):
        assert "Authentik sent an answer larger than 8 MiB" in authentik_results["read"][0]
        assert "MediaMTX sent an answer larger than 8 MiB" in mediamtx_results["read"][0]


async def test_connecting_is_never_retried_past_the_deadline(misbehaving: Misbehaving) -> None:
    """A port that never accepts costs one deadline, not one per attempt (it used to cost 16 s for 5 s)."""
    upstreams = build_upstreams(timeout=UPSTREAM_TIMEOUT)
    client = AuthentikClient(upstreams.authentik, misbehaving.url("hang-on-accept"), TOKEN, retry_backoff=(0,) * 4)
    started = time.monotonic()
    try:
        with pytest.raises(AuthentikError, match="no answer within 1 s"):
            await client.ping()
    finally:
        await upstreams.aclose()
    assert time.monotonic() - started < BOUND


# --- one pool per upstream -------------------------------------------------------------------------------------------


async def test_a_hung_authentik_does_not_hold_up_viewers_stream_lists(
    misbehaving: Misbehaving, healthy_mediamtx: tuple[FakeMediaMTX, str], tmp_path: Path
) -> None:
    """With many calls to a hung Authentik in flight (more than one shared pool used to have connections), every
    viewer's stream list (MediaMTX healthy, the viewer's groups known from a moment before) is answered while all
    of those calls are still waiting."""
    fake, mediamtx_url = healthy_mediamtx
    timeout = 6.0  # long enough that the Authentik calls are certainly still pending while viewers are served
    settings = sidecar_settings(
        tmp_path,
        authentik=misbehaving.url(HANG_EXCEPT_BOB),
        mediamtx=mediamtx_url,
        timeout=timeout,
        group_cache_seconds=600,
    )
    admins, viewers = 150, 30
    limits = httpx.Limits(max_connections=admins + viewers + 10)
    with ServedSidecar(settings) as sidecar:
        async with httpx.AsyncClient(base_url=sidecar.url, limits=limits) as http:
            warm = await timed(
                http, "GET", "/api/v1/streams", headers=VIEWER
            )  # bob's groups, read while Authentik answered
            assert warm.status == 200, warm
            hung_before = misbehaving.accepted[HANG_EXCEPT_BOB]
            listed_before = sum(1 for r in fake.requests if r.path == "/v3/paths/list")
            # Each admin is someone else, so each needs an Authentik call of their own (a burst by one person is one).
            pending = [
                asyncio.create_task(
                    timed(http, "GET", "/api/v1/users", headers={**ADMIN, "x-authentik-username": f"a{n}"})
                )
                for n in range(admins)
            ]
            # Wait until Authentik holds every connection the sidecar will give it: at least 50, and no new one for a
            # while (a pool shared by every upstream fills up at its 100, a pool of Authentik's own at its 50).
            held, steady_since, waited = 0, time.monotonic(), time.monotonic()
            while time.monotonic() - waited < timeout / 2:
                await asyncio.sleep(0.05)
                now_held = misbehaving.accepted[HANG_EXCEPT_BOB] - hung_before
                if now_held != held:
                    held, steady_since = now_held, time.monotonic()
                elif held >= 50 and time.monotonic() - steady_since > 0.5:
                    break
            served = await asyncio.gather(
                *(timed(http, "GET", "/api/v1/streams", headers=VIEWER) for _ in range(viewers))
            )
            still_pending = sum(1 for task in pending if not task.done())
            refused = await asyncio.gather(*pending)
    assert held >= 50  # Authentik holds every connection the sidecar would give it
    assert [answer.status for answer in served] == [200] * viewers
    assert all(answer.body["streams"] == [] for answer in served)  # no rule lets bob watch anything yet
    assert sum(1 for r in fake.requests if r.path == "/v3/paths/list") - listed_before >= viewers
    # Every call to Authentik was still waiting when the last viewer had their answer ...
    assert still_pending == admins
    # ... and each of them then got its clear 503 in time.
    assert {answer.status for answer in refused} == {503}
    assert all("Authentik" in answer.body["error"] and answer.seconds < timeout + 2 for answer in refused)


async def test_no_upstream_client_keeps_a_cookie_for_the_next_person() -> None:
    """Each client serves everyone: a cookie one upstream sets while serving one person never goes out again."""
    sent_cookies: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent_cookies.append(request.headers.get("cookie"))
        return httpx.Response(200, json={"status": "ok"}, headers={"set-cookie": "session=alice-only; Path=/"})

    upstreams = build_upstreams(timeout=UPSTREAM_TIMEOUT, transport=httpx.MockTransport(handler))
    try:
        for client in (upstreams.authentik, upstreams.mediamtx, upstreams.editor, upstreams.shared):
            for _ in range(2):
                await client.get("http://upstream.test/")
            assert len(client.cookies.jar) == 0
    finally:
        await upstreams.aclose()
    assert sent_cookies == [None] * 8


# --- key rotation needs MediaMTX's own confirmation ------------------------------------------------------------------


def _rotate(data_dir: Path, mediamtx_url: str) -> str:
    env = child_env(
        SIDECAR_MODE="local",
        SIDECAR_DATA_DIR=str(data_dir),
        SIDECAR_MEDIAMTX_API_URL=mediamtx_url,
        SIDECAR_UPSTREAM_TIMEOUT=str(UPSTREAM_TIMEOUT),
        SIDECAR_LOG_LEVEL="ERROR",
    )
    done = subprocess.run(
        [sys.executable, "-m", "sidecar", "rotate-keys"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _newest_key(settings: Settings) -> tuple[str, float]:
    """The kid and `sign_from` of the key added last."""
    store = Store(settings.database_path)
    try:
        newest = max(store.signing_keys(), key=lambda row: float(row["created_at"]))
        return str(newest["kid"]), float(newest["sign_from"])
    finally:
        store.close()


def test_rotate_keys_keeps_the_old_key_signing_when_mediamtx_answers_a_web_page(
    misbehaving: Misbehaving, healthy_mediamtx: tuple[FakeMediaMTX, str], tmp_path: Path
) -> None:
    fake, mediamtx_url = healthy_mediamtx
    refreshes = fake.jwks_refreshes
    started = time.time()
    printed = _rotate(tmp_path, misbehaving.url("html"))
    assert misbehaving.requests["html"][-1] == "POST /v3/auth/jwks/refresh HTTP/1.1"  # it was asked, and answered 200
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    _, sign_from = _newest_key(settings)
    assert sign_from >= started + JWKS_CACHE_SECONDS  # an HTML 200 is no confirmation: MediaMTX may not have the key
    assert "refetched" not in printed
    # The same rotation against MediaMTX itself: confirmed, so the new key signs at once.
    _rotate(tmp_path, mediamtx_url)
    _, sign_from = _newest_key(settings)
    assert fake.jwks_refreshes == refreshes + 1 and sign_from <= time.time()
