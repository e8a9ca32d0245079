"""Pages for people: /users and /audit for admins, /streams for everyone with a prefixed group."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar.web.context import csrf_token, require, services
from sidecar.web.templating import page


async def users_page(request: Request) -> Response:
    # Only the page's frame: users.js reads people, groups and memberships from the JSON API, which never
    # answers with a group outside the configured prefix.
    who = await require(request, admin=True)
    settings = services(request).settings
    context = {
        "who": who,
        "csrf_token": csrf_token(request, who),
        "mode": settings.mode,
        "prefix": settings.group_prefix,
    }
    return page(request, "users.html", context)


async def audit_page(request: Request) -> Response:
    who = await require(request, admin=True)
    return page(request, "audit.html", {"who": who, "csrf_token": csrf_token(request, who)})


async def streams_page(request: Request) -> Response:
    # Only the page's frame: streams.js fetches the streams (and, for admins, rules and sources) from the JSON API,
    # so nothing a viewer may not see is ever in the HTML.
    who = await require(request)
    settings = services(request).settings
    context = {
        "who": who,
        "csrf_token": csrf_token(request, who),
        "hls_url": settings.hls_url,
        "is_admin": who.is_admin,
        "viewer_share_links": settings.viewer_share_links,
        "demo": settings.demo,
    }
    return page(request, "streams.html", context)


routes = [
    Route("/users", users_page),
    Route("/audit", audit_page),
    Route("/streams", streams_page),
]
