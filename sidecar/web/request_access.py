"""The public request-access form, the admin API that decides requests, and the set-password link page."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from sidecar.errors import BadRequest, NotFoundError, SidecarError
from sidecar.web.context import (
    check_form_token,
    check_same_origin,
    client_ip,
    form_token,
    json_object,
    own_origin,
    principal,
    require,
    services,
)
from sidecar.web.templating import page

PUBLIC_HEADERS = {"Referrer-Policy": "same-origin", "Cache-Control": "no-store", "X-Robots-Tag": "noindex"}
FORM_FIELDS = ("name", "username", "email", "org", "reason", "group", "website")
GONE = "This link does not exist, has expired or was already used."


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


def _public(response: Response) -> Response:
    response.headers.update(PUBLIC_HEADERS)
    return response


async def _form_page(request: Request, values: dict[str, str], error: str = "", status: int = 200) -> Response:
    groups = await services(request).access_requests.requestable_groups()
    context = {"values": values, "groups": groups, "error": error, "form_token": form_token(request, "request-access")}
    return _public(page(request, "request_access.html", context, status_code=status))


async def request_access_page(request: Request) -> Response:
    return await _form_page(request, {})


async def submit_request(request: Request) -> Response:
    check_same_origin(request)
    requests = services(request).access_requests
    raw = await _form(request)
    values = {key: raw.get(key, "")[:4000] for key in FORM_FIELDS}
    try:
        check_form_token(request, "request-access", raw.get("form_token", ""))
    except SidecarError as error:
        return await _form_page(request, values, error.message, error.status)
    if values["website"]:  # a bot filled the hidden field: look the same, keep nothing
        return _public(page(request, "request_access_done.html", {"confirming": requests.confirming}))
    try:
        found = await requests.check(values)
        requests.throttle(client_ip(request))
    except SidecarError as error:
        return await _form_page(request, values, error.message, error.status)
    await requests.submit(found, client_ip(request))
    return _public(page(request, "request_access_done.html", {"confirming": requests.confirming}))


def _request_id(request: Request) -> int:
    raw = request.path_params["id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise NotFoundError("no access request with this id", field="id")
    return int(raw)


async def list_requests(request: Request) -> Response:
    await require(request, admin=True)
    return JSONResponse({"requests": services(request).access_requests.list()})


async def approve_request(request: Request) -> Response:
    who = await require(request, admin=True)
    body = await json_object(request)
    svc = services(request)
    base_url = svc.settings.public_url or own_origin(request)
    answer = await svc.access_requests.approve(_request_id(request), body.get("groups"), who.username, base_url)
    return JSONResponse(answer, headers={"Cache-Control": "no-store"})


async def reject_request(request: Request) -> Response:
    who = await require(request, admin=True)
    body = await json_object(request)
    answer = await services(request).access_requests.reject(_request_id(request), body.get("message"), who.username)
    return JSONResponse(answer)


def _gone(request: Request) -> Response:
    return _public(page(request, "error.html", {"status": 404, "message": GONE}, status_code=404))


async def review_link(request: Request) -> Response:
    """The link in an admin's notification email: spent once by a signed-in admin, then on to the Users page.

    Caddy serves /request-access/* without forward auth. In local mode the sidecar's own session cookie still
    says who is asking, so the link is spent only when an admin opens it; anyone else is sent to sign in (or shown
    403) and the link stays valid. In Authentik mode the outpost's identity is not present on this public path, so
    nobody here can be recognised as an admin: a valid link only redirects to /users, which sits behind forward
    auth and itself requires the admin session; the link is not spent there (it still expires after 7 days).
    """
    svc = services(request)
    requests = svc.access_requests
    secret = request.path_params["secret"]
    request_id = requests.review_target(secret)
    if request_id is None:
        return _gone(request)
    if svc.settings.mode != "local":
        return _public(RedirectResponse(f"/users#request-{request_id}", status_code=303))
    who = await principal(request)
    if not who.authenticated:
        return _public(RedirectResponse(f"/auth/login?next={quote(request.url.path, safe='/')}", status_code=302))
    if not who.is_admin:
        context = {"status": 403, "message": "Only admins can review access requests."}
        return _public(page(request, "error.html", context, status_code=403))
    used = requests.use_review_link(secret, who.username)
    if used is None:
        return _gone(request)
    return _public(RedirectResponse(f"/users#request-{used}", status_code=303))


async def confirm_page(request: Request) -> Response:
    """The link in the confirmation mail shows a button; only the POST confirms (mail scanners follow links)."""
    found = services(request).access_requests.confirmable(request.path_params["secret"])
    if found is None:
        return _gone(request)
    return _public(page(request, "request_access_confirm.html", {"done": False, "request": found}))


async def confirm(request: Request) -> Response:
    check_same_origin(request)
    try:
        services(request).access_requests.throttle_confirmations(client_ip(request))
    except SidecarError as error:
        context = {"status": error.status, "message": error.message}
        return _public(page(request, "error.html", context, status_code=error.status))
    if await services(request).access_requests.confirm(request.path_params["secret"]) is None:
        return _gone(request)
    return _public(page(request, "request_access_confirm.html", {"done": True}))


async def set_password_page(request: Request) -> Response:
    username = services(request).access_requests.link_user(request.path_params["secret"])
    if username is None:
        return _public(page(request, "error.html", {"status": 404, "message": GONE}, status_code=404))
    return _public(page(request, "set_password.html", {"username": username, "error": ""}))


async def set_password(request: Request) -> Response:
    check_same_origin(request)
    requests = services(request).access_requests
    secret = request.path_params["secret"]
    form = await _form(request)
    password = form.get("password", "")
    try:
        if password != form.get("confirm", password):
            raise BadRequest("the two passwords differ", field="confirm")
        username = await requests.set_password(secret, password)
    except NotFoundError:
        return _public(page(request, "error.html", {"status": 404, "message": GONE}, status_code=404))
    except BadRequest as error:
        username = requests.link_user(secret) or ""
        context = {"username": username, "error": error.message}
        return _public(page(request, "set_password.html", context, status_code=400))
    return _public(page(request, "set_password.html", {"username": username, "done": True}))


routes = [
    Route("/request-access", request_access_page, methods=["GET"]),
    Route("/request-access", submit_request, methods=["POST"]),
    Route("/api/v1/access-requests", list_requests, methods=["GET"]),
    Route("/api/v1/access-requests/{id}/approve", approve_request, methods=["POST"]),
    Route("/api/v1/access-requests/{id}/reject", reject_request, methods=["POST"]),
    Route("/request-access/review/{secret}", review_link, methods=["GET"]),
    Route("/request-access/confirm/{secret}", confirm_page, methods=["GET"]),
    Route("/request-access/confirm/{secret}", confirm, methods=["POST"]),
    Route("/request-access/set-password/{secret}", set_password_page, methods=["GET"]),
    Route("/request-access/set-password/{secret}", set_password, methods=["POST"]),
]
