"""What MediaMTX calls besides the auth callback (web/callback.py): the JWKS for JWT mode and the runOn* hooks."""

from __future__ import annotations

import hmac
import json
import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar.errors import BadRequest, Unauthorized
from sidecar.media_auth import encodable
from sidecar.web.callback import require_mediamtx_peer
from sidecar.web.context import services

log = logging.getLogger("sidecar.mediamtx")
HOOK_EVENTS = frozenset({"ready", "not-ready", "notready", "read", "unread"})
HOOK_FIELDS = ("path", "query", "source_type", "source_id", "reader_type", "reader_id")


async def jwks(request: Request) -> Response:
    tokens = services(request).tokens
    body = json.dumps(tokens.jwks(), sort_keys=True).encode()
    etag = tokens.jwks_etag(body)
    headers = {"ETag": etag, "Cache-Control": "public, max-age=300"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


async def hook(request: Request) -> Response:
    require_mediamtx_peer(services(request), request.scope)
    svc = services(request)
    key = request.headers.get("x-api-key", "")
    if not key or not hmac.compare_digest(key.encode(), svc.secrets.api_key.encode()):
        raise Unauthorized()
    event = request.path_params["event"]
    if event not in HOOK_EVENTS:
        raise BadRequest(f"event must be one of {', '.join(sorted(HOOK_EVENTS))}", field="event")
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            raw = await request.json()
        except (ValueError, RecursionError) as error:  # deep nesting raises RecursionError
            raise BadRequest("body must be JSON or a form") from error
    else:
        raw = dict(await request.form())
    if not isinstance(raw, dict):
        raise BadRequest("body must be a JSON object")
    fields = {name: raw.get(name, "") for name in HOOK_FIELDS}
    if not all(isinstance(value, str) and len(value) <= 1024 and encodable(value) for value in fields.values()):
        raise BadRequest("hook fields must be strings of at most 1024 characters")
    if not fields["path"]:
        raise BadRequest("path is required", field="path")
    svc.media_auth.sessions.flush()  # an unread may follow its read callback within the batching delay
    svc.live.apply(event, **{name: str(value) for name, value in fields.items()})
    return Response(status_code=204)


routes = [
    Route("/mediamtx/hooks/{event}", hook, methods=["POST"]),
    Route("/.well-known/jwks.json", jwks, methods=["GET", "HEAD"]),
]
