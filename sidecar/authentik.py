"""The one client for Authentik's REST API (`/api/v3`): users, groups, memberships, passwords, recovery, and the
flows, stages, bindings and brands `sidecar bootstrap --authentik --recovery` sets up."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx

from sidecar import jsonfields, outbound
from sidecar.directory.base import DirectoryError, InvalidName, NotFound

# Query parameters: a mapping, or pairs where a name repeats (`groups_by_name=a&groups_by_name=b`).
Query = Mapping[str, str | int] | Sequence[tuple[str, str | int]]
MAX_PAGE_SIZE = 100  # Authentik's own ceiling for `page_size`
MAX_PAGES = 1_000  # a safety stop should a broken server keep announcing more pages
MESSAGE_LIMIT = 200
UNAUTHORIZED_MESSAGE = "the sidecar's Authentik token is invalid or lacks permission"


class AuthentikError(DirectoryError):
    """Base of Authentik failures; the message is safe to show to an admin."""


class AuthentikUnavailable(AuthentikError):
    """Authentik could not be reached, did not answer in time, or failed (5xx)."""


class AuthentikUnauthorized(AuthentikError):
    """Authentik refused the sidecar's API token (401/403)."""

    def __init__(self, status: int) -> None:
        super().__init__(UNAUTHORIZED_MESSAGE)
        self.status = status


class AuthentikNotFound(NotFound):
    """No such user or group on Authentik's side."""


class AuthentikRejected(InvalidName):
    """Authentik refused the request's content (400); `field_errors` holds its own messages per field."""

    def __init__(self, field_errors: Mapping[str, Sequence[str]]) -> None:
        self.field_errors = {name: tuple(messages) for name, messages in field_errors.items()}
        parts = [
            message if name == "non_field_errors" else f"{name}: {message}"
            for name, messages in self.field_errors.items()
            for message in messages
        ]
        super().__init__("; ".join(parts)[:MESSAGE_LIMIT] or "Authentik refused the request")

    def mentions(self, name: str, word: str) -> bool:
        return any(word in message.lower() for message in self.field_errors.get(name, ()))


# The user attribute an approval stores its secret claim in, so that its retry recognises the account it created.
CLAIM_ATTRIBUTE = "sidecar_access_request"


@dataclass(frozen=True)
class AuthentikUser:
    pk: int
    username: str
    name: str = ""
    email: str = ""
    is_active: bool = True
    groups: tuple[str, ...] = ()
    is_superuser: bool = False
    type: str = "internal"
    claim: str = ""  # attributes[CLAIM_ATTRIBUTE]: the approval this sidecar created the account for

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuthentikUser:
        # `groups_obj` is only filled when the list was asked for `include_groups=true`; null otherwise.
        embedded = data.get("groups_obj")
        groups = [group.get("name") for group in embedded or () if isinstance(group, Mapping)]
        return cls(
            pk=_int(data, "pk"),
            username=_str(data, "username"),
            name=_str(data, "name"),
            email=_str(data, "email"),
            is_active=data.get("is_active") is not False,
            groups=tuple(name for name in groups if isinstance(name, str)),
            # Read-only and always sent; anything but a plain false counts as a superuser (never managed here).
            is_superuser=data.get("is_superuser") is not False,
            type=data["type"] if isinstance(data.get("type"), str) else "internal",
            claim=_claim(data.get("attributes")),
        )


def _claim(attributes: object) -> str:
    value = attributes.get(CLAIM_ATTRIBUTE) if isinstance(attributes, Mapping) else None
    return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class AuthentikGroup:
    pk: str
    name: str
    member_count: int = 0
    is_superuser: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuthentikGroup:
        users = data.get("users")
        count = len(users) if isinstance(users, list) else 0
        # Anything but a plain false counts as a superuser group (joining it makes a directory administrator).
        superuser = data.get("is_superuser") is not False
        return cls(pk=_str(data, "pk"), name=_str(data, "name"), member_count=count, is_superuser=superuser)


StageKind = Literal["identification", "email", "prompt/stages", "user_write", "user_login"]


@dataclass(frozen=True)
class AuthentikFlow:
    pk: str
    slug: str
    name: str
    designation: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuthentikFlow:
        return cls(
            pk=_str(data, "pk"), slug=_str(data, "slug"), name=_str(data, "name"), designation=_str(data, "designation")
        )


@dataclass(frozen=True)
class AuthentikStage:
    """A stage of any kind, or a prompt (the same two fields matter: its id and its name)."""

    pk: str
    name: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuthentikStage:
        return cls(pk=_str(data, "pk"), name=_str(data, "name"))


@dataclass(frozen=True)
class AuthentikBinding:
    pk: str
    target: str
    stage: str
    order: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuthentikBinding:
        return cls(
            pk=_str(data, "pk"), target=_str(data, "target"), stage=_str(data, "stage"), order=_int(data, "order")
        )


@dataclass(frozen=True)
class AuthentikBrand:
    pk: str
    domain: str
    default: bool
    flow_recovery: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuthentikBrand:
        recovery = data.get("flow_recovery")
        return cls(
            pk=_str(data, "brand_uuid"),
            domain=_str(data, "domain"),
            default=data.get("default") is True,
            flow_recovery=recovery if isinstance(recovery, str) and recovery else None,
        )


@dataclass(frozen=True)
class AuthentikUserPage:
    users: list[AuthentikUser]
    total: int
    page: int
    page_size: int


class AuthentikClient:
    """Calls Authentik's API through a caller-owned `httpx.AsyncClient`.

    Each call (all its attempts included) must be done within `timeout` seconds, by default the client's own
    timeout, and its answer may be at most `max_answer_bytes` long (see sidecar/outbound.py).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        token: str,
        *,
        retry_backoff: Sequence[float] = (0.2, 0.8),
        timeout: float | None = None,
        max_answer_bytes: int = outbound.MAX_ANSWER_BYTES,
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._retry_backoff = tuple(retry_backoff)
        self._timeout = outbound.total_timeout(http) if timeout is None else timeout
        self._max_answer_bytes = max_answer_bytes

    # --- users ----------------------------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._read("/core/users/", {"page_size": 1, "include_groups": "false", "include_roles": "false"})

    async def list_users(self, search: str = "", page: int = 1, page_size: int = 50) -> AuthentikUserPage:
        """One page; each user's groups come embedded in the same answer, so a page is always one request."""
        if page < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page must be 1 or more and page_size 1 to {MAX_PAGE_SIZE}")
        params: dict[str, str | int] = {
            "page": page,
            "page_size": page_size,
            "ordering": "username",
            "include_groups": "true",
            "include_roles": "false",
        }
        if search:
            params["search"] = search
        try:
            data = _object(await self._read("/core/users/", params))
        except AuthentikNotFound:
            if page == 1:
                raise
            # Authentik answers a page past the end with 404 ("Invalid page."); show it as empty, with the count.
            counted = _object(await self._read("/core/users/", {**params, "page": 1, "page_size": 1}))
            return AuthentikUserPage(users=[], total=_count(counted, 0), page=page, page_size=page_size)
        users = [AuthentikUser.from_json(item) for item in _results(data)]
        return AuthentikUserPage(users=users, total=_count(data, len(users)), page=page, page_size=page_size)

    async def count_users(self, *, groups_by_name: Sequence[str], is_active: bool) -> int:
        """How many users are in any of the named groups (Authentik ORs repeated `groups_by_name`)."""
        params: list[tuple[str, str | int]] = [("groups_by_name", name) for name in groups_by_name]
        params += [("is_active", "true" if is_active else "false"), ("page_size", 1), ("include_groups", "false")]
        data = _object(await self._read("/core/users/", params))
        return _count(data, len(_results(data)))

    async def get_user(self, username: str) -> AuthentikUser | None:
        """The user whose username is exactly `username` (Authentik's `username` filter is an exact match)."""
        params = {"username": username, "include_groups": "true", "include_roles": "false"}
        data = _object(await self._read("/core/users/", params))
        found = (AuthentikUser.from_json(item) for item in _results(data))
        return next((user for user in found if user.username == username), None)

    async def create_user(
        self,
        username: str,
        *,
        name: str = "",
        email: str = "",
        is_active: bool = False,
        path: str = "users",
        claim: str = "",
    ) -> AuthentikUser:
        """A new internal user, inactive unless asked otherwise, so nobody can sign in before it is set up."""
        body: dict[str, Any] = {"username": username, "name": name, "is_active": is_active, "path": path}
        if email:
            body["email"] = email
        if claim:
            body["attributes"] = {CLAIM_ATTRIBUTE: claim}
        body["type"] = "internal"
        return AuthentikUser.from_json(_object(await self._write("POST", "/core/users/", body)))

    async def set_user_active(self, pk: int, active: bool) -> AuthentikUser:
        data = await self._write("PATCH", f"/core/users/{int(pk)}/", {"is_active": active})
        return AuthentikUser.from_json(_object(data))

    async def set_password(self, pk: int, password: str) -> None:
        await self._write("POST", f"/core/users/{int(pk)}/set_password/", {"password": password})

    async def recovery_link(self, pk: int, *, token_duration: str | None = None) -> str:
        """A one-time recovery link for the user; needs a recovery flow on the brand."""
        body = {"token_duration": token_duration} if token_duration else {}
        data = _object(await self._write("POST", f"/core/users/{int(pk)}/recovery/", body))
        link = data.get("link")
        if not isinstance(link, str) or not link:
            raise _unreadable()
        return link

    async def send_recovery_email(self, pk: int, email_stage: str, *, token_duration: str | None = None) -> None:
        """Have Authentik email the user a recovery link through the given email stage."""
        body = {"email_stage": email_stage}
        if token_duration:
            body["token_duration"] = token_duration
        # Releases before 2024.x read `email_stage` from the query string, later ones from the body: send both.
        await self._write("POST", f"/core/users/{int(pk)}/recovery_email/", body, params={"email_stage": email_stage})

    # --- groups ---------------------------------------------------------------------------------------------

    async def list_groups(self, search: str = "") -> list[AuthentikGroup]:
        """Every group matching `search` (Authentik's substring search: callers filter the names themselves)."""
        groups: list[AuthentikGroup] = []
        seen: set[str] = set()
        page = 1
        for _ in range(MAX_PAGES):
            params: dict[str, str | int] = {
                "page": page,
                "page_size": MAX_PAGE_SIZE,
                "ordering": "name",
                "include_users": "false",
            }
            if search:
                params["search"] = search
            data = _object(await self._read("/core/groups/", params))
            for item in _results(data):
                group = AuthentikGroup.from_json(item)
                # The list can change between two page requests, shifting a group onto the next page as well.
                if group.pk not in seen:
                    seen.add(group.pk)
                    groups.append(group)
            following = _object(data.get("pagination")).get("next")
            if not isinstance(following, int | float) or following <= page:
                break
            page = int(following)
        return groups

    async def get_group(self, name: str) -> AuthentikGroup | None:
        """The group named exactly `name`: the `name` filter, never `search`, which matches substrings."""
        data = _object(await self._read("/core/groups/", {"name": name, "include_users": "false"}))
        found = (AuthentikGroup.from_json(item) for item in _results(data))
        return next((group for group in found if group.name == name), None)

    async def create_group(self, name: str) -> AuthentikGroup:
        return AuthentikGroup.from_json(_object(await self._write("POST", "/core/groups/", {"name": name})))

    async def add_user_to_group(self, group_pk: str, user_pk: int) -> None:
        await self._write("POST", f"/core/groups/{quote(group_pk, safe='')}/add_user/", {"pk": int(user_pk)})

    async def remove_user_from_group(self, group_pk: str, user_pk: int) -> None:
        await self._write("POST", f"/core/groups/{quote(group_pk, safe='')}/remove_user/", {"pk": int(user_pk)})

    # --- flows, stages, bindings, brands ----------------------------------------------------------------------

    async def get_flow(self, slug: str) -> AuthentikFlow | None:
        """The flow whose slug is exactly `slug`."""
        data = _object(await self._read("/flows/instances/", {"slug": slug}))
        found = (AuthentikFlow.from_json(item) for item in _results(data))
        return next((flow for flow in found if flow.slug == slug), None)

    async def create_flow(self, *, name: str, slug: str, title: str, designation: str) -> AuthentikFlow:
        body = {"name": name, "slug": slug, "title": title, "designation": designation}
        return AuthentikFlow.from_json(_object(await self._write("POST", "/flows/instances/", body)))

    async def get_stage(self, kind: StageKind, name: str) -> AuthentikStage | None:
        """The stage of that kind named exactly `name`."""
        return _named(_object(await self._read(f"/stages/{kind}/", {"name": name})), name)

    async def create_stage(self, kind: StageKind, body: Mapping[str, Any]) -> AuthentikStage:
        return AuthentikStage.from_json(_object(await self._write("POST", f"/stages/{kind}/", body)))

    async def get_prompt(self, name: str) -> AuthentikStage | None:
        """The prompt (one field of a prompt stage) named exactly `name`."""
        return _named(_object(await self._read("/stages/prompt/prompts/", {"name": name})), name)

    async def create_prompt(self, body: Mapping[str, Any]) -> AuthentikStage:
        return AuthentikStage.from_json(_object(await self._write("POST", "/stages/prompt/prompts/", body)))

    async def list_bindings(self, flow_pk: str) -> list[AuthentikBinding]:
        """The stage bindings of one flow, in their order (a flow has a handful; one page is plenty)."""
        params: dict[str, str | int] = {"target": flow_pk, "ordering": "order", "page_size": MAX_PAGE_SIZE}
        data = _object(await self._read("/flows/bindings/", params))
        return [binding for binding in map(AuthentikBinding.from_json, _results(data)) if binding.target == flow_pk]

    async def create_binding(self, flow_pk: str, stage_pk: str, order: int) -> AuthentikBinding:
        body = {"target": flow_pk, "stage": stage_pk, "order": int(order)}
        return AuthentikBinding.from_json(_object(await self._write("POST", "/flows/bindings/", body)))

    async def list_brands(self) -> list[AuthentikBrand]:
        data = _object(await self._read("/core/brands/", {"page_size": MAX_PAGE_SIZE, "ordering": "domain"}))
        return [AuthentikBrand.from_json(item) for item in _results(data)]

    async def set_brand_recovery_flow(self, brand_pk: str, flow_pk: str) -> AuthentikBrand:
        """Set only the brand's recovery flow (a PATCH carrying that one field)."""
        endpoint = f"/core/brands/{quote(brand_pk, safe='')}/"
        return AuthentikBrand.from_json(_object(await self._write("PATCH", endpoint, {"flow_recovery": flow_pk})))

    # --- transport ------------------------------------------------------------------------------------------

    async def _read(self, endpoint: str, params: Query) -> Any:
        """GET with retries: reads are idempotent, so a refused connection or a 5xx is worth another try, as long
        as the try and the pause before it fit in what is left of the call's one deadline."""
        with outbound.deadline(self._timeout) as deadline:
            for delay in (*self._retry_backoff, None):
                try:
                    return await _json(await self._send("GET", endpoint, params=params))
                except _Retryable as error:
                    if delay is None or outbound.time_left(deadline) <= delay:
                        raise error.cause from error.__cause__
                    await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _write(
        self,
        method: str,
        endpoint: str,
        body: Mapping[str, Any],
        *,
        params: Mapping[str, str | int] | None = None,
    ) -> Any:
        """One attempt only: a write whose answer was lost may already have happened."""
        try:
            response = await self._send(method, endpoint, params=params or {}, body=body)
        except _Retryable as error:
            raise error.cause from error.__cause__
        return None if response.status_code == 204 or not response.content else await _json(response)

    async def _send(
        self,
        method: str,
        endpoint: str,
        *,
        params: Query,
        body: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """One request, its answer read whole within the call's deadline and size cap."""
        url = f"{self._base_url}/api/v3{endpoint}"
        query = httpx.QueryParams(dict(params) if isinstance(params, Mapping) else list(params))
        try:
            response = await outbound.fetch(
                self._http,
                method,
                url,
                params=query,
                json=body,
                headers=self._headers,
                timeout=self._timeout,
                limit=self._max_answer_bytes,
            )
        except outbound.AnswerTooLarge as error:
            size = outbound.describe_size(error.limit)
            raise AuthentikUnavailable(
                f"Authentik sent an answer larger than {size}; the sidecar stopped reading"
            ) from error
        except (httpx.ConnectError, httpx.RemoteProtocolError) as error:
            # RemoteProtocolError covers a pooled keep-alive connection that Authentik had already closed.
            raise _Retryable(AuthentikUnavailable(f"Authentik is unreachable at {self._where()}")) from error
        except httpx.TimeoutException as error:
            # A timeout (connecting included) used up the call's deadline: there is no time left to try again.
            raise AuthentikUnavailable(
                f"Authentik is unreachable at {self._where()} (no answer within {self._timeout:g} s)"
            ) from error
        except httpx.InvalidURL as error:
            raise AuthentikError("the Authentik URL is not a valid URL") from error
        except (httpx.HTTPError, httpx.StreamError) as error:
            raise AuthentikUnavailable(f"Authentik is unreachable at {self._where()}") from error
        self._raise_for_status(response)
        return response

    def _raise_for_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        if status in (401, 403):
            raise AuthentikUnauthorized(status)
        if status == 404:
            raise AuthentikNotFound("Authentik has no such user or group")
        if status == 400:
            raise AuthentikRejected(_field_errors(response))
        if status >= 500:
            raise _Retryable(AuthentikUnavailable(f"Authentik is unreachable at {self._where()} (it failed: {status})"))
        raise AuthentikError(f"Authentik answered with an unexpected status ({status})")

    def _where(self) -> str:
        # Only scheme, host and port: a URL with credentials in it must not reach a page or a log.
        try:
            url = httpx.URL(self._base_url)
        except httpx.InvalidURL:
            return "the configured URL"
        host = f"[{url.host}]" if ":" in url.host else url.host
        port = f":{url.port}" if url.port else ""
        return f"{url.scheme}://{host}{port}"


class _Retryable(Exception):
    def __init__(self, cause: AuthentikUnavailable) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _field_errors(response: httpx.Response) -> dict[str, list[str]]:
    """Authentik's own validation messages (`{field: [messages]}`), single-line; nothing else from the body."""
    try:
        data = response.json()
    except ValueError:
        return {}
    if not isinstance(data, Mapping):
        return {}
    errors: dict[str, list[str]] = {}
    for name, messages in data.items():
        if name == "code" or not isinstance(name, str):
            continue
        items = messages if isinstance(messages, list) else [messages]
        texts = [" ".join(item.split())[:MESSAGE_LIMIT] for item in items if isinstance(item, str) and item.strip()]
        if texts:
            errors[name[:50]] = texts
    return errors


async def _json(response: httpx.Response) -> Any:
    return await jsonfields.parse(response, _unreadable)


def _unreadable() -> AuthentikError:
    return AuthentikError("Authentik sent an answer the sidecar cannot read; is the URL Authentik's base URL?")


def _object(data: Any) -> Mapping[str, Any]:
    return jsonfields.mapping(data, _unreadable)


def _results(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    results = data.get("results")
    if not isinstance(results, list):
        raise _unreadable()
    return [item for item in results if isinstance(item, Mapping)]


def _count(data: Mapping[str, Any], default: int) -> int:
    pagination = data.get("pagination")
    count = pagination.get("count") if isinstance(pagination, Mapping) else None
    return int(count) if isinstance(count, int | float) and not isinstance(count, bool) else default


def _named(data: Mapping[str, Any], name: str) -> AuthentikStage | None:
    found = (AuthentikStage.from_json(item) for item in _results(data))
    return next((item for item in found if item.name == name), None)


_str = jsonfields.text


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _unreadable()
    return value
