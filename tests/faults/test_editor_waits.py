"""An editor that hangs or trickles never holds an admin for long: a request to it is answered 502 once the editor
has had its time to start answering (SIDECAR_UPSTREAM_TIMEOUT, at least the editor's own longest ordinary step),
and the bridge's sign-in, which every admin request waits for, is held to one deadline in all."""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from sidecar.app import create_app
from sidecar.web import editor_proxy
from tests.helpers import TRUSTED_PEER, bootstrapped_settings

ADMIN = {"X-Authentik-Username": "alice", "X-Authentik-Groups": "vid_admin", "accept": "application/json"}
HELD_FOR = 120.0  # far longer than any bound the sidecar should apply
GIVE_UP = 30.0  # the admin's browser gives up after this: an answer before it came from the sidecar's own bound


def answered(send: Callable[[], httpx.Response]) -> httpx.Response:
    """`send()`'s answer, or a failure once the admin would have given up waiting for it."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(send).result(timeout=GIVE_UP)


class Misbehaving:
    """A loopback editor that reads each request and then `behave`s on the connection."""

    def __init__(self, behave: Callable[[socket.socket, bytes], None]) -> None:
        self.behave = behave
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            self.behave(conn, conn.recv(65536))

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()


def hang(conn: socket.socket, request: bytes) -> None:
    conn.settimeout(HELD_FOR)
    conn.recv(1)  # until the sidecar gives up


def trickle(conn: socket.socket, request: bytes) -> None:
    """A byte of a never-ending header every 0.2 s: each read is quick, the answer never starts."""
    answer = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000
    stopped = threading.Event()
    for byte in answer:
        conn.sendall(bytes([byte]))
        if stopped.wait(0.2):
            return


def login_trickles(conn: socket.socket, request: bytes) -> None:
    if request.startswith(b"POST /login"):
        trickle(conn, request)
    else:
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok")


@pytest.fixture
def editor_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., TestClient]]:
    monkeypatch.setattr(editor_proxy, "ORDINARY_WAIT_SECONDS", 1.0)  # the editor's own longest step, shortened
    opened: list[tuple[TestClient, Misbehaving]] = []

    def make(behave: Callable[[socket.socket, bytes], None], **overrides: object) -> TestClient:
        editor = Misbehaving(behave)
        settings = bootstrapped_settings(
            tmp_path / f"data{len(opened)}", editor_url=editor.url, upstream_timeout=0.5, **overrides
        )
        client = TestClient(create_app(settings), client=TRUSTED_PEER)
        client.__enter__()
        opened.append((client, editor))
        return client

    yield make
    for client, editor in opened:
        editor.close()
        client.__exit__(None, None, None)


@pytest.mark.parametrize("behave", [hang, trickle], ids=["hangs", "trickles its headers"])
def test_an_editor_that_never_starts_answering_is_a_502(
    editor_site: Callable[..., TestClient], behave: Callable[[socket.socket, bytes], None]
) -> None:
    client = editor_site(behave)
    answer = answered(lambda: client.get("/paths/live", headers=ADMIN))
    assert answer.status_code == 502, answer.text
    assert "not reachable" in answer.json()["error"]
    assert client.get("/healthz").status_code == 200


def test_the_bridges_sign_in_is_held_to_one_deadline_however_slowly_the_editor_answers(
    editor_site: Callable[..., TestClient],
) -> None:
    client = editor_site(login_trickles, editor_username="sidecar", editor_password="service-password-1")
    answers = [answered(functools.partial(client.get, path, headers=ADMIN)) for path in ("/", "/paths", "/api/x")]
    assert [answer.status_code for answer in answers] == [502, 502, 502], [a.text for a in answers]


def test_the_editors_slow_actions_get_the_editors_own_limits() -> None:
    assert editor_proxy.editor_wait("/api/recordings/convert-mp4/cam1.ts", 5.0) > 300
    assert editor_proxy.editor_wait("/api/test/optimize/a.mp4", 5.0) > 900
    assert editor_proxy.editor_wait("/paths", 5.0) == editor_proxy.ORDINARY_WAIT_SECONDS
    assert editor_proxy.editor_wait("/paths", 30.0) == 30.0  # never less than the operator's own setting
