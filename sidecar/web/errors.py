"""One place that turns failures into responses: JSON `{"error": ...}` for the API, pages for browsers."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from sidecar.directory.base import Conflict, DirectoryError, InvalidName, NotFound
from sidecar.errors import SidecarError
from sidecar.mediamtx import MediaMTXError, MediaMTXNotFound, MediaMTXRejected, MediaMTXUnauthorized
from sidecar.storage_errors import StorageProblem, storage_problem
from sidecar.web.templating import page

log = logging.getLogger("sidecar.web")
# Machine-facing paths always answer JSON; everything else answers a page when a browser asks for HTML.
JSON_ONLY_PREFIXES = ("/api/", "/mediamtx/", "/.well-known/", "/metrics", "/auth/")
STORAGE_LOG_SECONDS = 10.0  # one log line per kind of storage problem this often: a full disk fails every write
_storage_logged: dict[str, float] = {}


def json_error_body(message: str, field: str | None = None) -> bytes:
    """The API's error shape, `{"error": ..., "field": ...}`, as bytes."""
    body: dict[str, str] = {"error": message}
    if field:
        body["field"] = field
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _wants_page(request: Request) -> bool:
    path = request.url.path
    return not path.startswith(JSON_ONLY_PREFIXES) and "text/html" in request.headers.get("accept", "")


def error_response(request: Request, status: int, message: str, field: str | None = None) -> Response:
    if _wants_page(request):
        svc = request.app.state.services
        if status == 401 and svc.sessions is not None:
            target = quote(request.url.path, safe="/")
            return RedirectResponse(f"/auth/login?next={target}", status_code=303)
        if status == 401:  # authentik mode: signing in happens at the outpost, not on a sidecar page
            message = "You are not signed in. Open the site's address again to sign in."
        context = {
            "status": status,
            "message": message,
            "admin_groups": svc.settings.admin_groups,
            "prefix": svc.settings.group_prefix,
        }
        return page(request, "error.html", context, status_code=status)
    headers = {"WWW-Authenticate": 'Bearer realm="sidecar"'} if status == 401 else None
    return Response(json_error_body(message, field), status_code=status, headers=headers, media_type="application/json")


async def sidecar_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SidecarError)
    return error_response(request, exc.status, exc.message, exc.field)


async def directory_error(request: Request, exc: Exception) -> Response:
    statuses: dict[type[Exception], int] = {NotFound: 404, Conflict: 409, InvalidName: 400}
    # Subclasses too: each directory refines these (an Authentik 404 is still NotFound).
    status = next((code for kind, code in statuses.items() if isinstance(exc, kind)), 503)
    if status == 503:
        log.warning("directory unavailable: %s", exc)
    return error_response(request, status, str(exc))


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {404: "Not found", 405: "Method not allowed", 413: "Request body too large"}
    return error_response(request, exc.status_code, messages.get(exc.status_code, exc.detail))


def _storage_problem(request: Request, exc: Exception) -> StorageProblem | None:
    services = getattr(request.app.state, "services", None)
    if services is None:
        return None
    settings = services.settings
    return storage_problem(exc, settings.data_dir, settings.database_path)


def _storage_response(request: Request, problem: StorageProblem) -> Response:
    """503 with the sentence: the caller may try again once the operator has fixed what the log line names."""
    now = time.monotonic()
    if now - _storage_logged.get(problem.kind, -STORAGE_LOG_SECONDS) >= STORAGE_LOG_SECONDS:
        _storage_logged[problem.kind] = now
        log.error("storage: %s (%s %s answered 503)", problem.operator, request.method, request.url.path)
    return error_response(request, 503, problem.public)


async def storage_error(request: Request, exc: Exception) -> Response:
    """SQLite's errors and the data dir's OS errors: a full, read-only or failing disk, a locked or damaged database.
    Anything else of those types is a bug and goes on to `unexpected_error`."""
    problem = _storage_problem(request, exc)
    if problem is None:
        raise exc
    return _storage_response(request, problem)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    problem = _storage_problem(request, exc)  # raised from a middleware, or wrapped in another error
    if problem is not None:
        return _storage_response(request, problem)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return Response(json_error_body("Internal error"), status_code=500, media_type="application/json")


async def mediamtx_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MediaMTXError)
    if isinstance(exc, MediaMTXNotFound):
        status = 404
    elif isinstance(exc, MediaMTXUnauthorized):
        status = 502
    elif isinstance(exc, MediaMTXRejected):
        status = 400
    else:
        status = 503
    who = getattr(request.state, "principal", None)
    if who is None or not who.is_admin:
        # MediaMTX's own words are for admins; everyone else learns only that it failed.
        return error_response(request, 503, "MediaMTX is not available right now; try again shortly")
    return error_response(request, status, f"MediaMTX: {exc}")


EXCEPTION_HANDLERS = {
    MediaMTXError: mediamtx_error,
    SidecarError: sidecar_error,
    DirectoryError: directory_error,
    HTTPException: http_error,
    sqlite3.Error: storage_error,
    OSError: storage_error,
    Exception: unexpected_error,
}
