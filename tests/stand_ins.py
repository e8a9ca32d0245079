"""Stand-in upstreams for the Caddy tests: a header echo and two Authentik outposts, run with `python -m uvicorn`."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# What the outposts answer on their forward-auth endpoint; Authentik sends these only for a signed-in user.
ALICE = {
    "X-Authentik-Username": "alice",
    "X-Authentik-Groups": "vid_public",
    "X-Authentik-Email": "alice@example.org",
    "X-Authentik-Name": "Alice Example",
    "X-Authentik-Uid": "a1b2c3",
    # Sent by real outposts too, but not in the Caddyfile's copy_headers: must never reach a backend.
    "X-Authentik-Meta-App": "video",
}
SEEN_PATH = "/_stand_in/seen"


def _describe(request: Request, name: str) -> dict[str, object]:
    return {
        "upstream": name,
        "method": request.method,
        "raw_path": request.scope["raw_path"].decode("latin-1"),
        "query": request.url.query,
        # Raw pairs, in order and with duplicates, exactly as h11 parsed them (names lower-cased).
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers.raw],
    }


def make_echo(name: str) -> Starlette:
    """Answers every request with what it received, so a test sees what Caddy forwarded."""

    async def echo(request: Request) -> Response:
        return JSONResponse(_describe(request, name))

    return Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"])])


def make_outpost(name: str, identity: dict[str, str]) -> Starlette:
    """An outpost that lets every request through with `identity` (empty: Authentik's unauthenticated paths)."""
    seen: list[dict[str, object]] = []

    async def forward_auth(request: Request) -> Response:
        seen.append(_describe(request, name))
        return Response(status_code=200, headers=identity)

    async def other(request: Request) -> Response:
        return JSONResponse(_describe(request, name))

    async def history(request: Request) -> Response:
        return JSONResponse(seen)

    return Starlette(
        routes=[
            Route("/outpost.goauthentik.io/auth/caddy", forward_auth),
            Route(SEEN_PATH, history),
            Route("/{path:path}", other),
        ]
    )


echo = make_echo(os.environ.get("STAND_IN_NAME", "echo"))
outpost_alice = make_outpost("outpost-alice", ALICE)
outpost_anonymous = make_outpost("outpost-anonymous", {})
