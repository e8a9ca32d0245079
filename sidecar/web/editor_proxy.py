"""The injection proxy: admins reach the vanilla editor through the sidecar, which adds the overlay to its pages.

Everything is forwarded as it is (method, raw path, query, body streamed, headers), and every answer comes back
as it is, streamed, except HTML pages (status 200), which get the overlay's stylesheet and script before the last
`</body>`. The editor itself stays unmodified.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from urllib.parse import quote, urlsplit

import httpx
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from sidecar.errors import Forbidden
from sidecar.identity import IDENTITY_PREFIX, Principal, Role
from sidecar.settings import Settings
from sidecar.web.auth import SIDECAR_PATHS, safe_next
from sidecar.web.context import SAFE_METHODS, SESSION_COOKIE, check_same_origin, principal, services

log = logging.getLogger("sidecar.editor")

# Every method an HTTP/1.1 web app uses (CONNECT and TRACE are proxy and debugging tools, never the editor's).
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

OVERLAY_TAGS = b'<link rel="stylesheet" href="/overlay/overlay.css"><script src="/overlay/overlay.js" defer></script>'
# Paths the sidecar owns: a miss there is the sidecar's 404, never a request the editor should answer.
OWN_PATHS = (*SIDECAR_PATHS, "/share/")
# Connection-level fields (RFC 9110 section 7.6.1) belong to one hop and are never forwarded either way.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Fields that describe the editor's exact bytes; they are wrong once the overlay is inserted into a page.
BODY_DESCRIBING = frozenset(
    {b"content-length", b"content-encoding", b"etag", b"content-md5", b"digest", b"accept-ranges"}
)
# Pages are buffered to insert the overlay; anything announcing more than this passes through untouched.
MAX_PAGE_BYTES = 16 * 1024 * 1024
# Some editor actions (service restart, updates) take a while; only connecting to it should fail fast.
READ_TIMEOUT_SECONDS = 300.0
# Static assets are audited once per user and path in this window instead of on every page load.
ASSET_AUDIT_WINDOW_SECONDS = 300.0
ASSET_SUFFIXES = (".css", ".js", ".mjs", ".map", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".ico", ".webp", ".woff2")
MAX_ASSET_AUDIT_KEYS = 4096
BODY_CLOSE = re.compile(rb"</body\s*>", re.IGNORECASE)


def routes(settings: Settings) -> list[BaseRoute]:
    """The catch-all route when an editor is configured; it must come after every route of the sidecar."""
    if not settings.editor_url:
        return []
    return [Route("/{path:path}", proxy, methods=list(METHODS), name="editor_proxy")]


async def proxy(request: Request) -> Response:
    path = request.url.path
    if path.startswith(OWN_PATHS):
        raise HTTPException(404)
    who = await principal(request)
    refused = _refusal(request, who)
    if refused is not None:
        return refused
    if request.method not in SAFE_METHODS:
        # The editor has no CSRF protection of its own; a foreign page must not drive it with an admin's cookies.
        check_same_origin(request)
    _audit(request, who)
    svc = services(request)
    editor_url = svc.settings.editor_url or ""
    timeout = httpx.Timeout(svc.settings.upstream_timeout, read=READ_TIMEOUT_SECONDS, write=READ_TIMEOUT_SECONDS)
    # Built directly rather than with `build_request`, which would add the client's default headers (an
    # Accept-Encoding the browser never sent) and cookies from its jar.
    upstream_request = httpx.Request(
        request.method,
        _target(editor_url, request),
        headers=_request_headers(request),
        content=_body(request),
        extensions={"timeout": timeout.as_dict()},
    )
    try:
        upstream = await svc.http.send(upstream_request, stream=True)
    except httpx.HTTPError as error:
        log.warning("editor unreachable at %s: %s", editor_url, type(error).__name__)
        return _unreachable(request)
    try:
        if _is_page(request, upstream):
            return await _with_overlay(request, upstream, editor_url)
        return _passthrough(request, upstream, editor_url)
    except httpx.HTTPError as error:
        await upstream.aclose()
        log.warning("editor answer unreadable: %s", type(error).__name__)
        return _unreachable(request)


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _refusal(request: Request, who: Principal) -> Response | None:
    """Admins only; browsers are sent where they belong instead of seeing a bare error."""
    if who.role == Role.ADMIN:
        return None
    html = _wants_html(request)
    if not who.authenticated:
        if html and services(request).sessions is not None:
            asked = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            target = quote(safe_next(asked), safe="/")
            return RedirectResponse(f"/auth/login?next={target}", status_code=302)
        headers = {"WWW-Authenticate": 'Bearer realm="sidecar"'}
        return JSONResponse({"error": "Unauthorized"}, status_code=401, headers=headers)
    if who.role == Role.VIEWER and html:
        return RedirectResponse("/streams", status_code=302)
    # Viewers, people without a video group, and the API key (automation has no business in the editor's UI).
    raise Forbidden("the editor is for admins only")


def _audit(request: Request, who: Principal) -> None:
    """One audit entry per request; repeated static-asset loads by one user are folded into one per window."""
    path = request.url.path
    target = f"{request.method} {path}"
    if request.method in ("GET", "HEAD") and path.lower().endswith(ASSET_SUFFIXES):
        seen: dict[tuple[str, str], float] = _asset_audit_times(request)
        key = (who.username, target)
        now = time.monotonic()
        last = seen.get(key)
        if last is not None and now - last < ASSET_AUDIT_WINDOW_SECONDS:
            return
        if len(seen) >= MAX_ASSET_AUDIT_KEYS:
            seen.clear()  # bounded memory; the worst case is one extra audit entry per asset
        seen[key] = now
    store = services(request).store
    with store.transaction() as db:
        store.audit(db, who.username, "editor.request", target)


def _asset_audit_times(request: Request) -> dict[tuple[str, str], float]:
    state = request.app.state
    if not hasattr(state, "editor_asset_audit"):
        state.editor_asset_audit = {}
    found: dict[tuple[str, str], float] = state.editor_asset_audit
    return found


def _target(editor_url: str, request: Request) -> httpx.URL:
    """The editor's URL with the client's path and query exactly as sent (no re-encoding)."""
    base = httpx.URL(editor_url)
    raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
    query: bytes = request.scope.get("query_string", b"")
    prefix = base.raw_path.split(b"?", 1)[0].rstrip(b"/")
    return base.copy_with(raw_path=prefix + raw_path + (b"?" + query if query else b""))


def _connection_named(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    """Fields a `Connection` header names are hop-by-hop too."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return named


def _request_headers(request: Request) -> list[tuple[bytes, bytes]]:
    raw = request.headers.raw
    drop = HOP_BY_HOP | _connection_named(raw) | {b"host", b"x-api-key"}
    forwarded: list[tuple[bytes, bytes]] = []
    for name, value in raw:
        lower = name.lower()
        # Identity reaches the editor from nowhere but the sidecar; underscore spellings are folded like WSGI does.
        if lower in drop or IDENTITY_PREFIX.encode() in lower.replace(b"_", b"-"):
            continue
        if lower == b"authorization" and value[:7].lower() == b"bearer ":
            continue  # a sidecar session token
        if lower == b"cookie":
            value = _without_session_cookie(value)
            if not value:
                continue
        if lower == b"accept-encoding" and _wants_html(request):
            continue  # replaced below: pages are easier to amend uncompressed
        forwarded.append((name, value))
    if _wants_html(request):
        forwarded.append((b"accept-encoding", b"identity"))
    return forwarded


def _without_session_cookie(value: bytes) -> bytes:
    """The sidecar's own session token is none of the editor's business."""
    kept = [part.strip() for part in value.split(b";") if part.strip()]
    prefix = SESSION_COOKIE.encode() + b"="
    return b"; ".join(part for part in kept if not part.startswith(prefix))


def _body(request: Request) -> AsyncIterator[bytes] | None:
    headers = request.headers
    if "content-length" in headers and headers["content-length"] != "0" or "transfer-encoding" in headers:
        return request.stream()
    return None


def _response_headers(
    upstream: httpx.Response, editor_url: str, drop: frozenset[bytes] = frozenset()
) -> list[tuple[bytes, bytes]]:
    raw = upstream.headers.raw
    dropped = HOP_BY_HOP | _connection_named(raw) | drop
    kept: list[tuple[bytes, bytes]] = []
    for name, value in raw:
        lower = name.lower()
        if lower in dropped:
            continue
        if lower == b"location":
            value = _local_location(value, editor_url)
        kept.append((lower, value))
    return kept


def _local_location(value: bytes, editor_url: str) -> bytes:
    """An absolute redirect to the editor's internal address becomes a path on this site; others stay as sent."""
    origin = urlsplit(editor_url)
    own = f"{origin.scheme}://{origin.netloc}".encode().lower()
    if value.lower().startswith(own) and value[len(own) : len(own) + 1] in (b"", b"/", b"?"):
        rest = value[len(own) :]
        return rest if rest.startswith(b"/") else b"/" + rest
    return value


def _is_html(upstream: httpx.Response) -> bool:
    content_type: str = upstream.headers.get("content-type", "")
    return content_type.lower().startswith("text/html")


def _is_page(request: Request, upstream: httpx.Response) -> bool:
    if upstream.status_code != 200 or request.method != "GET":
        return False
    if not _is_html(upstream):
        return False
    announced = upstream.headers.get("content-length", "")
    return not (announced.isdigit() and int(announced) > MAX_PAGE_BYTES)


async def _with_overlay(request: Request, upstream: httpx.Response, editor_url: str) -> Response:
    try:
        body = await upstream.aread()  # decoded: gzip, deflate (and br, zstd when their packages are installed)
    finally:
        await upstream.aclose()
    response = Response(content=insert_overlay(body), status_code=upstream.status_code)
    headers = _response_headers(upstream, editor_url, BODY_DESCRIBING)
    headers = [(name, allow_self(value) if name == b"content-security-policy" else value) for name, value in headers]
    response.raw_headers = [*headers, (b"content-length", str(len(response.body)).encode())]
    return response


def _passthrough(request: Request, upstream: httpx.Response, editor_url: str) -> Response:
    page_head = request.method == "HEAD" and upstream.status_code == 200 and _is_html(upstream)
    # A HEAD for a page cannot know the length the overlay gives the GET, so it announces none.
    headers = _response_headers(upstream, editor_url, BODY_DESCRIBING if page_head else frozenset())
    if request.method == "HEAD":
        response = Response(status_code=upstream.status_code)
        response.raw_headers = headers
        return response

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():  # raw: compressed bytes stay compressed
                yield chunk
        finally:
            await upstream.aclose()

    streamed = StreamingResponse(body(), status_code=upstream.status_code)
    streamed.raw_headers = headers
    return streamed


def insert_overlay(page: bytes) -> bytes:
    """The overlay tags once, before the last `</body>` (any case), or at the end of a page without one."""
    closes = list(BODY_CLOSE.finditer(page))
    if not closes:
        return page + OVERLAY_TAGS
    at = closes[-1].start()
    return page[:at] + OVERLAY_TAGS + page[at:]


# For each kind of request the overlay makes (its script, its stylesheet, its fetch of /api/v1/me), the CSP
# directives that govern it, most specific first: the first one present is the one the browser applies.
_GOVERNING = (
    ("script-src-elem", "script-src", "default-src"),
    ("style-src-elem", "style-src", "default-src"),
    ("connect-src", "default-src"),
)


def allow_self(value: bytes) -> bytes:
    """A policy the editor sends, widened only as far as the same-origin overlay needs.

    The overlay is one same-origin script and stylesheet, so `'self'` is all it takes: added to the directive that
    would otherwise block them, replacing `'none'` (which is void next to another source). Inline code is never
    allowed, and a directive that already admits this origin (`'self'` or `*`) is left as it is.
    """
    text = value.decode("latin-1")
    policies = text.split(",")
    widened = [_allow_self_in_policy(policy) for policy in policies]
    if widened == policies:
        return value  # nothing blocks the overlay: the editor's header stays byte for byte
    return ",".join(widened).encode("latin-1")


def _allow_self_in_policy(policy: str) -> str:
    """One policy of a (possibly comma-joined) header; returned unchanged when nothing needs widening.

    With `'strict-dynamic'` browsers ignore `'self'`; such a policy would need a nonce the sidecar cannot give
    the overlay without also vouching for the editor's inline code, so the overlay then stays blocked.
    """
    directives = [part.strip() for part in policy.split(";") if part.strip()]
    names = [part.split(None, 1)[0].lower() for part in directives]
    to_widen: set[int] = set()
    changed = False
    for chain in _GOVERNING:
        for name in chain:
            if name in names:
                to_widen.add(names.index(name))
                break
    for index in sorted(to_widen):
        sources = directives[index].split()[1:]
        lowered = [source.lower() for source in sources]
        if "'self'" in lowered or "*" in lowered:
            continue
        kept = [source for source in sources if source.lower() != "'none'"]
        directives[index] = " ".join([directives[index].split()[0], "'self'", *kept])
        changed = True
    if not changed:
        return policy
    leading = policy[: len(policy) - len(policy.lstrip())]
    return leading + "; ".join(directives)


def _unreachable(request: Request) -> Response:
    message = "The MediaMTX editor is not reachable right now; try again shortly."
    if _wants_html(request):
        return HTMLResponse(f"<!doctype html><title>Editor unavailable</title><p>{message}</p>", status_code=502)
    return JSONResponse({"error": message}, status_code=502)
