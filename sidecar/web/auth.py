"""Local-mode sign-in: login page and JSON, logout, password set/change, and Caddy's forward-auth target."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from sidecar.errors import BadRequest, Forbidden, NotFoundError, SidecarError, Unauthorized
from sidecar.first_admin import FirstAdmin
from sidecar.identity import GROUP_SEPARATOR, Role
from sidecar.sessions import LocalSessions, Login
from sidecar.web.context import (
    SESSION_COOKIE,
    check_browser_origin,
    client_ip,
    forwarded_value,
    json_object,
    own_origin,
    principal,
    services,
    session_token,
)
from sidecar.web.templating import page

# Paths the sidecar serves itself; the rest behind Caddy is the editor, which only admins may reach.
SIDECAR_PATHS = ("/users", "/streams", "/api/v1/", "/request-access", "/auth/", "/overlay/")


def local_sessions(request: Request) -> LocalSessions:
    sessions = services(request).sessions
    if sessions is None:
        raise NotFoundError("local sign-in is off: this sidecar runs in authentik mode")
    return sessions


def safe_next(target: str | None) -> str:
    """Only same-site relative paths. Browsers drop tabs and newlines from URLs and read `\\` as `/`, so
    `/\t/host`, `/\\host` and `//host` would all leave the site: any whitespace, control character or backslash
    refuses the target, as does anything that parses with a scheme or a host."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if any(char <= " " or char in "\\\x7f" for char in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/") or parts.path.startswith("//"):
        return "/"
    return target


def _is_form(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    )


async def _fields(request: Request, *names: str) -> dict[str, str]:
    data: dict[str, Any] = dict(await request.form()) if _is_form(request) else await json_object(request)
    values = {}
    for name in names:
        value = data.get(name, "")
        if not isinstance(value, str) or len(value) > 256:
            raise BadRequest(f"{name} must be a string of at most 256 characters", field=name)
        values[name] = value
    values["next"] = str(data.get("next", "")) if isinstance(data.get("next", ""), str) else ""
    return values


def _with_cookie(request: Request, response: Response, login: Login) -> Response:
    secure = own_origin(request).startswith("https://")
    response.set_cookie(
        SESSION_COOKIE,
        login.token,
        max_age=services(request).settings.session_ttl_seconds,
        httponly=True,
        samesite="strict",
        secure=secure,
        path="/",
    )
    return response


def _login_json(request: Request, login: Login) -> Response:
    role = services(request).roles.role_for(login.user.groups)
    body = {
        "token": login.token,
        "expires_at": int(login.expires_at),
        "username": login.user.username,
        "role": role.value,
    }
    return _with_cookie(request, JSONResponse(body), login)


def first_admin(request: Request) -> FirstAdmin:
    found = services(request).first_admin
    if found is None:
        raise NotFoundError("local sign-in is off: this sidecar runs in authentik mode")
    return found


async def login_page(request: Request) -> Response:
    local_sessions(request)
    step = first_admin(request)
    context = {
        "next": safe_next(request.query_params.get("next")),
        "first_admin": step.offered(),
        "no_account": step.never_had_admin(),
        "error": None,
        "initial_admin": services(request).settings.initial_admin,
    }
    return page(request, "login.html", context)


async def login(request: Request) -> Response:
    sessions = local_sessions(request)
    check_browser_origin(request)  # login CSRF: a foreign page must not sign the browser in
    fields = await _fields(request, "username", "password")
    if not fields["username"] or not fields["password"]:
        raise BadRequest(
            "username and password are required", field="username" if not fields["username"] else "password"
        )
    try:
        done = await sessions.login(fields["username"], fields["password"], client_ip(request))
    except SidecarError as error:
        if not _is_form(request):
            raise
        context = {
            "next": safe_next(fields["next"]),
            "first_admin": False,
            "no_account": False,
            "error": error.message,
            "initial_admin": services(request).settings.initial_admin,
        }
        return page(request, "login.html", context, status_code=error.status)
    if _is_form(request):
        return _with_cookie(request, RedirectResponse(safe_next(fields["next"]), status_code=303), done)
    return _login_json(request, done)


async def logout(request: Request) -> Response:
    sessions = local_sessions(request)
    check_browser_origin(request)
    token = session_token(request)
    if token:
        sessions.logout(token)
    response: Response
    if _is_form(request):
        response = RedirectResponse("/auth/login", status_code=303)
    else:
        response = JSONResponse({"status": "logged out"})
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


async def password(request: Request) -> Response:
    """A signed-in user's own password change; without a session, the first admin's claim with the setup secret
    (only on a data dir that has never had an account)."""
    sessions = local_sessions(request)
    check_browser_origin(request)
    fields = await _fields(request, "username", "password", "current_password", "setup_secret")
    svc = services(request)
    token = session_token(request)
    signed_in = await sessions.resolve(token) if token else None
    if signed_in is not None:
        await sessions.change_password(
            signed_in.username, fields["current_password"], fields["password"], token, client_ip(request)
        )
        return JSONResponse({"status": "password changed"})
    if not fields["setup_secret"]:
        raise Unauthorized("sign in to change your password")
    username = fields["username"] or svc.settings.initial_admin
    user = await first_admin(request).claim(username, fields["password"], fields["setup_secret"], client_ip(request))
    return _login_json(request, sessions.issue(user))


async def verify(request: Request) -> Response:
    """Caddy's forward_auth target in local mode: identity headers for a valid session, else sign in."""
    sessions = local_sessions(request)
    svc = services(request)
    uri = forwarded_value(request, "x-forwarded-uri") or "/"
    path = uri.split("?", 1)[0]
    api_key = request.headers.get("x-api-key")
    if api_key is not None and path.startswith("/api/v1/"):
        # The sidecar checks the key again itself; the editor never sees key-only requests.
        who = await principal(request)
        return Response(status_code=200) if who.role == Role.SERVICE else JSONResponse({"error": "Unauthorized"}, 401)
    token = session_token(request)
    user = await sessions.resolve(token) if token else None
    if user is None:
        if "text/html" in request.headers.get("accept", ""):
            return RedirectResponse(f"/auth/login?next={quote(safe_next(uri), safe='/')}", status_code=302)
        return JSONResponse({"error": "Unauthorized"}, status_code=401)
    role = svc.roles.role_for(user.groups)
    if role != Role.ADMIN and not path.startswith(SIDECAR_PATHS):
        if "text/html" in request.headers.get("accept", "") and role == Role.VIEWER:
            return RedirectResponse("/streams", status_code=302)
        raise Forbidden("the editor is for admins only")
    identity = {
        "x-authentik-username": user.username,
        "x-authentik-groups": GROUP_SEPARATOR.join(sorted(user.groups)),
        "x-authentik-email": user.email,
        "x-authentik-name": user.name,
        "x-authentik-uid": user.uid,
    }
    response = Response(status_code=200)
    # UTF-8 bytes, as Authentik's outpost sends them: a name like "王伟" must not make every request fail (the sidecar
    # reads identity headers as UTF-8).
    response.raw_headers += [(name.encode(), value.encode()) for name, value in identity.items()]
    return response


routes = [
    Route("/auth/login", login_page, methods=["GET"]),
    Route("/auth/login", login, methods=["POST"]),
    Route("/auth/logout", logout, methods=["POST"]),
    Route("/auth/password", password, methods=["PUT"]),
    Route("/auth/verify", verify, methods=["GET", "HEAD"]),
]
