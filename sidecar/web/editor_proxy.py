"""The injection proxy: admins reach the vanilla editor through the sidecar, which adds the overlay to its pages.

Everything is forwarded as it is (method, raw path, query, body streamed, headers), and every answer comes back
as it is, streamed, except HTML pages (status 200), which get the overlay's stylesheet and script before the last
`</body>`. The editor itself stays unmodified.

With the SSO bridge on (service credentials configured, see sidecar/editor_session.py) the editor's `session`
cookie is the sidecar's, not the browser's, and the editor's own login, logout, self-service and mail settings
are answered here instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable
from urllib.parse import quote, urlsplit

import httpx
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from sidecar.editor_session import EDITOR_COOKIE, EditorSession, EditorSignInFailed, is_login_location
from sidecar.errors import Forbidden
from sidecar.identity import IDENTITY_PREFIX, Principal, Role
from sidecar.settings import Settings
from sidecar.web.auth import SIDECAR_PATHS, safe_next
from sidecar.web.context import SAFE_METHODS, SESSION_COOKIE, check_same_origin, principal, services
from sidecar.web.middleware import BODY_SECONDS

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
# How long the editor may take to start answering (and then between two pieces of its answer). Its ordinary actions
# finish within its own limits, the longest a service restart (systemctl within 10 s, then a 3 s pause); the few
# that run a long job get the editor's own limit for it and a margin. Anything else that waits longer is hung.
ORDINARY_WAIT_SECONDS = 15.0
SLOW_ACTIONS = (
    ("/api/test/optimize/", 960.0),  # ffmpeg, limited to 900 s by the editor
    ("/api/recordings/convert-mp4/", 330.0),  # ffmpeg, limited to 300 s
    ("/api/mediamtx/version/upgrade", 90.0),  # a download limited to 60 s
    ("/api/mediamtx/version/rollback", 90.0),
    ("/api/update/apply", 90.0),
)


def editor_wait(path: str, upstream_timeout: float) -> float:
    """Seconds the editor has to start answering a request for `path`."""
    slow = next((seconds for prefix, seconds in SLOW_ACTIONS if path.startswith(prefix)), 0.0)
    return max(upstream_timeout, ORDINARY_WAIT_SECONDS, slow)


# Reading the editor is audited once per person in this window; every change is audited.
VIEW_AUDIT_SECONDS = 1800.0
MAX_VIEW_AUDIT_KEYS = 4096
BODY_CLOSE = re.compile(rb"</body\s*>", re.IGNORECASE)
# With the bridge on, request bodies up to this size are kept so a request can be sent again after a new sign-in.
MAX_REPLAY_BYTES = 1024 * 1024
# The editor's self-service pages, replaced by the sidecar's request-access page (and Authentik's recovery).
SELF_SERVICE = ("/register", "/forgot-password", "/reset-password")
EMAIL_SETTINGS = "/api/webeditor/email/"
# The editor's Web Users writes that name an existing account (JSON `{"username": ...}`).
SERVICE_ACCOUNT_WRITES = ("/api/webeditor/users/update", "/api/webeditor/users/delete")
MAX_USER_WRITE_BYTES = 64 * 1024
UPLOAD_SECONDS = 300.0
SERVICE_ACCOUNT_REFUSAL = "the sidecar signs in to the editor with this account; it cannot be changed or deleted here"
SIGN_OUT_PAGE = (
    "<!doctype html><title>Sign out</title>"
    '<form method="post" action="/auth/logout"><p>Sign out of the video site?</p>'
    '<button type="submit">Sign out</button> <a href="/">Back</a></form>'
)


def routes(settings: Settings) -> list[BaseRoute]:
    """The catch-all route when an editor is configured; it must come after every route of the sidecar."""
    if not settings.editor_url:
        return []
    return [Route("/{path:path}", proxy, methods=list(METHODS), name="editor_proxy")]


async def proxy(request: Request) -> Response:
    path = request.url.path
    if path.startswith(OWN_PATHS):
        raise HTTPException(404)
    if _body(request) is not None and _small_body(request):
        # Read before deciding who is asking, like every request to the sidecar's own routes: a body held back on
        # purpose must not carry rights its sender has lost meanwhile. (Uploads over MAX_REPLAY_BYTES stream.)
        try:
            async with asyncio.timeout(BODY_SECONDS):
                await request.body()
        except TimeoutError:
            return JSONResponse({"error": "the request body took too long to arrive"}, status_code=408)
    who = await principal(request)
    refused = _refusal(request, who)
    if refused is not None:
        return refused
    svc = services(request)
    if request.method not in SAFE_METHODS:
        # The editor has no CSRF protection of its own; a foreign page must not drive it with an admin's cookies.
        check_same_origin(request)
    bridge = _bridge(request)
    if bridge is not None:
        replaced = _replaced_by_sidecar(request, svc.settings) or await _service_account_guard(request, svc.settings)
        if replaced is not None:
            return replaced
    _audit(request, who)
    editor_url = svc.settings.editor_url or ""
    wait = editor_wait(request.url.path, svc.settings.upstream_timeout)
    timeout = httpx.Timeout(svc.settings.upstream_timeout, read=wait, write=wait)
    body: bytes | AsyncIterator[bytes] | None = _body(request)
    if body is not None and _small_body(request):
        body = await request.body()  # read already; with the bridge, kept to repeat after signing in again
    elif body is not None:
        body = _checked_stream(request)

    def build(editor_cookie: str | None) -> httpx.Request:
        # Built directly rather than with `build_request`, which would add the client's default headers (an
        # Accept-Encoding the browser never sent) and cookies from its jar.
        return httpx.Request(
            request.method,
            _target(editor_url, request),
            headers=_request_headers(request, editor_cookie),
            content=body,
            extensions={"timeout": timeout.as_dict()},
        )

    try:
        editor_cookie = await bridge.cookie(svc.upstreams.editor) if bridge is not None else None
        upstream = await _headers_within(wait, svc.upstreams.editor.send(build(editor_cookie), stream=True))
        if bridge is not None and editor_cookie is not None and _session_lost(upstream):
            if isinstance(body, AsyncIterator):
                # A streamed body is gone; the browser gets the editor's answer, the next request a new session.
                bridge.forget(editor_cookie)
            else:
                await upstream.aclose()
                editor_cookie = await bridge.renew(svc.upstreams.editor, stale=editor_cookie)
                upstream = await _headers_within(wait, svc.upstreams.editor.send(build(editor_cookie), stream=True))
                if _sent_to_login(upstream):
                    # Signed in, yet refused at once: never send the browser round the login page in circles.
                    await upstream.aclose()
                    bridge.forget(editor_cookie)
                    log.warning("the editor refused a session it had just given the sidecar")
                    return _sign_in_failed(request)
    except EditorSignInFailed:
        return _sign_in_failed(request)
    except StreamRefused as stopped:
        return JSONResponse({"error": stopped.message}, status_code=stopped.status)
    except httpx.HTTPError as error:
        log.warning("editor unreachable at %s: %s", editor_url, type(error).__name__)
        return _unreachable(request)
    strip = frozenset({EDITOR_COOKIE}) if bridge is not None else frozenset()
    try:
        if _is_page(request, upstream):
            return await _with_overlay(request, upstream, editor_url, strip)
        return _passthrough(request, upstream, editor_url, strip)
    except httpx.HTTPError as error:
        await upstream.aclose()
        log.warning("editor answer unreadable: %s", type(error).__name__)
        return _unreachable(request)


async def _headers_within(seconds: float, sending: Awaitable[httpx.Response]) -> httpx.Response:
    """The editor's answer (its status and headers) within `seconds` in all, however slowly it trickles them."""
    try:
        async with asyncio.timeout(seconds):
            return await sending
    except TimeoutError:
        raise httpx.ReadTimeout(f"the editor did not start answering within {seconds:g} s") from None


def _bridge(request: Request) -> EditorSession | None:
    """The sidecar's editor session, made on first use; None when the bridge is off."""
    settings = services(request).settings
    if not settings.editor_bridge:
        return None
    state = request.app.state
    if not hasattr(state, "editor_session"):
        password = settings.editor_password.get_secret_value() if settings.editor_password else ""
        url, username = settings.editor_url or "", settings.editor_username or ""
        state.editor_session = EditorSession(url, username, password, httpx.Timeout(settings.upstream_timeout))
    found: EditorSession = state.editor_session
    return found


def _replaced_by_sidecar(request: Request, settings: Settings) -> Response | None:
    """The editor's own account pages and mail settings, which the sidecar (or Authentik) owns with the bridge on."""
    path = request.url.path.rstrip("/") or "/"
    if path == "/login":
        return RedirectResponse("/", status_code=302)  # already signed in, as the sidecar's service account
    if path == "/logout":
        if settings.mode == "authentik":
            return RedirectResponse("/outpost.goauthentik.io/sign_out", status_code=302)
        # Signing out is a POST (with the same-origin check), so a link on another site cannot do it.
        return HTMLResponse(SIGN_OUT_PAGE)
    if path in SELF_SERVICE:
        if settings.mode == "authentik" and settings.authentik_url and path != "/register":
            return RedirectResponse(f"{settings.authentik_url.rstrip('/')}/if/flow/default-recovery-flow/", 302)
        return RedirectResponse("/request-access", status_code=302)
    if request.method in SAFE_METHODS:
        return None
    if path == EMAIL_SETTINGS.rstrip("/") or path.startswith(EMAIL_SETTINGS):
        return _denied(request, "email is configured in the sidecar/Authentik")
    if path == "/change_password":
        # Changing the service account's password in the editor would lock every admin out of it.
        return _denied(request, "passwords are managed in the sidecar/Authentik")
    return None


async def _service_account_guard(request: Request, settings: Settings) -> Response | None:
    """The editor's Web Users API can demote or delete any of its users, the sidecar's service account included,
    which would lock every admin out at the editor's next restart: such a request is refused, others go through."""
    path = request.url.path.rstrip("/")
    if request.method != "POST" or path not in SERVICE_ACCOUNT_WRITES:
        return None
    announced = request.headers.get("content-length", "")
    if not announced.isdigit() or int(announced) > MAX_USER_WRITE_BYTES:
        return _denied(request, "the editor's user changes must be small JSON objects", 400)
    try:
        data = json.loads(await request.body())
    except ValueError:
        data = None
    username = data.get("username") if isinstance(data, dict) else None
    if not isinstance(username, str):
        return _denied(request, "username must be a string", 400)
    if username.strip() == (settings.editor_username or "").strip():
        return _denied(
            request, "the sidecar signs in to the editor with this account; it cannot be changed or deleted here"
        )
    return None


class StreamRefused(Exception):
    """A streamed body that took too long, or whose sender lost the right to send it while it arrived."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def _checked_stream(request: Request) -> AsyncIterator[bytes]:
    """A body too large to read first (an upload, or one without Content-Length) goes on to the editor as it
    arrives, all but its last chunk: who is asking is decided again once it is complete, and only then does the
    editor get the end of it (it acts on a request only once the whole body is there). The whole body must arrive
    within `UPLOAD_SECONDS`."""
    deadline = time.monotonic() + UPLOAD_SECONDS
    held: bytes | None = None
    async for chunk in request.stream():
        if time.monotonic() > deadline:
            raise StreamRefused(408, "the request body took too long to arrive")
        if held is not None:
            yield held
        held = chunk
    request.state.principal = None  # decide again, now
    who = await principal(request)
    if who.role != Role.ADMIN:
        raise StreamRefused(403, "the editor is for admins only (your access changed while the request was sent)")
    if held is not None:
        yield held


def _small_body(request: Request) -> bool:
    announced = request.headers.get("content-length", "")
    return announced.isdigit() and int(announced) <= MAX_REPLAY_BYTES


def _session_lost(upstream: httpx.Response) -> bool:
    """The editor no longer knows the session: it sends pages to its login, and answers its API with 401."""
    return upstream.status_code == 401 or _sent_to_login(upstream)


def _sent_to_login(upstream: httpx.Response) -> bool:
    return upstream.is_redirect and is_login_location(upstream.headers.get("location", ""))


def _sign_in_failed(request: Request) -> Response:
    message = "The sidecar could not sign in to the editor; check SIDECAR_EDITOR_USERNAME and SIDECAR_EDITOR_PASSWORD."
    if _wants_html(request):
        return HTMLResponse(f"<!doctype html><title>Editor sign-in failed</title><p>{message}</p>", status_code=502)
    return JSONResponse({"error": message}, status_code=502)


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
    """Every change made in the editor is a row, with the person who made it; reading is folded into one "opened the
    editor" row per person and `VIEW_AUDIT_SECONDS` (the real editor polls several APIs every few seconds)."""
    path = request.url.path
    if request.method in SAFE_METHODS:
        seen: dict[str, float] = _view_audit_times(request)
        now = time.monotonic()
        last = seen.get(who.username)
        if last is not None and now - last < VIEW_AUDIT_SECONDS:
            return
        if len(seen) >= MAX_VIEW_AUDIT_KEYS:
            seen.clear()  # bounded memory; the worst case is one extra row per person
        seen[who.username] = now
        action, target = "editor.open", path
    else:
        action, target = "editor.change", f"{request.method} {path}"
    store = services(request).store
    with store.transaction() as db:
        store.audit(db, who.username, action, target)


def _denied(request: Request, reason: str, status: int = 403) -> Response:
    """A change the sidecar refuses to pass on to the editor: answered, and audited with who tried."""
    who = getattr(request.state, "principal", None)
    store = services(request).store
    with store.transaction() as db:
        actor = who.username if who is not None else "anonymous"
        store.audit(db, actor, "editor.denied", f"{request.method} {request.url.path}", {"reason": reason})
    return JSONResponse({"error": reason}, status_code=status)


def _view_audit_times(request: Request) -> dict[str, float]:
    state = request.app.state
    if not hasattr(state, "editor_view_audit"):
        state.editor_view_audit = {}
    found: dict[str, float] = state.editor_view_audit
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


def _request_headers(request: Request, editor_cookie: str | None = None) -> list[tuple[bytes, bytes]]:
    """The browser's headers without identity or credentials; with the bridge, the sidecar's editor session."""
    raw = request.headers.raw
    drop = HOP_BY_HOP | _connection_named(raw) | {b"host", b"x-api-key", b"x-csrf-token"}
    forwarded: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    for name, value in raw:
        lower = name.lower()
        # Identity reaches the editor from nowhere but the sidecar; underscore spellings are folded like WSGI does.
        if lower in drop or IDENTITY_PREFIX.encode() in lower.replace(b"_", b"-"):
            continue
        if lower == b"authorization" and value[:7].lower() == b"bearer ":
            continue  # a sidecar session token
        if lower == b"cookie":
            value = _without_cookies(value, _dropped_cookies(editor_cookie))
            if editor_cookie is not None:
                cookies.append(value)  # joined with the editor session below: servers read one Cookie header
                continue
            if not value:
                continue
        if lower == b"accept-encoding" and _wants_html(request):
            continue  # replaced below: pages are easier to amend uncompressed
        forwarded.append((name, value))
    if _wants_html(request):
        forwarded.append((b"accept-encoding", b"identity"))
    if editor_cookie is not None:
        cookies.append(f"{EDITOR_COOKIE}={editor_cookie}".encode())
        forwarded.append((b"cookie", b"; ".join(part for part in cookies if part)))
    return forwarded


def _dropped_cookies(editor_cookie: str | None) -> tuple[bytes, ...]:
    # The sidecar's own session token is none of the editor's business; with the bridge, a browser's editor
    # session (a stale or forged one) is replaced by the sidecar's.
    own = SESSION_COOKIE.encode() + b"="
    return (own, EDITOR_COOKIE.encode() + b"=") if editor_cookie is not None else (own,)


def _without_cookies(value: bytes, prefixes: tuple[bytes, ...]) -> bytes:
    kept = [part.strip() for part in value.split(b";") if part.strip()]
    return b"; ".join(part for part in kept if not part.startswith(prefixes))


def _body(request: Request) -> AsyncIterator[bytes] | None:
    headers = request.headers
    if "content-length" in headers and headers["content-length"] != "0" or "transfer-encoding" in headers:
        return request.stream()
    return None


def _response_headers(
    upstream: httpx.Response,
    editor_url: str,
    drop: frozenset[bytes] = frozenset(),
    cookies: frozenset[str] = frozenset(),
) -> list[tuple[bytes, bytes]]:
    """The editor's headers for the browser; `cookies` names cookies whose Set-Cookie stays with the sidecar."""
    raw = upstream.headers.raw
    dropped = HOP_BY_HOP | _connection_named(raw) | drop
    kept: list[tuple[bytes, bytes]] = []
    for name, value in raw:
        lower = name.lower()
        if lower in dropped:
            continue
        if lower == b"set-cookie" and _cookie_name(value) in cookies:
            continue
        if lower == b"location":
            value = _local_location(value, editor_url)
        kept.append((lower, value))
    return kept


def _cookie_name(set_cookie: bytes) -> str:
    return set_cookie.split(b"=", 1)[0].strip().decode("latin-1")


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


async def _with_overlay(
    request: Request, upstream: httpx.Response, editor_url: str, cookies: frozenset[str]
) -> Response:
    try:
        body = await upstream.aread()  # decoded: gzip, deflate (and br, zstd when their packages are installed)
    finally:
        await upstream.aclose()
    response = Response(content=insert_overlay(body), status_code=upstream.status_code)
    headers = _response_headers(upstream, editor_url, BODY_DESCRIBING, cookies)
    headers = [(name, allow_self(value) if name == b"content-security-policy" else value) for name, value in headers]
    response.raw_headers = [*headers, (b"content-length", str(len(response.body)).encode())]
    return response


def _passthrough(request: Request, upstream: httpx.Response, editor_url: str, cookies: frozenset[str]) -> Response:
    page_head = request.method == "HEAD" and upstream.status_code == 200 and _is_html(upstream)
    # A HEAD for a page cannot know the length the overlay gives the GET, so it announces none.
    headers = _response_headers(upstream, editor_url, BODY_DESCRIBING if page_head else frozenset(), cookies)
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
