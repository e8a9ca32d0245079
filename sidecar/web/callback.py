"""MediaMTX's auth callback (`POST /mediamtx/auth`) as a plain ASGI handler in front of the application.

MediaMTX calls it on a new connection for every reader and publisher, so it skips what the other routes need
(routing through every route, request objects, the body-limit and timing layers) and answers with ready-made
bytes. The decision itself is `MediaAuth`'s; this module only speaks HTTP.
"""

from __future__ import annotations

import json
import logging
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from sidecar.errors import BadRequest, Forbidden, SidecarError
from sidecar.media_auth import AuthRequest
from sidecar.runtime import Services
from sidecar.web.errors import json_error_body

log = logging.getLogger("sidecar.mediamtx")
PATH = "/mediamtx/auth"
MAX_CALLBACK_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024  # beyond this the answer is 413, as for every other route
ALLOWED = b'{"allowed":true}'
DENIED = b'{"error":"Unauthorized"}'


def _headers(body: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]


ALLOWED_HEADERS = _headers(ALLOWED)
DENIED_HEADERS = _headers(DENIED)


def require_mediamtx_peer(services: Services, scope: Scope) -> None:
    """Only MediaMTX (`SIDECAR_MEDIAMTX_ALLOWED_IPS`) may call the callback and the hooks: judged by the TCP peer."""
    client = scope.get("client")
    if not services.mediamtx_peers.contains(client[0] if client else None):
        raise Forbidden("only MediaMTX may call this endpoint")


class TooLarge(Exception):
    pass


class MediaMTXCallback:
    """Answers `/mediamtx/auth` itself; every other request goes on to the application unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        services: Services = scope["app"].state.services
        try:
            status, body, headers = await self._answer(services, scope, receive)
        except SidecarError as error:
            status, body = error.status, json_error_body(error.message, error.field)
            headers = _headers(body)
        except TooLarge:
            status, body = 413, json_error_body("Request body too large")
            headers = _headers(body)
        except Exception:  # never a stack trace for MediaMTX; the log has it
            log.exception("unhandled error on the MediaMTX auth callback")
            status, body = 500, json_error_body("Internal error")
            headers = _headers(body)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        services.metrics.observe(PATH, scope["method"], time.perf_counter() - started)

    async def _answer(
        self, services: Services, scope: Scope, receive: Receive
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        if scope["method"] != "POST":
            body = json_error_body("Method not allowed")
            return 405, body, _headers(body, ((b"allow", b"POST"),))
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > MAX_BODY_BYTES):
                raise TooLarge()
        require_mediamtx_peer(services, scope)
        raw = await _read_body(receive)
        if len(raw) > MAX_CALLBACK_BYTES:
            raise BadRequest("callback body too large")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as error:  # deep nesting raises RecursionError
            raise BadRequest("body must be JSON") from error
        request = AuthRequest.parse(data)
        verdict = services.media_auth.check(request)
        services.metrics.record_decision(verdict.allowed, request.action)
        if not verdict.allowed:
            log.info("mediamtx deny %s %s %s: %s", request.action, request.protocol, request.path, verdict.reason)
            # MediaMTX treats any non-2xx as deny, and prompts RTSP clients for credentials on 401.
            return 401, DENIED, DENIED_HEADERS
        services.media_auth.remember(request, verdict)
        return 200, ALLOWED, ALLOWED_HEADERS


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise TooLarge()
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
