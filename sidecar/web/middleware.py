"""ASGI middleware: request latency for the metrics, a body-size cap that answers in the API's JSON shape, and the
headers that keep every answer out of other sites' frames."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOO_LARGE = json.dumps({"error": "Request body too large"}).encode()
TOO_SLOW = json.dumps({"error": "the request body took too long to arrive"}).encode()
BODY_SECONDS = 10.0


class Timing:
    """Feeds the latency histogram."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            scope["app"].state.services.metrics.observe(scope["path"], scope["method"], time.perf_counter() - started)


class BodyLimit:
    """Refuse bodies over the limit: at once when Content-Length says so, else while the body streams in.

    The limit is `limit`, or what `limit_for` answers for the request (the editor behind the proxy takes uploads
    the sidecar's own routes never need). A request to one of the sidecar's own routes is read whole, within
    `BODY_SECONDS`, before anything looks at it: who is asking is decided only once the request is complete, so a
    body held back on purpose cannot carry rights its sender has lost meanwhile (408 when it takes too long).
    """

    def __init__(self, app: ASGIApp, limit: int, limit_for: Callable[[Scope], int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope) if self.limit_for is not None else self.limit
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                await _answer(send, 413, TOO_LARGE)
                return
        if limit == self.limit:
            await self._whole(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(413)  # the app's exception handler turns this into the JSON error
            return message

        await self.app(scope, limited, send)

    async def _whole(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(BODY_SECONDS):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return  # the client went away before its request was complete
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.limit:
                        await _answer(send, 413, TOO_LARGE)
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await _answer(send, 408, TOO_SLOW)
            return
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# No page of the sidecar (nor of the editor behind it) is meant to be framed: a frame on another site could dress a
# button of ours (deactivate, approve, revoke) as something else (clickjacking).
FRAME_HEADERS = (
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
)


class SecurityHeaders:
    """Adds `FRAME_HEADERS` to every answer that lacks them; a page of the editor that sends its own policy keeps
    it byte for byte (X-Frame-Options still keeps it out of frames)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in FRAME_HEADERS:
                    if name not in present:
                        headers.append((name, value))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


BAD_PATH = json.dumps({"error": "the path must not contain control characters"}).encode()


class ControlCharacters:
    """Refuse a decoded path holding control characters (`/metrics%0a`): routes match with `$`, which also
    matches before a final newline, so such a path could reach a route that a proxy in front matched differently."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].isprintable():
            await _answer(send, 400, BAD_PATH)
            return
        await self.app(scope, receive, send)
