"""Requests sent exactly as an attacker would write them (target and header names byte for byte, no client-side
URL or name normalising), and their replies: shared by the tests that talk to the real Caddy and sidecar."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tests.processes_fixtures import Endpoint

JSON = "application/json"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def cookie(self) -> str | None:
        """The `sidecar_session=...` pair the reply sets (a sign-in), to send back like a browser would."""
        for name, value in self.headers:
            pair = value.split(";", 1)[0]
            cookie_name, _, cookie_value = pair.partition("=")
            if name.lower() == "set-cookie" and cookie_name.strip() == "sidecar_session" and cookie_value.strip('" '):
                return pair
        return None

    @property
    def sets_session(self) -> bool:
        return self.cookie() is not None


def send(
    endpoint: Endpoint,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    method: str = "GET",
    body: bytes | None = None,
    accept: str = JSON,
    timeout: float = 30.0,
) -> Reply:
    """One HTTP/1.1 request with the target and header names sent as given."""
    conn = http.client.HTTPConnection("127.0.0.1", endpoint.port, timeout=timeout)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        conn.putheader("Accept", accept)
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return Reply(response.status, response.getheaders(), response.read())
    finally:
        conn.close()


def send_raw(
    endpoint: Endpoint,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    method: str = "GET",
    body: bytes | None = None,
    accept: str = JSON,
    host: str | None = None,
) -> Reply:
    """Like `send`, with the request line written by hand, so `target` may be anything (absolute-form included)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host or endpoint.hostport}", f"Accept: {accept}"]
    lines += ["Connection: close", *(f"{name}: {value}" for name, value in headers)]
    if body is not None:
        lines += [f"Content-Length: {len(body)}"]
    payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=15) as sock:
        sock.sendall(payload)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        try:
            return Reply(response.status, response.getheaders(), response.read())
        finally:
            response.close()
