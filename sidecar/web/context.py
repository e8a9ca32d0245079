"""Per-request facts: which services, which peer, which principal, and the guards built on them."""

from __future__ import annotations

import hmac
import json
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request

from sidecar.errors import BadRequest, Forbidden, Unauthorized
from sidecar.identity import ANONYMOUS, DuplicateIdentityHeader, Principal, Role, principal_from_headers
from sidecar.runtime import Services

SESSION_COOKIE = "sidecar_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def peer_trusted(request: Request) -> bool:
    return services(request).proxies.contains(request.client.host if request.client else None)


def client_ip(request: Request) -> str:
    """The client's address: the TCP peer, or the last X-Forwarded-For hop when the peer is a trusted proxy."""
    peer = request.client.host if request.client else ""
    if peer_trusted(request):
        forwarded = request.headers.get("x-forwarded-for", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-1]
    return peer


def forwarded_value(request: Request, name: str) -> str | None:
    """An X-Forwarded-* header, honoured only from a trusted proxy."""
    return request.headers.get(name) if peer_trusted(request) else None


def session_token(request: Request) -> str | None:
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    return request.cookies.get(SESSION_COOKIE) or None


async def principal(request: Request) -> Principal:
    """Who is asking, resolved once per request: API key, then trusted identity headers, then a local session."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    found = await _resolve(request)
    request.state.principal = found
    return found


async def _resolve(request: Request) -> Principal:
    svc = services(request)
    api_key = request.headers.get("x-api-key")
    if api_key is not None:
        if api_key and hmac.compare_digest(api_key.encode(), svc.secrets.api_key.encode()):
            return Principal(username="api-key", role=Role.SERVICE, source="api_key")
        raise Unauthorized()
    if peer_trusted(request):
        try:
            from_headers = principal_from_headers(request.headers.raw, svc.roles)
        except DuplicateIdentityHeader as error:
            raise BadRequest(f"duplicate identity header {error.header}", field=error.header) from error
        if from_headers is not None:
            if svc.settings.mode == "authentik":
                # The outpost says who; Authentik's API says which groups (exact names, current).
                return await svc.group_lookup.confirm(from_headers)
            if svc.sessions is not None and session_token(request):
                # Local mode: Caddy asked /auth/verify about this very session when the request began; the session
                # is read again now, once the request is complete, so rights lost meanwhile are lost here too.
                return await _from_session(request)
            return replace(from_headers, directory_admin=from_headers.role == Role.ADMIN)
    return await _from_session(request)


async def _from_session(request: Request) -> Principal:
    """The signed-in local user behind the request's session token, as the directory holds them now."""
    svc = services(request)
    token = session_token(request)
    if svc.sessions is not None and token:
        user = await svc.sessions.resolve(token)
        if user is not None:
            found = svc.roles.principal(
                user.username, user.groups, source="session", email=user.email, name=user.name, uid=user.uid
            )
            return replace(found, directory_admin=found.role == Role.ADMIN)
    return ANONYMOUS


async def require(request: Request, *, admin: bool = False) -> Principal:
    """The principal, if allowed at all (and as admin when asked); state changes also pass the CSRF guard."""
    who = await principal(request)
    if not who.authenticated:
        raise Unauthorized()
    if who.role == Role.NONE:
        raise Forbidden(f"no access: ask an admin for a group starting with {services(request).roles.prefix}")
    if admin and not who.is_admin:
        raise Forbidden("admins only")
    if request.method not in SAFE_METHODS and who.source != "api_key":
        check_same_origin(request)
        check_csrf(request, who)
    return who


def own_origin(request: Request) -> str:
    scheme = forwarded_value(request, "x-forwarded-proto") or request.url.scheme
    host = request.headers.get("host", "")
    return f"{scheme}://{host}".lower()


def check_same_origin(request: Request) -> None:
    """State changes from a browser must come from a page of this site (Origin, else Referer)."""
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if referer is None:
            raise Forbidden("cross-origin request refused: no Origin or Referer header")
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    allowed = {own_origin(request), *(o.lower().rstrip("/") for o in services(request).settings.allowed_origins)}
    if origin.lower().rstrip("/") not in allowed:
        raise Forbidden("cross-origin request refused")


def check_browser_origin(request: Request) -> None:
    """For routes scripts also call without a session (sign-in, share tokens): a request carrying Origin or Referer
    comes from a browser and must come from this site; one with neither (curl, a player) is let through."""
    if "origin" in request.headers or "referer" in request.headers:
        check_same_origin(request)


def _serializer(request: Request) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(services(request).secrets.session_secret, salt="sidecar-csrf")


FORM_TOKEN_AGE = 2 * 3600


def form_token(request: Request, form: str) -> str:
    """A signed token for a public form (no session to bind to): proves the POST comes from our own page."""
    return str(URLSafeTimedSerializer(services(request).secrets.session_secret, salt=f"form-{form}").dumps(form))


def check_form_token(request: Request, form: str, token: str) -> None:
    serializer = URLSafeTimedSerializer(services(request).secrets.session_secret, salt=f"form-{form}")
    try:
        if serializer.loads(token, max_age=FORM_TOKEN_AGE) != form:
            raise BadSignature("wrong form")
    except BadSignature as error:
        raise Forbidden("this form has expired or did not come from this site; please fill it in again") from error


def csrf_token(request: Request, who: Principal) -> str:
    return str(_serializer(request).dumps(who.username))


def check_csrf(request: Request, who: Principal) -> None:
    token = request.headers.get(CSRF_HEADER, "")
    try:
        username = _serializer(request).loads(token, max_age=services(request).settings.session_ttl_seconds)
    except BadSignature as error:
        raise Forbidden("missing or invalid CSRF token (send the X-CSRF-Token header)") from error
    if not hmac.compare_digest(str(username).encode(), who.username.encode()):
        raise Forbidden("missing or invalid CSRF token (send the X-CSRF-Token header)")


def int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6:
        raise BadRequest(f"{name} must be a positive whole number", field=name)
    return int(raw)


async def json_object(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, RecursionError) as error:  # deep nesting raises RecursionError
        raise BadRequest("body must be a JSON object") from error
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    try:
        # JSON can carry a lone surrogate (`"\ud800"`), which is no text: refused here rather than failing later
        # wherever the value is encoded (a password check, a database write).
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError as error:
        raise BadRequest("body must be valid text (it holds a lone surrogate)") from error
    return body
