"""The groups a person holds as the directory says now: cached briefly, forgotten on the sidecar's own changes, one
directory call per burst, the last answer while the directory is down (for a while), never the outpost's header."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sidecar.directory import DirectoryError, User
from sidecar.errors import Unavailable
from sidecar.group_lookup import STALE_SECONDS, GroupLookup
from sidecar.identity import Role, RolePolicy

ROLES = RolePolicy(admin_groups=frozenset({"vid_admin", "authentik Admins"}), prefix="vid_")


class Directory:
    """Only what the lookup asks: `get_user`, answering from `users`, counting calls, failing while `down`."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.calls = 0
        self.down = False
        self.gate: asyncio.Event | None = None

    async def get_user(self, username: str) -> User | None:
        self.calls += 1
        answer = self.users.get(username)
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise DirectoryError("Authentik is unreachable at http://sso.test")
        return answer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lookup(directory: Directory, clock: Clock, ttl: float = 30.0) -> GroupLookup:
    found: Any = directory
    return GroupLookup(found, ROLES, ttl, clock=clock)


def claimed(username: str, header_groups: frozenset[str]) -> Any:
    return ROLES.principal(username, header_groups, source="proxy", uid=f"uid-{username}")


async def test_a_pipe_in_a_group_name_grants_nothing_because_groups_come_from_the_directory() -> None:
    directory = Directory()
    directory.users["mallory"] = User("mallory", groups=("tak_ops|vid_admin",))
    # The outpost joined the one group's name with `|`: the header reads as tak_ops and vid_admin.
    found = await lookup(directory, Clock()).confirm(claimed("mallory", frozenset({"tak_ops", "vid_admin"})))
    assert found.role == Role.NONE and found.groups == frozenset({"tak_ops|vid_admin"})
    assert found.uid == "uid-mallory" and found.source == "proxy"


async def test_unknown_and_inactive_people_get_no_groups_whatever_the_header_says() -> None:
    directory = Directory()
    directory.users["gone"] = User("gone", is_active=False, groups=("vid_admin",))
    groups = lookup(directory, Clock())
    for username in ("gone", "nobody"):
        found = await groups.confirm(claimed(username, frozenset({"vid_admin"})))
        assert found.role == Role.NONE and not found.groups


async def test_directory_admins_are_superusers_or_members_of_admin_groups_outside_the_prefix() -> None:
    directory = Directory()
    directory.users["root"] = User("root", superuser=True, groups=("vid_public",))
    directory.users["ak"] = User("ak", groups=("authentik Admins",))
    directory.users["vid"] = User("vid", groups=("vid_admin",))
    groups = lookup(directory, Clock())
    assert (await groups.confirm(claimed("root", frozenset()))).directory_admin
    assert (await groups.confirm(claimed("ak", frozenset()))).directory_admin
    video_admin = await groups.confirm(claimed("vid", frozenset()))
    assert video_admin.role == Role.ADMIN and not video_admin.directory_admin


async def test_answers_are_reused_for_the_cache_time_and_forgotten_on_the_sidecars_own_change() -> None:
    directory, clock = Directory(), Clock()
    directory.users["bob"] = User("bob", groups=("vid_public",))
    groups = lookup(directory, clock, ttl=30)
    await groups.standing("bob")
    directory.users["bob"] = User("bob", groups=())  # changed in Authentik itself
    clock.now += 29
    assert (await groups.standing("bob")).groups == ("vid_public",)  # type: ignore[union-attr]
    clock.now += 2
    assert (await groups.standing("bob")).groups == ()  # type: ignore[union-attr]
    directory.users["bob"] = User("bob", groups=("vid_private",))
    groups.forget("bob")  # the sidecar changed bob: his next request reads again
    assert (await groups.standing("bob")).groups == ("vid_private",)  # type: ignore[union-attr]
    assert directory.calls == 3


async def test_a_burst_of_requests_makes_one_directory_call_and_a_caller_giving_up_does_not_cancel_it() -> None:
    directory = Directory()
    directory.users["bob"] = User("bob", groups=("vid_public",))
    directory.gate = asyncio.Event()
    groups = lookup(directory, Clock())
    callers = [asyncio.create_task(groups.standing("bob")) for _ in range(20)]
    await asyncio.sleep(0)
    callers[0].cancel()  # its connection closed
    directory.gate.set()
    answers = await asyncio.gather(*callers[1:])
    assert directory.calls == 1 and {answer.groups for answer in answers if answer} == {("vid_public",)}


async def test_an_answer_read_before_the_sidecars_change_is_not_kept() -> None:
    directory = Directory()
    directory.users["bob"] = User("bob", groups=("vid_public",))
    directory.gate = asyncio.Event()
    groups = lookup(directory, Clock())
    early = asyncio.create_task(groups.standing("bob"))
    await asyncio.sleep(0)
    directory.users["bob"] = User("bob", groups=())
    groups.forget("bob")  # removed from vid_public while the first read was on its way
    directory.gate.set()
    await early
    assert (await groups.standing("bob")).groups == ()  # type: ignore[union-attr]


async def test_while_the_directory_is_down_the_last_answer_counts_for_an_hour_then_nothing_does() -> None:
    directory, clock = Directory(), Clock()
    directory.users["bob"] = User("bob", groups=("vid_public",))
    groups = lookup(directory, clock, ttl=30)
    await groups.standing("bob")
    directory.down = True
    clock.now += STALE_SECONDS - 1
    assert (await groups.standing("bob")).groups == ("vid_public",)  # type: ignore[union-attr]
    clock.now += 2
    with pytest.raises(Unavailable, match="cannot be confirmed"):
        await groups.standing("bob")
    with pytest.raises(Unavailable):
        await groups.standing("never-seen")
