"""Share links: the JSON API to create, list and revoke them, and the public page and token URL they open."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.share_links import GONE
from sidecar.web.context import check_browser_origin, client_ip, json_object, require, services
from sidecar.web.templating import page

# The secret is in the page's URL: never send it as a Referer to another origin (the HLS server), never cache it.
PUBLIC_HEADERS = {"Referrer-Policy": "same-origin", "Cache-Control": "no-store", "X-Robots-Tag": "noindex"}


async def create_link(request: Request) -> Response:
    who = await require(request)
    body = await json_object(request)
    link, secret = services(request).share_links.create(who, body.get("path"), body.get("ttl"))
    # The only time the secret leaves the sidecar; it is stored as a digest.
    created = {
        "id": link.id,
        "url": f"/share/{secret}",
        "path": link.path,
        "expires_at": None if link.expires_at is None else int(link.expires_at),
        "created_by": link.created_by,
    }
    return JSONResponse(created, status_code=201, headers={"Cache-Control": "no-store"})


async def list_links(request: Request) -> Response:
    who = await require(request)
    links = services(request).share_links.list(who)
    return JSONResponse({"links": [link.public() for link in links]})


async def revoke_link(request: Request) -> Response:
    who = await require(request)
    link_id = request.path_params["id"]
    services(request).share_links.revoke(who, link_id)
    return JSONResponse({"revoked": link_id})


async def share_page(request: Request) -> Response:
    """The player page; unknown, expired and revoked links all get the same 404 page."""
    svc = services(request)
    secret = request.path_params["secret"]
    link = await svc.share_links.find(secret)
    if link is None:
        response = page(request, "error.html", {"status": 404, "message": GONE}, status_code=404)
    else:
        expires = None
        if link.expires_at is not None:
            expires = datetime.fromtimestamp(link.expires_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        context = {
            "path": link.path,
            "token_url": f"/share/{secret}/token",
            "hls_url": svc.settings.hls_url,
            "expires": expires,
        }
        response = page(request, "share.html", context)
    response.headers.update(PUBLIC_HEADERS)
    return response


async def share_token(request: Request) -> Response:
    """A playback token for the link's stream. No session, hence no CSRF token; browsers must be same-origin."""
    check_browser_origin(request)
    svc = services(request)
    link, issued = await svc.share_links.token(request.path_params["secret"], client_ip(request))
    body = {"token": issued.token, "expires_at": issued.expires_at, "path": link.path}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


routes = [
    Route("/api/v1/share-links", list_links, methods=["GET"]),
    Route("/api/v1/share-links", create_link, methods=["POST"]),
    Route("/api/v1/share-links/{id}", revoke_link, methods=["DELETE"]),
    Route("/share/{secret}", share_page, methods=["GET"]),
    Route("/share/{secret}/token", share_token, methods=["POST"]),
]
