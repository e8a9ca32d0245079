"""The public request-access form, the admin API that decides requests, and the set-password link page."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.errors import BadRequest, NotFoundError, SidecarError
from sidecar.web.context import check_same_origin, client_ip, json_object, own_origin, require, services
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
    context = {"values": values, "groups": groups, "error": error}
    return _public(page(request, "request_access.html", context, status_code=status))


async def request_access_page(request: Request) -> Response:
    return await _form_page(request, {})


async def submit_request(request: Request) -> Response:
    check_same_origin(request)
    requests = services(request).access_requests
    raw = await _form(request)
    values = {key: raw.get(key, "")[:4000] for key in FORM_FIELDS}
    if values["website"]:  # a bot filled the hidden field: look the same, keep nothing
        return _public(page(request, "request_access_done.html", {}))
    try:
        found = await requests.check(values)
        requests.throttle(client_ip(request), found.email)
    except SidecarError as error:
        return await _form_page(request, values, error.message, error.status)
    requests.submit(found, client_ip(request))
    await requests.mailer.flush()
    return _public(page(request, "request_access_done.html", {}))


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
    Route("/request-access/set-password/{secret}", set_password_page, methods=["GET"]),
    Route("/request-access/set-password/{secret}", set_password, methods=["POST"]),
]
