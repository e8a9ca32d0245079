"""One behavioural suite for every Directory: the local SQLite one and the Authentik one (against the fake)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sidecar.authentik import AuthentikClient
from sidecar.directory.authentik import AuthentikDirectory
from sidecar.directory.base import Conflict, Directory, DirectoryError, InvalidName, NotFound
from sidecar.directory.local import LocalDirectory
from sidecar.errors import Forbidden
from sidecar.identity import RolePolicy
from sidecar.locks import ProcessLock
from sidecar.runtime import AuthentikNotConnected, build_services
from sidecar.settings import Settings
from sidecar.store import Store
from sidecar.users import UserAdmin
from tests.authentik_schema import SCHEMA_FILE, CheckedTransport, load_contract
from tests.fake_authentik import BASE, TOKEN, FakeAuthentik, create_fake_authentik
from tests.helpers import cheapen_bcrypt

PASSWORD = "a long enough passphrase"


@dataclass
class Backend:
    directory: Directory
    store: Store
    has_password: Callable[[str, str], Awaitable[bool]]
    fake: FakeAuthentik | None = None


@asynccontextmanager
async def local_backend(store: Store) -> AsyncIterator[Backend]:
    with pytest.MonkeyPatch.context() as patch:
        cheapen_bcrypt(patch)
        local = LocalDirectory(store)

        async def hashed_password(username: str, password: str) -> bool:
            return await local.authenticate(username, password) is not None

        yield Backend(local, store, hashed_password)


@asynccontextmanager
async def authentik_backend(store: Store) -> AsyncIterator[Backend]:
    fake = create_fake_authentik()

    async def recorded_password(username: str, password: str) -> bool:
        user = fake.user_named(username)
        return user is not None and user.password == password

    # Every exchange of the suite is also held to Authentik's schema, when the schema is at hand.
    inner = httpx.ASGITransport(app=fake.app)
    transport = CheckedTransport(inner, load_contract()) if SCHEMA_FILE.exists() else inner
    async with httpx.AsyncClient(transport=transport) as http:
        client = AuthentikClient(http, BASE, TOKEN, retry_backoff=(0, 0))
        yield Backend(AuthentikDirectory(client, group_search="vid_"), store, recorded_password, fake)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "sidecar.db")
    yield opened
    opened.close()


@pytest.fixture(params=["local", "authentik"])
async def backend(request: pytest.FixtureRequest, store: Store) -> AsyncIterator[Backend]:
    opener = local_backend if request.param == "local" else authentik_backend
    async with opener(store) as opened:
        yield opened


async def test_create_and_get_user(backend: Backend) -> None:
    directory = backend.directory
    created = await directory.create_user("zz.erin", email="erin@example.org", name="Erin", active=False)
    found = await directory.get_user("zz.erin")

    assert found is not None and found == created
    assert (found.username, found.email, found.name, found.is_active, found.groups) == (
        "zz.erin",
        "erin@example.org",
        "Erin",
        False,
        (),
    )
    assert found.uid
    assert await directory.get_user("zz.nobody") is None
    assert await directory.get_user("zz.Erin") is None


async def test_duplicate_user_is_a_conflict(backend: Backend) -> None:
    await backend.directory.create_user("zz.dup")
    with pytest.raises(Conflict):
        await backend.directory.create_user("zz.dup")


async def test_an_account_is_adopted_only_by_the_claim_that_created_it(backend: Backend) -> None:
    directory = backend.directory
    created = await directory.create_user("zz.claimed", name="Claimed", active=False, claim="claim-one")
    again = await directory.create_user("zz.claimed", name="Claimed", active=False, claim="claim-one")
    assert again == created and again.claim == "claim-one"
    for other in ("claim-two", ""):
        with pytest.raises(Conflict):
            await directory.create_user("zz.claimed", claim=other)
    await directory.create_user("zz.unclaimed")  # an account made without a claim is nobody's to adopt
    with pytest.raises(Conflict):
        await directory.create_user("zz.unclaimed", claim="")
    assert (await directory.get_user("zz.unclaimed")) is not None


async def test_invalid_username_is_refused(backend: Backend) -> None:
    with pytest.raises(InvalidName):
        await backend.directory.create_user("not a name!")


async def test_list_users_searches_and_pages(backend: Backend) -> None:
    for n in range(5):
        await backend.directory.create_user(f"zz_pager{n}", name=f"Pager {n}")

    first = await backend.directory.list_users("zz_pager", page=1, page_size=2)
    last = await backend.directory.list_users("zz_pager", page=3, page_size=2)
    past = await backend.directory.list_users("zz_pager", page=4, page_size=2)

    assert (first.total, first.page, first.page_size) == (5, 1, 2)
    assert [u.username for u in first.users] == ["zz_pager0", "zz_pager1"]
    assert [u.username for u in last.users] == ["zz_pager4"] and last.total == 5
    assert past.users == [] and past.total == 5
    assert (await backend.directory.list_users("Pager 3")).total == 1


async def test_groups_are_found_by_exact_name(backend: Backend) -> None:
    directory = backend.directory
    assert await directory.create_group("vid_zz") is True
    assert await directory.create_group("vid_zz") is False

    group = await directory.get_group("vid_zz")
    assert group is not None and (group.name, group.member_count) == ("vid_zz", 0)
    assert await directory.get_group("vid_z") is None
    assert await directory.get_group("VID_ZZ") is None
    assert "vid_zz" in [g.name for g in await directory.list_groups()]


async def test_membership_is_added_and_removed_once(backend: Backend) -> None:
    directory = backend.directory
    await directory.create_user("zz.member")
    await directory.create_group("vid_zz")

    assert await directory.add_to_group("zz.member", "vid_zz") is True
    assert await directory.add_to_group("zz.member", "vid_zz") is False
    member = await directory.get_user("zz.member")
    group = await directory.get_group("vid_zz")
    assert member is not None and member.groups == ("vid_zz",)
    assert group is not None and group.member_count == 1
    listed = await directory.list_users("zz.member")
    assert [u.groups for u in listed.users] == [("vid_zz",)]

    assert await directory.remove_from_group("zz.member", "vid_zz") is True
    assert await directory.remove_from_group("zz.member", "vid_zz") is False
    member = await directory.get_user("zz.member")
    assert member is not None and member.groups == ()


async def test_set_active_and_set_password(backend: Backend) -> None:
    directory = backend.directory
    await directory.create_user("zz.active")

    await directory.set_active("zz.active", False)
    found = await directory.get_user("zz.active")
    assert found is not None and not found.is_active
    await directory.set_active("zz.active", True)
    found = await directory.get_user("zz.active")
    assert found is not None and found.is_active

    await directory.set_password("zz.active", PASSWORD)
    assert await backend.has_password("zz.active", PASSWORD)
    assert not await backend.has_password("zz.active", PASSWORD + "!")


@pytest.mark.parametrize(
    "call",
    [
        lambda d: d.add_to_group("zz.nobody", "vid_zz"),
        lambda d: d.add_to_group("zz.known", "vid_nope"),
        lambda d: d.remove_from_group("zz.nobody", "vid_zz"),
        lambda d: d.remove_from_group("zz.known", "vid_nope"),
        lambda d: d.set_active("zz.nobody", False),
        lambda d: d.set_password("zz.nobody", PASSWORD),
    ],
    ids=["add-user", "add-group", "remove-user", "remove-group", "set-active", "set-password"],
)
async def test_unknown_user_or_group_is_not_found(
    backend: Backend, call: Callable[[Directory], Awaitable[object]]
) -> None:
    await backend.directory.create_user("zz.known")
    await backend.directory.create_group("vid_zz")
    with pytest.raises(NotFound):
        await call(backend.directory)


async def test_ping(backend: Backend) -> None:
    await backend.directory.ping()


async def test_tak_group_membership_is_refused_and_audited_without_reaching_authentik(store: Store) -> None:
    async with authentik_backend(store) as backend:
        fake = backend.fake
        assert fake is not None
        roles = RolePolicy(frozenset({"vid_admin"}), "vid_")
        users = UserAdmin(store, backend.directory, roles, ProcessLock(store.path.parent / "admin-change.lock"))

        with pytest.raises(Forbidden):
            await users.set_membership("bob", "tak_admin", True, "alice")

    assert fake.requests == []
    assert [(e.actor, e.target) for e in store.list_audit(action="group.denied")] == [("alice", "tak_admin")]
    bob = fake.user_named("bob")
    assert bob is not None and [g.name for g in fake.groups_of(bob)] == ["tak_ops", "vid_public"]


async def test_authentik_mode_wires_the_authentik_directory(make_settings: Callable[..., Settings]) -> None:
    fake = create_fake_authentik()
    settings = make_settings(mode="authentik", authentik_url=BASE + "/", authentik_token=TOKEN)
    services = build_services(settings, transport=httpx.ASGITransport(app=fake.app))
    try:
        assert isinstance(services.directory, AuthentikDirectory)
        bob = await services.directory.get_user("bob")
        assert bob is not None and bob.groups == ("tak_ops", "vid_public")
        assert [g.name for g in await services.users.list_groups()] == ["vid_admin", "vid_private", "vid_public"]
        assert [dict(seen.query).get("search") for seen in fake.requests if seen.path.endswith("/groups/")] == ["vid_"]
    finally:
        await services.aclose()


async def test_authentik_mode_without_a_token_says_what_is_missing(make_settings: Callable[..., Settings]) -> None:
    services = build_services(make_settings(mode="authentik", authentik_url=BASE))
    try:
        assert isinstance(services.directory, AuthentikNotConnected)
        with pytest.raises(DirectoryError, match="SIDECAR_AUTHENTIK_TOKEN"):
            await services.directory.ping()
    finally:
        await services.aclose()
