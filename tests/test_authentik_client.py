"""AuthentikClient against canned answers and the fake Authentik, every exchange held to Authentik's own schema."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jsonschema
import pytest
from starlette.requests import Request

from sidecar.authentik import (
    UNAUTHORIZED_MESSAGE,
    AuthentikClient,
    AuthentikError,
    AuthentikNotFound,
    AuthentikRejected,
    AuthentikUnauthorized,
    AuthentikUnavailable,
)
from sidecar.directory.authentik import AuthentikDirectory
from sidecar.directory.base import Conflict, InvalidName, NotFound
from sidecar.web.errors import directory_error
from tests.authentik_schema import CheckedTransport, Contract, require_contract
from tests.fake_authentik import BASE, TOKEN, FakeAuthentik, create_fake_authentik
from tests.helpers import streamed_answer

STAGE = "7a4c2e1e-54a4-4b8e-a2f4-0c6f2f6b7d11"
Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def contract() -> Contract:
    return require_contract()


@asynccontextmanager
async def on_fake(
    fake: FakeAuthentik, contract: Contract, token: str = TOKEN
) -> AsyncIterator[tuple[AuthentikClient, CheckedTransport]]:
    transport = CheckedTransport(httpx.ASGITransport(app=fake.app), contract)
    async with httpx.AsyncClient(transport=transport) as http:
        yield AuthentikClient(http, BASE + "/", token, retry_backoff=(0, 0)), transport


@asynccontextmanager
async def canned(handler: Handler, **options: Any) -> AsyncIterator[AuthentikClient]:
    options.setdefault("retry_backoff", (0, 0))
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        yield AuthentikClient(http, BASE, TOKEN, **options)


@pytest.fixture
def fake() -> FakeAuthentik:
    return create_fake_authentik()


# --- the contract itself ----------------------------------------------------------------------------------------


async def test_every_operation_against_the_fake_follows_the_schema(fake: FakeAuthentik, contract: Contract) -> None:
    async with on_fake(fake, contract) as (client, transport):
        await client.ping()
        page = await client.list_users("a", 1, 2)
        created = await client.create_user("erin", name="Erin", email="erin@example.org")
        await client.set_user_active(created.pk, True)
        await client.set_password(created.pk, "correct horse battery staple")
        group = await client.create_group("vid_field")
        await client.add_user_to_group(group.pk, created.pk)
        erin = await client.get_user("erin")
        await client.remove_user_from_group(group.pk, created.pk)
        link = await client.recovery_link(created.pk)
        await client.send_recovery_email(created.pk, STAGE)
        groups = await client.list_groups("vid_")
        assert await client.get_group("vid_field") is not None

    assert page.total == 5 and [user.username for user in page.users] == ["akadmin", "alice"]
    assert created.is_active is False and created.pk == 6
    assert erin is not None and erin.groups == ("vid_field",) and erin.is_active
    assert fake.user_named("erin") is not None and fake.user_named("erin").password == "correct horse battery staple"  # type: ignore[union-attr]
    assert link.startswith(BASE) and fake.recovery_emails == [("erin", STAGE)]
    assert [g.name for g in groups] == ["vid_admin", "vid_field", "vid_private", "vid_public"]
    assert len(transport.requests) == 13
    assert all(str(r.url).startswith(f"{BASE}/api/v3/core/") for r in transport.requests)
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in transport.requests)


async def test_a_wrong_response_fails_the_contract(contract: Contract) -> None:
    request = httpx.Request("GET", f"{BASE}/api/v3/core/users/?page=1")
    user = create_fake_authentik().user_json(create_fake_authentik().users[1])
    good = {"pagination": _pagination(1), "results": [user], "autocomplete": {}}
    contract.check_response(request, 200, json.dumps(good).encode())
    without_pk = {**good, "results": [{k: v for k, v in user.items() if k != "pk"}]}
    with pytest.raises(jsonschema.ValidationError):
        contract.check_response(request, 200, json.dumps(without_pk).encode())
    with pytest.raises(jsonschema.ValidationError):
        contract.check_response(request, 200, json.dumps({"results": [user]}).encode())
    with pytest.raises(AssertionError):
        contract.check_response(request, 418, b"{}")


async def test_a_wrong_request_fails_the_contract(contract: Contract) -> None:
    headers = {"Authorization": "Bearer x"}
    without_name = httpx.Request("POST", f"{BASE}/api/v3/core/users/", json={"username": "x"}, headers=headers)
    with pytest.raises(jsonschema.ValidationError):
        contract.check_request(without_name)
    string_pk = httpx.Request("POST", f"{BASE}/api/v3/core/groups/{STAGE}/add_user/", json={"pk": "1"}, headers=headers)
    with pytest.raises(jsonschema.ValidationError):
        contract.check_request(string_pk)
    with pytest.raises(AssertionError, match="no query parameter"):
        contract.check_request(httpx.Request("GET", f"{BASE}/api/v3/core/groups/?group_name=x", headers=headers))


def _pagination(count: int, page: int = 1, pages: int = 1) -> dict[str, int]:
    return {
        "next": page + 1 if page < pages else 0,
        "previous": page - 1,
        "count": count,
        "current": page,
        "total_pages": pages,
        "start_index": 1,
        "end_index": count,
    }


# --- listing ----------------------------------------------------------------------------------------------------


async def test_a_page_of_users_is_one_request_with_groups_embedded(fake: FakeAuthentik, contract: Contract) -> None:
    for n in range(30):
        fake.add_user(f"pilot{n:02}", "vid_public", "tak_ops", name=f"Pilot {n}")
    async with on_fake(fake, contract) as (client, transport):
        page = await client.list_users("pilot", page=2, page_size=10)

    assert len(transport.requests) == 1
    params = transport.requests[0].url.params
    assert params["include_groups"] == "true" and params["page"] == "2" and params["page_size"] == "10"
    assert page.total == 30 and [u.username for u in page.users] == [f"pilot{n}" for n in range(10, 20)]
    assert all(user.groups == ("tak_ops", "vid_public") for user in page.users)


async def test_directory_page_maps_users_with_their_pk_as_uid(fake: FakeAuthentik, contract: Contract) -> None:
    async with on_fake(fake, contract) as (client, transport):
        page = await AuthentikDirectory(client).list_users("bob")
    (bob,) = page.users
    assert (bob.username, bob.email, bob.name, bob.is_active) == ("bob", "bob@example.org", "Bob", True)
    assert bob.groups == ("tak_ops", "vid_public") and bob.uid == str(fake.user_named("bob").pk)  # type: ignore[union-attr]
    assert len(transport.requests) == 1


async def test_page_size_above_authentiks_ceiling_is_refused() -> None:
    async with canned(lambda request: httpx.Response(500)) as client:
        with pytest.raises(ValueError, match="page_size"):
            await client.list_users(page_size=101)


async def test_list_groups_follows_every_page() -> None:
    def group(name: str) -> dict[str, Any]:
        return {"pk": f"{name}-pk", "name": name, "users": [1, 2]}

    pages = {
        "1": {"pagination": _pagination(3, 1, 2), "results": [group("vid_a"), group("vid_b")], "autocomplete": {}},
        "2": {"pagination": _pagination(3, 2, 2), "results": [group("vid_b"), group("vid_c")], "autocomplete": {}},
    }
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=pages[request.url.params["page"]])

    async with canned(handler) as client:
        groups = await client.list_groups("vid_")
    assert [(g.name, g.member_count) for g in groups] == [("vid_a", 2), ("vid_b", 2), ("vid_c", 2)]
    assert [r.url.params["page"] for r in seen] == ["1", "2"] and seen[0].url.params["search"] == "vid_"


# --- exact names --------------------------------------------------------------------------------------------------


async def test_group_writes_look_groups_up_by_exact_name_never_search(fake: FakeAuthentik, contract: Contract) -> None:
    fake.add_group("vid_public_old")
    async with on_fake(fake, contract) as (client, transport):
        directory = AuthentikDirectory(client)
        assert await directory.add_to_group("carol", "vid_public") is True
        assert await directory.remove_from_group("carol", "vid_public") is True
        assert await directory.create_group("vid_public") is False
        assert await directory.get_group("vid_publi") is None

    group_reads = [r for r in transport.requests if r.url.path.endswith("/core/groups/") and r.method == "GET"]
    assert group_reads and all("search" not in r.url.params for r in group_reads)
    assert all(r.url.params["name"] in ("vid_public", "vid_publi") for r in group_reads)
    user_reads = [r for r in transport.requests if r.url.path.endswith("/core/users/")]
    assert all("search" not in r.url.params and r.url.params["username"] == "carol" for r in user_reads[:2])
    carol = fake.user_named("carol")
    assert carol is not None and [g.name for g in fake.groups_of(carol)] == ["tak_admin"]
    adds = [seen for seen in fake.writes() if seen.path.endswith("/add_user/")]
    assert adds[0].body == {"pk": carol.pk} and fake.group_named("vid_public").pk in adds[0].path  # type: ignore[union-attr]


async def test_a_lookalike_username_is_not_the_user() -> None:
    lookalike = create_fake_authentik().user_json(create_fake_authentik().users[2])

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["username"] == "Alice"
        return httpx.Response(200, json={"pagination": _pagination(1), "results": [lookalike], "autocomplete": {}})

    async with canned(handler) as client:
        assert await client.get_user("Alice") is None


# --- errors -------------------------------------------------------------------------------------------------------


async def test_duplicate_username_carries_authentiks_field_message(fake: FakeAuthentik, contract: Contract) -> None:
    async with on_fake(fake, contract) as (client, _):
        with pytest.raises(AuthentikRejected) as caught:
            await client.create_user("alice", name="Alice again")
        with pytest.raises(Conflict):
            await AuthentikDirectory(client).create_user("alice")
    assert str(caught.value) == "username: This field must be unique."
    assert isinstance(caught.value, InvalidName)
    assert caught.value.field_errors == {"username": ("This field must be unique.",)}


async def test_rejection_keeps_only_authentiks_own_messages() -> None:
    body = {"non_field_errors": ["Bad\n  combination."], "code": "invalid", "name": ["Too long."], "debug": {"x": 1}}
    async with canned(lambda request: httpx.Response(400, json=body)) as client:
        with pytest.raises(AuthentikRejected) as caught:
            await client.create_group("vid_x")
    assert str(caught.value) == "Bad combination.; name: Too long."


async def test_a_refused_token_is_one_clear_error(fake: FakeAuthentik, contract: Contract) -> None:
    async with on_fake(fake, contract, token="wrong") as (client, transport):
        with pytest.raises(AuthentikUnauthorized) as caught:
            await client.ping()
        with pytest.raises(AuthentikUnauthorized):
            await client.create_group("vid_x")
    assert str(caught.value) == UNAUTHORIZED_MESSAGE and "Token" not in str(caught.value)
    assert len(transport.requests) == 2  # a refused token is not worth a retry


@pytest.mark.parametrize("status", [401, 403])
async def test_both_refusals_say_the_token_is_the_problem(status: int) -> None:
    async with canned(lambda request: httpx.Response(status, json={"detail": "secret internals"})) as client:
        with pytest.raises(AuthentikUnauthorized, match="token is invalid or lacks permission"):
            await client.get_group("vid_public")


async def test_unknown_ids_are_not_found(fake: FakeAuthentik, contract: Contract) -> None:
    async with on_fake(fake, contract) as (client, _):
        with pytest.raises(AuthentikNotFound):
            await client.set_password(999, "x" * 12)
        with pytest.raises(NotFound):
            await client.add_user_to_group(fake.group_named("vid_public").pk, 999)  # type: ignore[union-attr]


async def test_reads_are_retried_then_report_authentik_unreachable() -> None:
    attempts: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        raise httpx.ConnectError("refused", request=request)

    async with canned(handler, retry_backoff=(0, 0)) as client:
        with pytest.raises(AuthentikUnavailable, match="Authentik is unreachable at http://authentik.test"):
            await client.get_user("alice")
        assert len(attempts) == 3
        attempts.clear()
        with pytest.raises(AuthentikUnavailable):
            await client.create_group("vid_x")
        assert len(attempts) == 1  # a write whose answer was lost may already have happened


async def test_a_5xx_read_is_retried_and_can_recover() -> None:
    answers = [httpx.Response(502, text="<html>bad gateway</html>"), httpx.Response(200, json={"results": []})]

    async with canned(lambda request: answers.pop(0)) as client:
        assert await client.get_group("vid_public") is None

    async with canned(lambda request: httpx.Response(503, text="down"), retry_backoff=()) as client:
        with pytest.raises(AuthentikUnavailable) as caught:
            await client.ping()
    assert "down" not in str(caught.value)


async def test_a_timeout_is_unavailable_and_hides_credentials_in_the_url() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = AuthentikClient(http, "https://user:pass@sso.example:9443", TOKEN, retry_backoff=())
        with pytest.raises(AuthentikUnavailable) as caught:
            await client.ping()
    assert "https://sso.example:9443" in str(caught.value) and "pass" not in str(caught.value)


async def test_an_unreadable_answer_is_an_authentik_error() -> None:
    async with canned(lambda request: httpx.Response(200, text="<html>login</html>")) as client:
        with pytest.raises(AuthentikError, match="cannot read"):
            await client.list_users()


async def test_an_answer_over_the_cap_is_refused_without_reading_it_all() -> None:
    announced = httpx.Response(200, headers={"content-length": str(150 * 1024 * 1024)}, content=b"[]")
    async with canned(lambda request: announced, max_answer_bytes=1024) as client:
        with pytest.raises(AuthentikUnavailable, match="Authentik sent an answer larger than 1 KiB"):
            await client.list_users()
    handler, sent = streamed_answer(1000, size=100)
    async with canned(handler, max_answer_bytes=1024) as client:
        with pytest.raises(AuthentikUnavailable, match="larger than 1 KiB"):
            await client.ping()
    assert sum(sent) < 2048  # reading stopped at the cap, and the answer is not asked for again


async def test_a_trickling_answer_is_cut_off_at_the_calls_deadline() -> None:
    handler, sent = streamed_answer(1000, pause=0.02)  # each byte well within any per-read timeout
    async with canned(handler, timeout=0.3) as client:
        with pytest.raises(AuthentikUnavailable, match=r"no answer within 0\.3 s"):
            await client.list_users()
    assert len(sent) < 100


async def test_reads_are_retried_only_within_the_calls_deadline() -> None:
    attempts: list[httpx.Request] = []

    def refused(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        raise httpx.ConnectError("refused", request=request)

    # A pause that would end after the deadline is not taken: 0.2 s fits in 0.5 s, 0.8 s no longer does.
    async with canned(refused, timeout=0.5, retry_backoff=(0.2, 0.8)) as client:
        with pytest.raises(AuthentikUnavailable, match="unreachable"):
            await client.get_user("alice")
    assert len(attempts) == 2

    def timed_out(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        raise httpx.ConnectTimeout("no SYN-ACK", request=request)

    attempts.clear()
    async with canned(timed_out, timeout=5, retry_backoff=(0, 0)) as client:
        with pytest.raises(AuthentikUnavailable, match="no answer within 5 s"):
            await client.get_user("alice")
    assert len(attempts) == 1  # a connect that timed out has used the deadline up


async def test_recovery_email_sends_the_stage_in_body_and_query(fake: FakeAuthentik, contract: Contract) -> None:
    async with on_fake(fake, contract) as (client, transport):
        await AuthentikDirectory(client).send_recovery_email("bob", STAGE)
        with pytest.raises(AuthentikRejected, match="email address"):
            await AuthentikDirectory(client).send_recovery_email("dave", STAGE)
    sent = transport.requests[1]
    assert sent.url.params["email_stage"] == STAGE and json.loads(sent.content) == {"email_stage": STAGE}
    assert fake.recovery_emails == [("bob", STAGE)]


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (AuthentikNotFound("x"), 404),
        (AuthentikRejected({"name": ["bad"]}), 400),
        (AuthentikUnauthorized(403), 503),
        (AuthentikUnavailable("Authentik is unreachable"), 503),
    ],
)
async def test_web_layer_maps_authentik_errors(error: Exception, status: int) -> None:
    request = Request({"type": "http", "method": "GET", "path": "/api/v1/users", "headers": [], "query_string": b""})
    response = await directory_error(request, error)
    assert response.status_code == status
    assert json.loads(bytes(response.body)) == {"error": str(error)}
