"""The JSON API under /api/v1/: every page is built on it and automation uses it with X-API-Key."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.audit_text import SENTENCES, describe
from sidecar.errors import BadRequest
from sidecar.identity import split_groups
from sidecar.pending import pending_work
from sidecar.web.context import csrf_token, int_param, json_object, require, services
from sidecar.web.openapi import openapi_document


async def me(request: Request) -> Response:
    who = await require(request)
    svc = services(request)
    body = {
        "username": who.username,
        "role": who.role.value,
        "groups": svc.roles.managed(who.groups),
        "email": who.email,
        "name": who.name,
        "csrf_token": csrf_token(request, who),
    }
    return JSONResponse(body)


async def rules_list(request: Request) -> Response:
    await require(request, admin=True)
    rules = services(request).rules.all()
    return JSONResponse({"rules": [{"pattern": p, "groups": g} for p, g in rules.items()]})


async def rules_put(request: Request) -> Response:
    who = await require(request, admin=True)
    body = await json_object(request)
    pattern, groups = await services(request).rules.set(body.get("pattern"), body.get("groups"), who.username)
    return JSONResponse({"pattern": pattern, "groups": groups})


async def rules_delete(request: Request) -> Response:
    who = await require(request, admin=True)
    pattern = request.query_params.get("pattern", "")
    services(request).rules.delete(pattern, who.username)
    return JSONResponse({"deleted": pattern})


async def explain(request: Request) -> Response:
    await require(request, admin=True)
    params = request.query_params
    path = params.get("path", "")
    if not path:
        raise BadRequest("path is required", field="path")
    groups = params.get("groups")
    result = await services(request).rules.explain(
        path,
        params.get("action", "read"),
        username=params.get("user") or None,
        groups=sorted(split_groups(groups)) if groups is not None else None,
    )
    return JSONResponse(result)


async def users_list(request: Request) -> Response:
    who = await require(request, admin=True)
    page, refusals = await services(request).users.list_people(
        request.query_params.get("search", "")[:100],
        int_param(request, "page", 1),
        int_param(request, "page_size", 50),
        who,
    )
    # `account_actions` says whether activation and password recovery are offered for that person (never for
    # directory administrators, nor for TAK users unless the caller administers the directory).
    users = [
        {
            "username": u.username,
            "email": u.email,
            "name": u.name,
            "is_active": u.is_active,
            "groups": list(u.groups),
            "account_actions": u.username not in refusals,
            **({"account_note": refusals[u.username]} if u.username in refusals else {}),
        }
        for u in page.users
    ]
    return JSONResponse({"users": users, "total": page.total, "page": page.page, "page_size": page.page_size})


async def user_patch(request: Request) -> Response:
    who = await require(request, admin=True)
    active = (await json_object(request)).get("is_active")
    if not isinstance(active, bool):
        raise BadRequest("is_active must be true or false", field="is_active")
    username = request.path_params["username"]
    await services(request).users.set_active(username, active, who)
    return JSONResponse({"username": username, "is_active": active})


async def membership(request: Request) -> Response:
    who = await require(request, admin=True)
    username, group = request.path_params["username"], request.path_params["group"]
    member = request.method in ("PUT", "POST")  # POST is accepted as "add" for clients that cannot send PUT
    changed = await services(request).users.set_membership(username, group, member, who)
    return JSONResponse({"username": username, "group": group, "member": member, "changed": changed})


async def groups_list(request: Request) -> Response:
    await require(request, admin=True)
    groups = await services(request).users.list_groups()
    return JSONResponse({"groups": [{"name": g.name, "member_count": g.member_count} for g in groups]})


async def groups_create(request: Request) -> Response:
    who = await require(request, admin=True)
    name = (await json_object(request)).get("name")
    if not isinstance(name, str):
        raise BadRequest("name must be a string", field="name")
    created = await services(request).users.create_group(name, who.username)
    return JSONResponse({"name": name, "created": created}, status_code=201 if created else 200)


async def audit(request: Request) -> Response:
    await require(request, admin=True)
    limit = min(int_param(request, "limit", 100), 1000)
    params = request.query_params
    events = services(request).store.list_audit(
        limit=limit,
        action=params.get("action") or None,
        actor=params.get("actor") or None,
        target=params.get("target") or None,
    )
    body = [
        {
            "id": e.id,
            "ts": e.ts,
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "detail": e.detail,
            "text": describe(e.actor, e.action, e.target, e.detail),
        }
        for e in events
    ]
    return JSONResponse({"events": body, "actions": sorted(SENTENCES)})


async def pending(request: Request) -> Response:
    await require(request, admin=True)
    svc = services(request)
    return JSONResponse({"pending": pending_work(svc.store, svc.media_auth.sessions)})


async def recovery_link(request: Request) -> Response:
    who = await require(request, admin=True)
    link = await services(request).users.recovery_link(request.path_params["username"], who)
    return JSONResponse({"link": link})


async def recovery_email(request: Request) -> Response:
    who = await require(request, admin=True)
    svc = services(request)
    stage = (await json_object(request)).get("email_stage") if await request.body() else None
    if stage is not None and not isinstance(stage, str):
        raise BadRequest("email_stage must be a string", field="email_stage")
    # Without one in the body, the configured stage (SIDECAR_AUTHENTIK_RECOVERY_EMAIL_STAGE) when there is one.
    chosen = stage or svc.settings.authentik_recovery_email_stage
    await svc.users.send_recovery_email(request.path_params["username"], chosen, who)
    return JSONResponse({"sent": True})


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document())


routes = [
    Route("/api/v1/me", me),
    Route("/api/v1/rules", rules_list, methods=["GET"]),
    Route("/api/v1/rules", rules_put, methods=["PUT"]),
    Route("/api/v1/rules", rules_delete, methods=["DELETE"]),
    Route("/api/v1/explain", explain),
    Route("/api/v1/users", users_list),
    Route("/api/v1/users/{username}", user_patch, methods=["PATCH"]),
    Route("/api/v1/users/{username}/groups/{group}", membership, methods=["PUT", "POST", "DELETE"]),
    Route("/api/v1/groups", groups_list, methods=["GET"]),
    Route("/api/v1/groups", groups_create, methods=["POST"]),
    Route("/api/v1/users/{username}/recovery-link", recovery_link, methods=["POST"]),
    Route("/api/v1/users/{username}/recovery-email", recovery_email, methods=["POST"]),
    Route("/api/v1/audit", audit),
    Route("/api/v1/pending-work", pending),
    Route("/api/v1/openapi.json", openapi),
]
