"""A small stateful stand-in for Authentik's API (2026.5 `/api/v3`): users, groups, memberships, passwords, recovery,
and the flows, stages, prompts, flow-stage bindings and brands a recovery flow is built from.

It follows Authentik's shapes: `{"pagination": {...}, "results": [...], "autocomplete": {}}` lists, `{field: [..]}`
validation errors (400), `{"detail": ...}` for a refused token (403) and unknown objects (404).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TOKEN = "fake-authentik-token"
BASE = "http://authentik.test"
WHEN = "2026-05-01T10:00:00Z"
MAX_PAGE_SIZE = 100


@dataclass
class FakeGroup:
    pk: str
    num_pk: int
    name: str
    members: set[int] = field(default_factory=set)
    superuser: bool = False  # like `authentik Admins`: its members are superusers
    parent: str | None = None  # a parent group's pk: members of a superuser group's children are superusers too


@dataclass
class FakeUser:
    pk: int
    username: str
    name: str = ""
    email: str = ""
    is_active: bool = True
    path: str = "users"
    type: str = "internal"
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    password: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


# kind in the URL -> (component, verbose name, model name)
STAGE_KINDS: dict[str, tuple[str, str, str]] = {
    "identification": ("ak-stage-identification-form", "Identification Stage", "identificationstage"),
    "email": ("ak-stage-email-form", "Email Stage", "emailstage"),
    "prompt/stages": ("ak-stage-prompt-form", "Prompt Stage", "promptstage"),
    "user_write": ("ak-stage-user-write-form", "User Write Stage", "userwritestage"),
    "user_login": ("ak-stage-user-login-form", "User Login Stage", "userloginstage"),
    "password": ("ak-stage-password-form", "Password Stage", "passwordstage"),
}
WRITE_ONLY = {"password"}  # the email stage's SMTP password is never sent back


@dataclass
class FakeFlow:
    pk: str
    slug: str
    name: str
    title: str
    designation: str


@dataclass
class FakeStage:
    pk: str
    kind: str
    name: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakePrompt:
    pk: str
    name: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeBinding:
    pk: str
    target: str
    stage: str
    order: int


@dataclass
class FakeBrand:
    pk: str
    domain: str
    default: bool = False
    flow_recovery: str | None = None
    flow_authentication: str | None = None


@dataclass
class Seen:
    method: str
    path: str
    query: list[tuple[str, str]]
    body: Any


class FakeAuthentik:
    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.users: dict[int, FakeUser] = {}
        self.groups: dict[str, FakeGroup] = {}
        self.requests: list[Seen] = []
        self.recovery_emails: list[tuple[str, str]] = []  # (username, email stage)
        self.flows: dict[str, FakeFlow] = {}
        self.stages: dict[str, FakeStage] = {}
        self.prompts: dict[str, FakePrompt] = {}
        self.bindings: dict[str, FakeBinding] = {}
        self.brands: dict[str, FakeBrand] = {}
        stage_routes = [
            Route(f"/api/v3/stages/{kind}/", self._stages_route(kind), methods=["GET", "POST"]) for kind in STAGE_KINDS
        ]
        self.app = Starlette(
            routes=[
                Route("/api/v3/core/users/", self.users_list_or_create, methods=["GET", "POST"]),
                Route("/api/v3/core/users/{id:int}/", self.user_detail, methods=["GET", "PATCH"]),
                Route("/api/v3/core/users/{id:int}/set_password/", self.set_password, methods=["POST"]),
                Route("/api/v3/core/users/{id:int}/recovery/", self.recovery, methods=["POST"]),
                Route("/api/v3/core/users/{id:int}/recovery_email/", self.recovery_email, methods=["POST"]),
                Route("/api/v3/core/groups/", self.groups_list_or_create, methods=["GET", "POST"]),
                Route("/api/v3/core/groups/{pk}/add_user/", self.group_add_user, methods=["POST"]),
                Route("/api/v3/core/groups/{pk}/remove_user/", self.group_remove_user, methods=["POST"]),
                Route("/api/v3/core/brands/", self.brands_list, methods=["GET"]),
                Route("/api/v3/core/brands/{pk}/", self.brand_detail, methods=["GET", "PATCH"]),
                Route("/api/v3/flows/instances/", self.flows_list_or_create, methods=["GET", "POST"]),
                Route("/api/v3/flows/bindings/", self.bindings_list_or_create, methods=["GET", "POST"]),
                Route("/api/v3/stages/prompt/prompts/", self.prompts_list_or_create, methods=["GET", "POST"]),
                *stage_routes,
            ]
        )

    # --- state ----------------------------------------------------------------------------------------------

    def add_group(self, name: str, *, superuser: bool = False, parent: str | None = None) -> FakeGroup:
        parent_pk = None if parent is None else self.group_named(parent).pk  # type: ignore[union-attr]
        group = FakeGroup(
            pk=str(uuid.uuid4()), num_pk=len(self.groups) + 1000, name=name, superuser=superuser, parent=parent_pk
        )
        self.groups[group.pk] = group
        return group

    def add_user(self, username: str, *groups: str, **values: Any) -> FakeUser:
        user = FakeUser(pk=max(self.users, default=0) + 1, username=username, **values)
        self.users[user.pk] = user
        for name in groups:
            group = self.group_named(name) or self.add_group(name)
            group.members.add(user.pk)
        return user

    def add_flow(self, slug: str, designation: str, *, name: str = "", title: str = "") -> FakeFlow:
        flow = FakeFlow(str(uuid.uuid4()), slug, name or slug, title or slug, designation)
        self.flows[flow.pk] = flow
        return flow

    def add_stage(self, kind: str, name: str, **values: Any) -> FakeStage:
        stage = FakeStage(str(uuid.uuid4()), kind, name, values)
        self.stages[stage.pk] = stage
        return stage

    def add_binding(self, flow: FakeFlow, stage: FakeStage, order: int) -> FakeBinding:
        binding = FakeBinding(str(uuid.uuid4()), flow.pk, stage.pk, order)
        self.bindings[binding.pk] = binding
        return binding

    def add_brand(self, domain: str, **values: Any) -> FakeBrand:
        brand = FakeBrand(str(uuid.uuid4()), domain, **values)
        self.brands[brand.pk] = brand
        return brand

    def flow_named(self, slug: str) -> FakeFlow | None:
        return next((flow for flow in self.flows.values() if flow.slug == slug), None)

    def stage_named(self, name: str) -> FakeStage | None:
        return next((stage for stage in self.stages.values() if stage.name == name), None)

    def bindings_of(self, flow: FakeFlow) -> list[FakeBinding]:
        return sorted((b for b in self.bindings.values() if b.target == flow.pk), key=lambda b: b.order)

    def default_brand(self) -> FakeBrand | None:
        return next((brand for brand in self.brands.values() if brand.default), None)

    def user_named(self, username: str) -> FakeUser | None:
        return next((user for user in self.users.values() if user.username == username), None)

    def group_named(self, name: str) -> FakeGroup | None:
        return next((group for group in self.groups.values() if group.name == name), None)

    def makes_superuser(self, group: FakeGroup) -> bool:
        """Authentik: a group's members are superusers when it, or any group above it, is a superuser group."""
        seen: set[str] = set()
        current: FakeGroup | None = group
        while current is not None and current.pk not in seen:
            if current.superuser:
                return True
            seen.add(current.pk)
            current = self.groups.get(current.parent) if current.parent else None
        return False

    def groups_of(self, user: FakeUser) -> list[FakeGroup]:
        return sorted((g for g in self.groups.values() if user.pk in g.members), key=lambda g: g.name)

    def writes(self) -> list[Seen]:
        return [seen for seen in self.requests if seen.method != "GET"]

    # --- serializers ----------------------------------------------------------------------------------------

    def user_json(self, user: FakeUser, include_groups: bool = True) -> dict[str, Any]:
        groups = self.groups_of(user)
        data: dict[str, Any] = {
            "pk": user.pk,
            "username": user.username,
            "name": user.name,
            "is_active": user.is_active,
            "last_login": None,
            "date_joined": WHEN,
            "is_superuser": any(self.makes_superuser(group) for group in groups),
            "groups": [group.pk for group in groups],
            "groups_obj": [
                {"pk": g.pk, "num_pk": g.num_pk, "name": g.name, "is_superuser": g.superuser, "attributes": {}}
                for g in groups
            ]
            if include_groups
            else None,
            "roles": [],
            "roles_obj": [],
            "email": user.email,
            "avatar": "data:image/svg+xml;base64,",
            "attributes": dict(user.attributes),
            "uid": f"uid-{user.pk}",
            "path": user.path,
            "type": user.type,
            "uuid": user.uuid,
            "password_change_date": WHEN,
            "last_updated": WHEN,
        }
        return data

    def group_json(self, group: FakeGroup, include_users: bool = True) -> dict[str, Any]:
        members = sorted(group.members)
        return {
            "pk": group.pk,
            "num_pk": group.num_pk,
            "name": group.name,
            "is_superuser": group.superuser,
            "parents": [],
            "parents_obj": [],
            "users": members,
            "users_obj": [
                {"pk": pk, "username": self.users[pk].username, "name": self.users[pk].name, "uid": f"uid-{pk}"}
                for pk in members
            ]
            if include_users
            else None,
            "attributes": {},
            "roles": [],
            "roles_obj": [],
            "inherited_roles_obj": None,
            "children": [],
            "children_obj": None,
        }

    def flow_set_json(self, flow: FakeFlow) -> dict[str, Any]:
        return {
            "pk": flow.pk,
            "policybindingmodel_ptr_id": flow.pk,
            "name": flow.name,
            "slug": flow.slug,
            "title": flow.title,
            "designation": flow.designation,
            "background_url": "/static/dist/assets/images/flow_background.jpg",
            "policy_engine_mode": "any",
            "compatibility_mode": False,
            "export_url": f"/api/v3/flows/instances/{flow.slug}/export/",
            "layout": "stacked",
            "denied_action": "message_continue",
        }

    def flow_json(self, flow: FakeFlow) -> dict[str, Any]:
        data = self.flow_set_json(flow)
        data.update(
            background="",
            background_themed_urls=None,
            stages=[binding.stage for binding in self.bindings_of(flow)],
            policies=[],
            cache_count=0,
            authentication="none",
        )
        return data

    def stage_json(self, stage: FakeStage) -> dict[str, Any]:
        component, verbose, model = STAGE_KINDS[stage.kind]
        flows = {b.target for b in self.bindings.values() if b.stage == stage.pk}
        module = stage.kind.split("/")[0]
        return {
            "pk": stage.pk,
            "name": stage.name,
            "component": component,
            "verbose_name": verbose,
            "verbose_name_plural": verbose + "s",
            "meta_model_name": f"authentik_stages_{module}.{model}",
            "flow_set": [self.flow_set_json(self.flows[pk]) for pk in sorted(flows)],
            **{key: value for key, value in stage.values.items() if key not in WRITE_ONLY},
        }

    def prompt_json(self, prompt: FakePrompt) -> dict[str, Any]:
        stages = [s for s in self.stages.values() if s.kind == "prompt/stages" and prompt.pk in s.values["fields"]]
        return {
            "pk": prompt.pk,
            "name": prompt.name,
            **prompt.values,
            "prompt_stages_obj": [self.stage_json(stage) for stage in stages],
        }

    def binding_json(self, binding: FakeBinding) -> dict[str, Any]:
        stage = self.stage_json(self.stages[binding.stage])
        base = ("pk", "name", "component", "verbose_name", "verbose_name_plural", "meta_model_name", "flow_set")
        return {
            "pk": binding.pk,
            "policybindingmodel_ptr_id": binding.pk,
            "target": binding.target,
            "stage": binding.stage,
            "stage_obj": {key: stage[key] for key in base},
            "evaluate_on_plan": False,
            "re_evaluate_policies": True,
            "order": binding.order,
            "policy_engine_mode": "any",
            "invalid_response_action": "retry",
        }

    def brand_json(self, brand: FakeBrand) -> dict[str, Any]:
        return {
            "brand_uuid": brand.pk,
            "domain": brand.domain,
            "default": brand.default,
            "branding_title": "authentik",
            "branding_logo": "/static/dist/assets/icons/icon_left_brand.svg",
            "branding_favicon": "/static/dist/assets/icons/icon.png",
            "branding_custom_css": "",
            "branding_default_flow_background": "/static/dist/assets/images/flow_background.jpg",
            "flow_authentication": brand.flow_authentication,
            "flow_invalidation": None,
            "flow_recovery": brand.flow_recovery,
            "flow_unenrollment": None,
            "flow_user_settings": None,
            "flow_device_code": None,
            "flow_lockdown": None,
            "default_application": None,
            "web_certificate": None,
            "client_certificates": [],
            "attributes": {},
        }

    # --- routes ---------------------------------------------------------------------------------------------

    async def _admit(self, request: Request) -> Any:
        """Record the request and check its token; the parsed JSON body, or a 403 response."""
        raw = await request.body()
        body = json.loads(raw) if raw else None
        self.requests.append(Seen(request.method, request.url.path, list(request.query_params.multi_items()), body))
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return JSONResponse({"detail": "Token invalid/expired", "code": "authentication_failed"}, 403)
        return body

    async def users_list_or_create(self, request: Request) -> Response:
        body = await self._admit(request)
        if isinstance(body, Response):
            return body
        if request.method == "POST":
            return self._create_user(body)
        query = request.query_params
        found = sorted(self.users.values(), key=lambda user: user.username)
        if "username" in query:
            found = [user for user in found if user.username == query["username"]]
        wanted_groups = query.getlist("groups_by_name")
        if wanted_groups:  # Authentik ORs repeated names
            found = [u for u in found if any(g.name in wanted_groups for g in self.groups_of(u))]
        if "is_active" in query:
            found = [user for user in found if user.is_active == (query["is_active"] == "true")]
        if query.get("search"):
            term = query["search"].lower()
            found = [
                u for u in found if term in u.username.lower() or term in u.name.lower() or term in u.email.lower()
            ]
        include = query.get("include_groups", "true") == "true"
        return self._page(request, [self.user_json(user, include) for user in found])

    def _create_user(self, body: Any) -> Response:
        errors: dict[str, list[str]] = {}
        username = body.get("username") if isinstance(body, dict) else None
        if not isinstance(username, str) or not username:
            errors["username"] = ["This field is required."]
        elif self.user_named(username) is not None:
            errors["username"] = ["This field must be unique."]
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            errors["name"] = ["This field is required."]
        if errors or not isinstance(username, str):
            return JSONResponse(errors, 400)
        user = self.add_user(
            username,
            name=body["name"],
            email=body.get("email", ""),
            is_active=body.get("is_active", True),
            path=body.get("path", "users"),
            type=body.get("type", "internal"),
        )
        if isinstance(body.get("attributes"), dict):
            user.attributes = dict(body["attributes"])
        return JSONResponse(self.user_json(user), 201)

    def _user_or_404(self, request: Request) -> FakeUser | Response:
        user = self.users.get(request.path_params["id"])
        if user is None:
            return JSONResponse({"detail": "No User matches the given query."}, 404)
        return user

    async def user_detail(self, request: Request) -> Response:
        body = await self._admit(request)
        if isinstance(body, Response):
            return body
        user = self._user_or_404(request)
        if isinstance(user, Response):
            return user
        if request.method == "PATCH" and isinstance(body, dict):
            if "is_active" in body:
                user.is_active = bool(body["is_active"])
            if "name" in body:
                user.name = str(body["name"])
        return JSONResponse(self.user_json(user))

    async def set_password(self, request: Request) -> Response:
        body = await self._admit(request)
        if isinstance(body, Response):
            return body
        user = self._user_or_404(request)
        if isinstance(user, Response):
            return user
        if not isinstance(body, dict) or not body.get("password"):
            return JSONResponse({"password": ["This field may not be blank."]}, 400)
        user.password = body["password"]
        return Response(status_code=204)

    async def recovery(self, request: Request) -> Response:
        body = await self._admit(request)
        if isinstance(body, Response):
            return body
        user = self._user_or_404(request)
        if isinstance(user, Response):
            return user
        return JSONResponse({"link": f"{BASE}/if/flow/recovery/?flow_token=token-{user.pk}"})

    async def recovery_email(self, request: Request) -> Response:
        body = await self._admit(request)
        if isinstance(body, Response):
            return body
        user = self._user_or_404(request)
        if isinstance(user, Response):
            return user
        stage = (body or {}).get("email_stage") or request.query_params.get("email_stage")
        if not stage:
            return JSONResponse({"email_stage": ["This field is required."]}, 400)
        if not user.email:
            return JSONResponse({"non_field_errors": ["User does not have an email address set."]}, 400)
        self.recovery_emails.append((user.username, stage))
        return Response(status_code=204)

    async def groups_list_or_create(self, request: Request) -> Response:
        body = await self._admit(request)
        if isinstance(body, Response):
            return body
        if request.method == "POST":
            name = body.get("name") if isinstance(body, dict) else None
            if not isinstance(name, str) or not name:
                return JSONResponse({"name": ["This field is required."]}, 400)
            if self.group_named(name) is not None:
                return JSONResponse({"name": ["group with this name already exists."]}, 400)
            return JSONResponse(self.group_json(self.add_group(name)), 201)
        query = request.query_params
        found = sorted(self.groups.values(), key=lambda group: group.name)
        if "name" in query:
            found = [group for group in found if group.name == query["name"]]
        if query.get("search"):
            found = [group for group in found if query["search"].lower() in group.name.lower()]
        include = query.get("include_users", "true") == "true"
        return self._page(request, [self.group_json(group, include) for group in found])

    async def group_add_user(self, request: Request) -> Response:
        return await self._membership(request, add=True)

    async def group_remove_user(self, request: Request) -> Response:
        return await self._membership(request, add=False)

    async def _membership(self, request: Request, *, add: bool) -> Response:
        body = await self._admit(request)
        if isinstance(body, Response):
            return body
        group = self.groups.get(request.path_params["pk"])
        if group is None:
            return JSONResponse({"detail": "No Group matches the given query."}, 404)
        pk = body.get("pk") if isinstance(body, dict) else None
        if not isinstance(pk, int) or pk not in self.users:
            return JSONResponse({"detail": "No User matches the given query."}, 404)
        if add:
            group.members.add(pk)
        else:
            group.members.discard(pk)
        return Response(status_code=204)

    async def brands_list(self, request: Request) -> Response:
        body = await self._admit(request)
        if isinstance(body, Response):
            return body
        found = sorted(self.brands.values(), key=lambda brand: brand.domain)
        if "default" in request.query_params:
            found = [brand for brand in found if brand.default == (request.query_params["default"] == "true")]
        return self._page(request, [self.brand_json(brand) for brand in found])

    async def brand_detail(self, request: Request) -> Response:
        body = await self._admit(request)
        if isinstance(body, Response):
            return body
        brand = self.brands.get(request.path_params["pk"])
        if brand is None:
            return JSONResponse({"detail": "No Brand matches the given query."}, 404)
        if request.method == "PATCH" and isinstance(body, dict) and "flow_recovery" in body:
            flow = body["flow_recovery"]
            if flow is not None and flow not in self.flows:
                return JSONResponse({"flow_recovery": [f'Invalid pk "{flow}" - object does not exist.']}, 400)
            brand.flow_recovery = flow
        return JSONResponse(self.brand_json(brand))

    async def flows_list_or_create(self, request: Request) -> Response:
        body = await self._admit(request)
        if isinstance(body, Response):
            return body
        if request.method == "POST":
            errors = _required(body, "name", "slug", "title", "designation")
            if not errors and self.flow_named(body["slug"]) is not None:
                errors["slug"] = ["flow with this slug already exists."]
            if errors:
                return JSONResponse(errors, 400)
            flow = self.add_flow(body["slug"], body["designation"], name=body["name"], title=body["title"])
            return JSONResponse(self.flow_json(flow), 201)
        query = request.query_params
        found = sorted(self.flows.values(), key=lambda flow: flow.slug)
        for key in ("slug", "designation", "name"):
            if key in query:
                found = [flow for flow in found if getattr(flow, key) == query[key]]
        return self._page(request, [self.flow_json(flow) for flow in found])

    async def bindings_list_or_create(self, request: Request) -> Response:
        body = await self._admit(request)
        if isinstance(body, Response):
            return body
        if request.method == "POST":
            errors = _required(body, "target", "stage")
            if not isinstance(body, dict) or not isinstance(body.get("order"), int):
                errors["order"] = ["This field is required."]
            if not errors and body["target"] not in self.flows:
                errors["target"] = [f'Invalid pk "{body["target"]}" - object does not exist.']
            if not errors and body["stage"] not in self.stages:
                errors["stage"] = [f'Invalid pk "{body["stage"]}" - object does not exist.']
            if not errors and any(
                b.target == body["target"] and b.order == body["order"] for b in self.bindings.values()
            ):
                errors["non_field_errors"] = ["The fields target, stage, order must make a unique set."]
            if errors:
                return JSONResponse(errors, 400)
            binding = self.add_binding(self.flows[body["target"]], self.stages[body["stage"]], body["order"])
            return JSONResponse(self.binding_json(binding), 201)
        query = request.query_params
        found = sorted(self.bindings.values(), key=lambda binding: (binding.target, binding.order))
        if "target" in query:
            found = [binding for binding in found if binding.target == query["target"]]
        return self._page(request, [self.binding_json(binding) for binding in found])

    async def prompts_list_or_create(self, request: Request) -> Response:
        body = await self._admit(request)
        if isinstance(body, Response):
            return body
        if request.method == "POST":
            errors = _required(body, "name", "field_key", "label", "type")
            if not errors and any(prompt.name == body["name"] for prompt in self.prompts.values()):
                errors["name"] = ["prompt with this name already exists."]
            if errors:
                return JSONResponse(errors, 400)
            values = {key: value for key, value in body.items() if key != "name"}
            prompt = FakePrompt(str(uuid.uuid4()), body["name"], values)
            self.prompts[prompt.pk] = prompt
            return JSONResponse(self.prompt_json(prompt), 201)
        found = sorted(self.prompts.values(), key=lambda prompt: prompt.name)
        if "name" in request.query_params:
            found = [prompt for prompt in found if prompt.name == request.query_params["name"]]
        return self._page(request, [self.prompt_json(prompt) for prompt in found])

    def _stages_route(self, kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def route(request: Request) -> Response:
            body = await self._admit(request)
            if isinstance(body, Response):
                return body
            if request.method == "POST":
                errors = _required(body, "name")
                if kind == "prompt/stages" and not isinstance((body or {}).get("fields"), list):
                    errors["fields"] = ["This field is required."]
                if not errors and self.stage_named(body["name"]) is not None:
                    errors["name"] = ["stage with this name already exists."]
                if errors:
                    return JSONResponse(errors, 400)
                values = {key: value for key, value in body.items() if key != "name"}
                return JSONResponse(self.stage_json(self.add_stage(kind, body["name"], **values)), 201)
            found = sorted((s for s in self.stages.values() if s.kind == kind), key=lambda stage: stage.name)
            if "name" in request.query_params:
                found = [stage for stage in found if stage.name == request.query_params["name"]]
            return self._page(request, [self.stage_json(stage) for stage in found])

        return route

    def _page(self, request: Request, items: list[dict[str, Any]]) -> Response:
        try:
            page = int(request.query_params.get("page", "1"))
            size = min(int(request.query_params.get("page_size", "20")), MAX_PAGE_SIZE)
        except ValueError:
            return JSONResponse({"detail": "Invalid page."}, 404)
        count = len(items)
        total_pages = max(1, math.ceil(count / size))
        if page < 1 or page > total_pages:
            return JSONResponse({"detail": "Invalid page."}, 404)
        start = (page - 1) * size
        results = items[start : start + size]
        pagination = {
            "next": page + 1 if page < total_pages else 0,
            "previous": page - 1 if page > 1 else 0,
            "count": count,
            "current": page,
            "total_pages": total_pages,
            "start_index": start + 1 if results else 0,
            "end_index": start + len(results),
        }
        return JSONResponse({"pagination": pagination, "results": results, "autocomplete": {}})


def _required(body: Any, *names: str) -> dict[str, list[str]]:
    """Django REST framework's answer to missing or blank required fields."""
    if not isinstance(body, dict):
        return {"non_field_errors": ["Invalid data. Expected a dictionary, but got str."]}
    return {
        name: ["This field is required."] for name in names if not isinstance(body.get(name), str) or not body[name]
    }


def create_fake_authentik(token: str = TOKEN) -> FakeAuthentik:
    """A fake seeded like a site TAK Portal also manages: `tak_*` groups next to the sidecar's `vid_*` ones."""
    fake = FakeAuthentik(token)
    fake.add_group("authentik Admins", superuser=True)
    for name in ("tak_admin", "tak_ops", "vid_admin", "vid_private", "vid_public"):
        fake.add_group(name)
    fake.add_user("akadmin", "authentik Admins", name="authentik Default Admin", email="root@example.org")
    fake.add_user("alice", "vid_admin", name="Alice", email="alice@example.org")
    fake.add_user("bob", "vid_public", "tak_ops", name="Bob", email="bob@example.org")
    fake.add_user("carol", "tak_admin", name="Carol", email="carol@example.org")
    fake.add_user("dave", name="Dave", is_active=False)
    login = fake.add_flow("default-authentication-flow", "authentication", title="Welcome to authentik!")
    identification = fake.add_stage("identification", "default-authentication-identification", user_fields=["username"])
    fake.add_binding(login, identification, 10)
    fake.add_brand("authentik-default", default=True, flow_authentication=login.pk)
    return fake


class SplitTransport(httpx.AsyncBaseTransport):
    """Sends requests for the named hosts to their own transport (a fake's ASGI app), the rest to `default`."""

    def __init__(self, by_host: dict[str, httpx.AsyncBaseTransport], default: httpx.AsyncBaseTransport) -> None:
        self.by_host = by_host
        self.default = default

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.by_host.get(request.url.host, self.default).handle_async_request(request)

    async def aclose(self) -> None:
        for transport in (*self.by_host.values(), self.default):
            await transport.aclose()
