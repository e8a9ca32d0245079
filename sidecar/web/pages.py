"""Pages for people: /users for admins, /streams for everyone with a prefixed group."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar.web.context import csrf_token, int_param, require, services
from sidecar.web.templating import page


async def users_page(request: Request) -> Response:
    who = await require(request, admin=True)
    search = request.query_params.get("search", "")[:100]
    found = await services(request).users.list_users(search, int_param(request, "page", 1), 50)
    context = {"who": who, "page": found, "search": search, "csrf_token": csrf_token(request, who)}
    return page(request, "users.html", context)


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
    }
    return page(request, "streams.html", context)


routes = [
    Route("/users", users_page),
    Route("/streams", streams_page),
]
