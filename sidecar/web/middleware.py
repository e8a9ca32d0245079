"""ASGI middleware: request latency for the metrics, and a body-size cap that answers in the API's JSON shape."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOO_LARGE = json.dumps({"error": "Request body too large"}).encode()


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
    the sidecar's own routes never need).
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
                await self._refuse(send)
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

    @staticmethod
    async def _refuse(send: Send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(TOO_LARGE)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": TOO_LARGE})
