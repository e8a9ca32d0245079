"""A stand-in Authentik outpost whose signed-in person is chosen by a cookie the browser test sets.

Caddy's `forward_auth` sends the outpost the browser's request headers, cookies included. With the cookie
`stand_in_user=<name>` naming a known person, the outpost answers 200 with that person's `X-Authentik-*` identity,
as Authentik does for a signed-in user; without it (or for an unknown name) it answers 200 without identity, as
Authentik does on the paths it leaves unauthenticated. Only the forward-auth endpoint answers; it never redirects.
"""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.processes_fixtures import OUTPOST_AUTH_URI

COOKIE = "stand_in_user"
# Who the outpost can vouch for, and the groups Authentik would send (`|`-separated, like a real outpost).
PEOPLE: dict[str, tuple[str, ...]] = {
    "admin": ("vid_admin",),
    "bob": ("vid_public",),
    "carol": ("tak_users",),
}


def identity(username: str) -> dict[str, str]:
    return {
        "X-Authentik-Username": username,
        "X-Authentik-Groups": "|".join(PEOPLE[username]),
        "X-Authentik-Email": f"{username}@example.org",
        "X-Authentik-Name": username.title(),
        "X-Authentik-Uid": f"uid-{username}",
    }


def _chosen(request: Request) -> str | None:
    parsed: SimpleCookie = SimpleCookie()
    try:
        parsed.load(request.headers.get("cookie", ""))
    except CookieError:
        return None
    morsel = parsed.get(COOKIE)
    return morsel.value if morsel is not None and morsel.value in PEOPLE else None


def create_outpost() -> Starlette:
    async def forward_auth(request: Request) -> Response:
        username = _chosen(request)
        return Response(status_code=200, headers=identity(username) if username else {})

    return Starlette(routes=[Route(OUTPOST_AUTH_URI, forward_auth, methods=["GET", "HEAD", "POST", "PUT", "DELETE"])])
